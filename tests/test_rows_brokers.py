"""Filter values and old values cross both brokers intact: a commit on one hub reaches the
other hub's subscribers with them (a filtered subscriber there sees the row leave), and
PostgreSQL's 8,000-byte rule drops ``data`` and ``old`` but keeps the filter values."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_notify import Hub, Notification, Notifier, NotifyOptions, Selection, Subscriber
from sqla_notify.postgres import MAX_PAYLOAD, PostgresBroker
from sqla_notify.redis import RedisBroker

from .support.hubs import frames, receive, until
from .support.services import pg_engine, pg_url

pytestmark = pytest.mark.anyio


class Base(DeclarativeBase):
    pass


class Reply(Base):
    __tablename__ = "rows_broker_replies"
    __sqla_notify__ = NotifyOptions(payload="row", filter_by={"forum_id"}, old=True, exclude={"secret"})
    id: Mapped[int] = mapped_column(primary_key=True)
    forum_id: Mapped[int]
    body: Mapped[str] = mapped_column(String)
    secret: Mapped[str] = mapped_column(String, default="s")


def commit_and_move(sessions: sessionmaker[Session], body: str = "b") -> None:
    """Insert reply 1 in forum 7, then move it to forum 8 with a new body and secret."""
    with sessions.begin() as s:
        s.add(Reply(id=1, forum_id=7, body="a"))
    with sessions.begin() as s:
        reply = s.get_one(Reply, 1)
        reply.forum_id, reply.body, reply.secret = 8, body, "t"


async def notifications(sub: Subscriber, count: int) -> list[Notification]:
    """The next ``count`` notifications queued for ``sub``, as the hub received them, each
    checked against its frame: ``old`` goes to browsers, filter values do not."""
    got: list[Notification] = []

    def check() -> bool:
        for frame in sub.receive_nowait():
            if isinstance(frame, str):
                continue
            n = frame.notification
            sent = json.loads(frame.text)
            assert sent.get("old") == n.old and sent.get("data") == n.data
            assert "filter_before" not in sent and "filter_after" not in sent
            got.append(n)
        return len(got) >= count

    await until(check, f"{count} notifications")
    return got


def forum_7(hub: Hub) -> Subscriber:
    """A subscriber of forum 7's replies, its welcome taken."""
    sub = hub.subscribe(Selection(filtered={"rows_broker_replies": [{"forum_id": 7}]}))
    frames(sub)
    return sub


async def moves(sub: Subscriber) -> list[tuple[str, str | None]]:
    """The insert into forum 7 and the move out of it, as ``sub`` received them."""
    got = await receive(sub, lambda got: len(got) >= 2, "the insert and the move")
    return [(m["action"], m.get("move")) for m in got]


MOVED = [("insert", None), ("update", "leave")]

EXPECTED = [
    Notification("rows_broker_replies", "insert", {"id": 1, "forum_id": 7, "body": "a"}, None, None, {"forum_id": 7}),
    Notification(
        "rows_broker_replies", "update", {"id": 1, "forum_id": 8, "body": "b"},
        {"forum_id": 7, "body": "a"}, {"forum_id": 7}, {"forum_id": 8},
    ),
]


async def test_redis_carries_filter_values_and_old(redis_url: str, stream: str, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    Base.metadata.create_all(engine)
    async with Hub(broker=RedisBroker(redis_url, stream=stream)) as a, \
            Hub(broker=RedisBroker(redis_url, stream=stream)) as b:
        await until(lambda: a.stats().broker == b.stats().broker == "connected", "both readers")
        on_b, filtered = b.subscribe(), forum_7(b)
        frames(on_b)
        await asyncio.to_thread(commit_and_move, Notifier(a).attach(sessionmaker(engine)))
        assert await notifications(on_b, 2) == EXPECTED
        assert await moves(filtered) == MOVED
    engine.dispose()


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Iterator[Engine]:
    engine = pg_engine(request.config)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
async def two_pg_hubs(pg: Engine, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Hub, Hub]]:
    channel = f"sqla_notify_test_{uuid.uuid4().hex[:12]}"
    url = pg_url(request.config)
    async with Hub(broker=PostgresBroker(url, channel=channel)) as a, \
            Hub(broker=PostgresBroker(url, channel=channel)) as b:
        await until(lambda: a.stats().broker == b.stats().broker == "connected", "both listeners")
        yield a, b


async def test_postgres_carries_filter_values_and_old(two_pg_hubs: tuple[Hub, Hub], pg: Engine) -> None:
    a, b = two_pg_hubs
    on_b, filtered = b.subscribe(), forum_7(b)
    frames(on_b)
    await asyncio.to_thread(commit_and_move, Notifier(a).attach(sessionmaker(pg)))
    assert await notifications(on_b, 2) == EXPECTED
    assert await moves(filtered) == MOVED


async def test_postgres_sends_a_huge_row_without_data_and_old_but_with_its_filter_values(
    two_pg_hubs: tuple[Hub, Hub], pg: Engine
) -> None:
    a, b = two_pg_hubs
    on_b, filtered = b.subscribe(), forum_7(b)
    frames(on_b)
    await asyncio.to_thread(commit_and_move, Notifier(a).attach(sessionmaker(pg)), "h" * MAX_PAYLOAD)
    assert await moves(filtered) == MOVED  # without its data, it still leaves forum 7
    assert await notifications(on_b, 2) == [
        EXPECTED[0], Notification("rows_broker_replies", "update", None, None, {"forum_id": 7}, {"forum_id": 8})
    ]


def test_payloads_keep_filter_values_unless_they_are_too_large_themselves() -> None:
    broker = PostgresBroker(channel="c")
    big = {"id": 1, "body": "x" * MAX_PAYLOAD}
    batch = [
        Notification("c", "update", big, {"body": "y" * MAX_PAYLOAD}, {"forum_id": 1}, {"forum_id": 2}),
        Notification("c", "update", big, None, {"tag": "z" * MAX_PAYLOAD}, None),
    ]
    parts = broker.payloads(batch)
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in parts)
    sent = [n for p in parts for n in json.loads(p)["b"]]
    assert sent == [
        {"collection": "c", "action": "update", "filter_before": {"forum_id": 1}, "filter_after": {"forum_id": 2}},
        {"collection": "c", "action": "update"},
    ]


async def test_a_hub_sends_old_and_keeps_filter_values_to_itself() -> None:
    async with Hub() as hub:
        sub = hub.subscribe()
        frames(sub)
        hub.publish([Notification("c", "update", {"id": 1}, {"x": 0}, {"f": 1}, {"f": 2}), Notification("c", "delete")])
        sent = await receive(sub, lambda got: len(got) == 2, "both")
    assert sent == [
        {"id": sent[0]["id"], "collection": "c", "action": "update", "data": {"id": 1}, "old": {"x": 0}},
        {"id": sent[1]["id"], "collection": "c", "action": "delete"},
    ]
