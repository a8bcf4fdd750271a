"""Echo suppression: a request that names its tab's connection (``X-Notify-Connection``) marks
what it commits, and the hub does not send that back to that connection alone.

Capture first (``set_origin`` on a session, with a sink that records), then the FastAPI
dependencies in-process, on SQLite and PostgreSQL (the ``engine`` fixture). Across processes,
through both brokers: ``tests/test_echo_processes.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from starlette.testclient import WebSocketTestSession

from sqla_notify import Notification, Notifier, Sink, set_origin
from sqla_notify._capture.origin import release_origin
from sqla_notify._web.endpoints import _CONNECTION_ID
from sqla_notify.fastapi import notify_origin

from .models import Forum
from .support.apps import receive
from .support.echo import App, check_request_messages
from .support.recording import Recorder

if TYPE_CHECKING:
    from sqlalchemy import Connection

ME = "me-connection-id"  # set_origin takes any non-empty id; the router's are checked


def origins(sink: Recorder) -> list[list[tuple[str, str | None]]]:
    batches = [[(n.collection, n.origin) for n in batch] for batch in sink.batches]
    sink.batches.clear()
    return batches


def mark_and_release_in_a_transaction(s: Session) -> None:
    """Mark ``s``, flush forum 1 (a transaction is open), release the mark: what notify_origin
    does when the session's own dependency commits after it."""
    set_origin(s, ME)
    s.add(Forum(id=1, name="a"))
    s.flush()
    release_origin(s, ME)


# -- capture ---------------------------------------------------------------------------------


def test_the_mark_applies_to_every_notification_committed_until_cleared(
    factory: sessionmaker[Session], notifier: Notifier, sink: Recorder
) -> None:
    with factory() as s:
        set_origin(s, ME)
        s.add(Forum(id=1, name="a"))
        notifier.notify("containers", "update", {"id": 9}, session=s)
        with s.begin_nested():  # a released savepoint's rows are the transaction's
            s.add(Forum(id=2, name="b"))
        s.commit()
        s.get(Forum, 1).name = "renamed"  # type: ignore[union-attr]
        s.commit()  # still marked: the mark is the session's
        set_origin(s, None)
        s.delete(s.get(Forum, 2))
        s.commit()
    assert origins(sink) == [
        [("containers", ME), ("forums", ME), ("forums", ME)],
        [("forums", ME)],
        [("forums", None)],
    ]


def test_released_with_a_transaction_open_the_mark_stays_for_that_transaction_only(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory() as s:
        mark_and_release_in_a_transaction(s)
        s.commit()
        s.add(Forum(id=2, name="b"))
        s.commit()
        set_origin(s, ME)
        release_origin(s, ME)  # no transaction open: gone at once
        s.add(Forum(id=3, name="c"))
        s.commit()
    assert origins(sink) == [[("forums", ME)], [("forums", None)], [("forums", None)]]


def test_a_mark_set_again_since_is_not_released(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        set_origin(s, ME)
        set_origin(s, "another")
        release_origin(s, ME)
        s.add(Forum(id=1, name="a"))
        s.commit()
    assert origins(sink) == [[("forums", "another")]]


def test_a_rolled_back_transaction_keeps_nothing_and_publishes_nothing(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory() as s:
        mark_and_release_in_a_transaction(s)
        s.rollback()
        s.add(Forum(id=2, name="b"))
        s.commit()
    assert origins(sink) == [[("forums", None)]]


class InTransaction(Sink):
    """A transactional sink (as a PostgreSQL broker is) that takes every batch before COMMIT."""

    transactional = True

    def __init__(self) -> None:
        self.batches: list[list[Notification]] = []

    def publish(self, notifications: list[Notification]) -> None:
        raise AssertionError("expected every batch inside its transaction")

    def publish_in_transaction(self, connection: Connection, notifications: list[Notification]) -> bool:
        self.batches.append(notifications)
        return True


def test_a_transactional_sink_gets_the_mark_too(engine: Engine) -> None:
    sink = InTransaction()
    sessions = Notifier(sink).attach(sessionmaker(engine))
    with sessions.begin() as s:
        mark_and_release_in_a_transaction(s)  # committed by the context manager: still this transaction's
    with sessions.begin() as s:
        s.add(Forum(id=2, name="b"))
    assert [[n.origin for n in batch] for batch in sink.batches] == [[ME], [None]]


@pytest.mark.anyio
async def test_an_async_session_is_marked_through_its_sync_session(tmp_path: Any, sink: Recorder) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.run_sync(Forum.metadata.create_all)
    sessions = Notifier(sink).attach(async_sessionmaker(engine))
    async with sessions() as s:
        set_origin(s, ME)
        s.add(Forum(id=1, name="a"))
        await s.commit()
        set_origin(s, None)
        s.add(Forum(id=2, name="b"))
        await s.commit()
    await engine.dispose()
    assert origins(sink) == [[("forums", ME)], [("forums", None)]]


def test_set_origin_says_what_it_expected(factory: sessionmaker[Session]) -> None:
    with pytest.raises(TypeError, match=r"set_origin\(\) expected a Session or AsyncSession, got str"):
        set_origin("session", ME)
    with factory() as s:
        for bad in ("", 7):
            with pytest.raises(TypeError, match=r"expected connection to be a non-empty str .* or None, got"):
                set_origin(s, bad)  # type: ignore[arg-type]


def test_notify_origin_wants_the_dependency_itself() -> None:
    from fastapi import Depends

    with pytest.raises(TypeError, match=r"notify_origin\(get_session\), got Depends"):
        notify_origin(Depends(lambda: None))


# -- the FastAPI dependencies, in-process ----------------------------------------------------


def request_messages(ws: WebSocketTestSession, forum: int, name: str) -> None:
    """The two notifications of one write with ``manual=1``, whatever their order."""
    check_request_messages([receive(ws), receive(ws)], forum, name)


@pytest.mark.parametrize("kind", ["sync", "async", "sync-begin", "async-begin", "inline"])
def test_a_write_is_not_sent_back_to_the_connection_that_sent_it(app: App, kind: str) -> None:
    """``sync``/``async``: the endpoint commits (``def`` with a Session in a worker thread,
    ``async def`` with an AsyncSession); ``-begin``: the session's dependency commits after
    the endpoint, when notify_origin is done; ``inline``: the endpoint's own session."""
    client = app.client
    with client.websocket_connect("/notify/ws") as me, client.websocket_connect("/notify/ws") as other:
        mine = receive(me)["connection"]
        assert _CONNECTION_ID.fullmatch(mine)  # what the hub gives is what the header accepts
        receive(other)
        first = client.post(f"/echo/{kind}", params={"name": "mine", "manual": True}, headers={"X-Notify-Connection": mine})
        assert first.status_code == 200, first.text
        request_messages(other, first.json()["id"], "mine")
        second = client.post(f"/echo/{kind}", params={"name": "theirs", "manual": True})
        # The first write's notifications came before the second's to every other client:
        # the next ones this connection receives are the second's, so it never got them.
        request_messages(me, second.json()["id"], "theirs")
        request_messages(other, second.json()["id"], "theirs")


def test_another_connections_id_silences_only_that_connection(app: App) -> None:
    client = app.client
    with (
        client.websocket_connect("/notify/ws") as first,
        client.websocket_connect("/notify/ws") as second,
        client.websocket_connect("/notify/ws") as third,
    ):
        ids = [receive(ws)["connection"] for ws in (first, second, third)]
        assert len(set(ids)) == 3
        forum = client.post("/echo/async", params={"name": "x"}, headers={"X-Notify-Connection": ids[1]}).json()["id"]
        marker = client.post("/echo/async", params={"name": "y"}).json()["id"]
        assert [receive(first)["data"], receive(first)["data"]] == [{"id": forum}, {"id": marker}]
        assert receive(second)["data"] == {"id": marker}
        assert [receive(third)["data"], receive(third)["data"]] == [{"id": forum}, {"id": marker}]


@pytest.mark.parametrize("kind", ["sync", "async", "inline"])
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("abc", "'abc' (3 characters)"),
        ("A" * 17, f"'{'A' * 17}' (17 characters)"),
        ("0123456789abcde!", "'0123456789abcde!' (16 characters)"),
        ("x" * 100, f"'{'x' * 40}...' (100 characters)"),
    ],
)
def test_a_malformed_connection_header_is_refused_before_the_endpoint_runs(
    app: App, kind: str, value: str, shown: str
) -> None:
    response = app.client.post(f"/echo/{kind}", params={"name": "x"}, headers={"X-Notify-Connection": value})
    assert response.status_code == 400
    assert response.json() == {"detail": (
        "X-Notify-Connection expected the connection id of the notification stream's welcome message "
        f"(16 characters: letters, digits, '-' and '_'), got {shown}"
    )}
    with app.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Forum)) == 0


def test_an_empty_header_is_no_header(app: App) -> None:
    # A client that is not connected yet has no id to send.
    with app.client.websocket_connect("/notify/ws") as ws:
        receive(ws)
        forum = app.client.post("/echo/sync", params={"name": "x"}, headers={"X-Notify-Connection": ""}).json()["id"]
        assert receive(ws)["data"] == {"id": forum}


def test_the_header_is_documented_in_the_openapi_schema(app: App) -> None:
    operation = app.client.get("/openapi.json").json()["paths"]["/echo/sync"]["post"]
    header = [p for p in operation["parameters"] if p["in"] == "header"]
    assert [p["name"] for p in header] == ["X-Notify-Connection"]
    assert re.search(r"not sent back to that connection", header[0]["description"])


def test_the_wrapped_dependency_is_cached_per_request_as_usual(app: App) -> None:
    """Another dependency of the request that asks for the session gets the same one."""
    from fastapi import Depends

    def get_session() -> Iterator[Session]:
        with app.sessions() as session:
            yield session

    @app.app.post("/same")
    def same(
        marked: Session = Depends(notify_origin(get_session)), plain: Session = Depends(get_session)
    ) -> dict[str, Any]:
        return {"same": marked is plain, "mark": marked.info.get("sqla_notify.origin")}

    headers = {"X-Notify-Connection": "A" * 16}
    assert app.client.post("/same", headers=headers).json() == {"same": True, "mark": "A" * 16}
    assert app.client.post("/same").json() == {"same": True, "mark": None}
