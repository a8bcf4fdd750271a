"""PostgresBroker: two hubs (as two processes would have) on one LISTEN/NOTIFY channel of the
machine's PostgreSQL, NOTIFY inside the committing transaction, and a listener connection that
the test terminates (pg_terminate_backend)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
import pytest
from sqlalchemy import Engine, String, create_engine, make_url, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_notify import Hub, Notification, Notifier
from sqla_notify.postgres import MAX_PAYLOAD, PostgresBroker

from .support.hubs import frames, receive, until
from .support.pg import NoteColumns
from .support.services import pg_engine, pg_url

pytestmark = pytest.mark.anyio


class Base(DeclarativeBase):
    pass


class Note(NoteColumns, Base):
    __tablename__ = "broker_notes"
    # Checked at COMMIT: a violation makes the commit itself fail, after the NOTIFY ran.
    code: Mapped[str | None] = mapped_column(String, nullable=True)


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Iterator[Engine]:
    engine = pg_engine(request.config)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS broker_notes"))
        conn.execute(text(
            "CREATE TABLE broker_notes (id int PRIMARY KEY, body text NOT NULL, code text, "
            "CONSTRAINT code_unique UNIQUE (code) DEFERRABLE INITIALLY DEFERRED)"
        ))
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE broker_notes"))
    engine.dispose()


@pytest.fixture
def libpq_url(request: pytest.FixtureRequest) -> str:
    return pg_url(request.config)


@pytest.fixture
async def two_hubs(pg: Engine, libpq_url: str) -> AsyncIterator[tuple[Hub, Hub, str]]:
    channel = f"sqla_notify_test_{uuid.uuid4().hex[:12]}"
    async with Hub(broker=PostgresBroker(libpq_url, channel=channel)) as a, \
            Hub(broker=PostgresBroker(libpq_url, channel=channel)) as b:
        await until(lambda: a.stats().broker == b.stats().broker == "connected", "both listeners")
        yield a, b, channel


def committer(hub: Hub, engine: Engine) -> sessionmaker[Session]:
    return Notifier(hub).attach(sessionmaker(engine))


async def test_commit_reaches_every_process_once(two_hubs: tuple[Hub, Hub, str], pg: Engine) -> None:
    a, b, _ = two_hubs
    on_a, on_b = a.subscribe(), b.subscribe()
    frames(on_a), frames(on_b)
    sessions = committer(a, pg)

    def work() -> None:
        with sessions.begin() as s:
            s.add_all([Note(id=1, body="x"), Note(id=2, body="y")])

    await asyncio.to_thread(work)
    got_a = await receive(on_a, lambda got: len(got) == 2, "two on A")
    got_b = await receive(on_b, lambda got: len(got) == 2, "two on B")
    assert [m["data"] for m in got_b] == [{"id": 1, "body": "x"}, {"id": 2, "body": "y"}]
    assert [m["data"] for m in got_a] == [m["data"] for m in got_b]
    assert a.stats().published == 2  # delivered once, from LISTEN, not also locally


async def test_nothing_for_rollback_or_a_commit_that_fails(two_hubs: tuple[Hub, Hub, str], pg: Engine) -> None:
    a, b, _ = two_hubs
    on_b = b.subscribe()
    frames(on_b)
    sessions = committer(a, pg)

    def work() -> None:
        with sessions() as s:
            s.add(Note(id=1, body="rolled back"))
            s.flush()
            s.rollback()
        with sessions.begin() as s:
            s.add(Note(id=2, body="first", code="dup"))
        # The deferred constraint fails at COMMIT, after the NOTIFY was executed.
        with pytest.raises(IntegrityError), sessions.begin() as s:
            s.add(Note(id=3, body="doomed", code="dup"))
        with sessions.begin() as s:
            s.add(Note(id=4, body="last"))

    await asyncio.to_thread(work)
    got = await receive(on_b, lambda got: len(got) == 2, "the two that committed")
    assert [m["data"]["id"] for m in got] == [2, 4]


async def test_large_batches_are_split_and_huge_rows_lose_their_data(two_hubs: tuple[Hub, Hub, str], pg: Engine) -> None:
    a, b, _ = two_hubs
    on_b = b.subscribe()
    frames(on_b)
    sessions = committer(a, pg)

    def work() -> None:
        with sessions.begin() as s:
            s.add_all([Note(id=i, body="m" * 500) for i in range(1, 61)])  # ~33 kB in all
            s.add(Note(id=100, body="h" * (MAX_PAYLOAD + 1)))  # too large on its own

    await asyncio.to_thread(work)
    got = await receive(on_b, lambda got: len(got) == 61, "all 61")
    assert [m["data"]["id"] for m in got[:60]] == list(range(1, 61))  # together and in order
    assert got[60] == {"id": got[60]["id"], "collection": "broker_notes", "action": "insert"}


async def test_savepoints_and_async_sessions(two_hubs: tuple[Hub, Hub, str], pg: Engine, libpq_url: str) -> None:
    a, b, _ = two_hubs
    on_b = b.subscribe()
    frames(on_b)
    url = make_url(libpq_url)
    for driver in ("asyncpg", "psycopg"):
        engine = create_async_engine(url.set(drivername=f"postgresql+{driver}"))
        sessions = Notifier(a).attach(async_sessionmaker(engine))
        async with sessions.begin() as s:
            base = 10 if driver == "asyncpg" else 20
            nested = await s.begin_nested()
            s.add(Note(id=base, body="savepoint rolled back"))
            await nested.rollback()
            async with s.begin_nested():
                s.add(Note(id=base + 1, body="savepoint released"))
            s.add(Note(id=base + 2, body="root"))
        await engine.dispose()
    got = await receive(on_b, lambda got: len(got) == 4, "four on B")
    assert [m["data"]["id"] for m in got] == [11, 12, 21, 22]


def test_payloads_stay_under_the_limit() -> None:
    broker = PostgresBroker(channel="c")
    batch = [Notification("c", "update", {"id": i, "pad": "é" * 300}) for i in range(100)]
    parts = broker.payloads(batch)
    assert len(parts) > 1 and all(len(p.encode()) <= MAX_PAYLOAD for p in parts)
    decoded = [json.loads(p) for p in parts]
    assert [n["data"]["id"] for d in decoded for n in d["b"]] == list(range(100))
    assert len({d["i"] for d in decoded}) == 1  # one batch id
    assert [d["o"] for d in decoded] == [sum(len(e["b"]) for e in decoded[:k]) for k in range(len(decoded))]


async def test_notify_without_session_and_sqlite_sessions(
    two_hubs: tuple[Hub, Hub, str], tmp_path: Path
) -> None:
    """What is not a PostgreSQL transaction goes out after its commit, on the broker's own
    connection, and still reaches every process."""
    a, b, _ = two_hubs
    on_b = b.subscribe()
    frames(on_b)
    Notifier(a).notify("raw", "update", {"id": 9})
    sqlite = create_engine(f"sqlite:///{tmp_path / 'side.db'}")
    Base.metadata.create_all(sqlite)
    sessions = committer(a, sqlite)

    def work() -> None:
        with sessions.begin() as s:
            s.add(Note(id=5, body="sqlite"))

    await asyncio.to_thread(work)
    got = await receive(on_b, lambda got: len(got) == 2, "both on B")
    assert [(m["collection"], m["data"]["id"]) for m in got] == [("raw", 9), ("broker_notes", 5)]


async def test_listener_terminated_means_resync_then_live_again(
    two_hubs: tuple[Hub, Hub, str], pg: Engine
) -> None:
    a, b, channel = two_hubs
    on_b = b.subscribe()
    frames(on_b)
    with pg.connect() as conn:
        killed = conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": f"sqla_notify {channel}"},
        ).scalars().all()
    assert len(killed) >= 2 and all(killed)  # both listeners (and any writer connection)
    sessions = committer(a, pg)

    def work(i: int) -> None:
        with sessions.begin() as s:  # commits never wait for the listener
            s.add(Note(id=i, body="during"))

    await asyncio.to_thread(work, 1)
    got = await receive(on_b, lambda got: any(m.get("type") == "resync" for m in got), "resync on B", timeout=15)
    await until(lambda: b.stats().broker == "connected", "B to listen again")
    await asyncio.to_thread(work, 2)
    got = await receive(on_b, lambda got: any(m.get("data", {}).get("id") == 2 for m in got), "live again", 15)
    assert b.stats().gaps >= 1


async def test_unreachable_at_startup_never_blocks(pg: Engine, caplog: pytest.LogCaptureFixture) -> None:
    async with Hub(broker=PostgresBroker("postgresql://127.0.0.1:1/test", connect_timeout=1)) as hub:
        await until(lambda: hub.stats().broker == "disconnected", "the listener to give up a first time")
        await until(lambda: "lost PostgreSQL" in caplog.text, "the warning")
        assert "psycopg.OperationalError: connection failed" in caplog.text  # the reason, not just a type
        sessions = committer(hub, pg)
        with sessions.begin() as s:  # the commit's own NOTIFY goes on the session's connection
            s.add(Note(id=1, body="fine"))
        Notifier(hub).notify("raw", "update")  # queued for when PostgreSQL answers
        assert hub.stats().broker == "disconnected"


def test_broker_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="channel=...\\) expected a name of 1 to 63 bytes"):
        PostgresBroker(channel="x" * 64)
    assert PostgresBroker("postgresql+psycopg://h/db").url == "postgresql://h/db"
    assert isinstance(Hub(broker="postgresql://h/db")._broker, PostgresBroker)

