"""PostgresBroker under faults, against the machine's PostgreSQL: a ``pg_notify`` that fails
inside the committing transaction (a database encoding without '€', a role without
``EXECUTE`` on ``pg_notify``, a terminated connection), split batches reassembled into one
hand-over, and a listener that is not up yet or loses its connection.

Each test works in a database of its own (and roles of its own), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

import pytest
from sqlalchemy import URL, Connection, Engine, create_engine, event, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from sqla_notify import Hub, Notification, Notifier, Sink
from sqla_notify.postgres import MAX_PAYLOAD, PostgresBroker

from .models import Container
from .support.hubs import frames, listening, receive, until
from .support.pg import Note, commit_split_batch, database, libpq, role, unique

pytestmark = pytest.mark.anyio


class CountingHub(Hub):
    """A hub that records the size of every hand-over its broker makes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handovers: list[int] = []

    def _dispatch(
        self, notifications: list[Notification], ids: list[str] | None = None, committed: float = 0.0, *,
        live: bool = True,
    ) -> None:
        self.handovers.append(len(notifications))
        super()._dispatch(notifications, ids, committed, live=live)


def rows(url: URL) -> list[tuple[int, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [(r.id, r.body) for r in conn.execute(text("SELECT id, body FROM fault_notes ORDER BY id"))]
    finally:
        engine.dispose()


# -- a commit stores its data and announces it, or raises ---------------------------------


@pytest.mark.parametrize("client_encoding", ["utf8", "default"])
async def test_characters_the_database_encoding_lacks_are_stored_and_announced(
    admin: Engine, client_encoding: str
) -> None:
    """A LATIN1 database has no '€' and no emoji. A payload carrying them made pg_notify fail
    on the server (client encoding UTF8: the transaction aborted, COMMIT silently rolled
    back) or in the driver (client encoding LATIN1, libpq's default here: the batch then
    failed again after the commit, on the broker's own connection, and was never sent)."""
    with database(admin, "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0") as url:
        args = {"client_encoding": "utf8"} if client_encoding == "utf8" else {}
        engine = create_engine(url, connect_args=args)
        async with Hub(broker=PostgresBroker(libpq(url), channel=unique("c"))) as hub:
            await listening(hub)
            sub = hub.subscribe()
            frames(sub)
            notifier = Notifier(hub)
            sessions = notifier.attach(sessionmaker(engine))

            def work() -> None:
                with sessions.begin() as s:
                    s.add(Note(id=1, body="é"))  # LATIN1 has it: one byte there, two in UTF-8
                    s.flush()
                    notifier.notify("prices", "update", {"sign": "€ 😀"}, session=s)  # neither

            await asyncio.to_thread(work)
            assert rows(url) == [(1, "é")]
            got = await receive(sub, lambda got: len(got) == 2, "both notifications")
            assert [m["data"] for m in got] == [{"id": 1, "body": "é"}, {"sign": "€ 😀"}]
        engine.dispose()


@pytest.mark.parametrize("driver", ["psycopg", "psycopg-async", "asyncpg"])
async def test_a_pg_notify_that_fails_makes_commit_raise_and_stores_nothing(admin: Engine, driver: str) -> None:
    """A role without EXECUTE on pg_notify: no payload can avoid that failure. The commit must
    raise (it used to return normally, the row silently rolled back, the batch published)."""
    with role(admin) as user, database(admin) as url:
        owner = create_engine(url)
        with owner.begin() as conn:
            conn.execute(text("REVOKE EXECUTE ON FUNCTION pg_notify(text, text) FROM PUBLIC"))
            conn.execute(text(f"GRANT SELECT, INSERT ON fault_notes TO {user}"))
        owner.dispose()
        async with Hub(broker=PostgresBroker(libpq(url), channel=unique("c"))) as hub:
            await listening(hub)
            sub = hub.subscribe()
            frames(sub)
            notifier = Notifier(hub)
            as_user = url.set(username=user)
            if driver == "psycopg":
                engine = create_engine(as_user)
                sessions = notifier.attach(sessionmaker(engine))

                def work() -> None:
                    with sessions.begin() as s:
                        s.add(Note(id=1, body="doomed"))

                with pytest.raises(ProgrammingError, match="permission denied for function pg_notify"):
                    await asyncio.to_thread(work)
                engine.dispose()
            else:
                name = "psycopg" if driver == "psycopg-async" else "asyncpg"
                async_engine = create_async_engine(as_user.set(drivername=f"postgresql+{name}"))
                async_sessions = notifier.attach(async_sessionmaker(async_engine))
                with pytest.raises(ProgrammingError, match="permission denied for function pg_notify"):
                    async with async_sessions.begin() as a:
                        a.add(Note(id=1, body="doomed"))
                await async_engine.dispose()
            assert rows(url) == []
            # The superuser may notify: its commit arrives, and nothing before it.
            engine = create_engine(url)
            with notifier.attach(sessionmaker(engine)).begin() as s:
                s.add(Note(id=2, body="fine"))
            got = await receive(sub, lambda got: len(got) >= 1, "the commit that worked")
            assert [m["data"] for m in got] == [{"id": 2, "body": "fine"}]
            assert notifier.stats().batches == 1
            engine.dispose()


async def test_a_terminated_committing_connection_makes_commit_raise(admin: Engine) -> None:
    with database(admin) as url:
        engine = create_engine(url)
        async with Hub(broker=PostgresBroker(libpq(url), channel=unique("c"))) as hub:
            await listening(hub)
            sub = hub.subscribe()
            frames(sub)
            sessions = sessionmaker(engine)

            @event.listens_for(sessions, "before_commit")  # runs before the notifier's own
            def terminate(session: Session) -> None:
                pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
                with admin.connect() as conn:  # and wait (5 s at most) until it is gone
                    assert conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar()

            notifier = Notifier(hub)
            notifier.attach(sessions)

            def work() -> None:
                with sessions.begin() as s:
                    s.add(Note(id=1, body="lost with its connection"))
                    s.flush()  # so that the first SQL after the termination is pg_notify

            with pytest.raises(OperationalError):
                await asyncio.to_thread(work)
            assert rows(url) == []
            assert notifier.stats().batches == 0
            event.remove(sessions, "before_commit", terminate)
            with sessions.begin() as s:  # the pool recovers; this one arrives, alone
                s.add(Note(id=2, body="fine"))
            got = await receive(sub, lambda got: len(got) >= 1, "the commit that worked")
            assert [m["data"]["id"] for m in got] == [2]
        engine.dispose()


async def test_a_batch_that_cannot_be_encoded_does_not_fail_the_commit(
    admin: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Encoding fails before any SQL runs: the transaction is intact, the commit goes on, and
    the batch takes the after-commit path."""
    with database(admin) as url:
        engine = create_engine(url)
        broker = PostgresBroker(libpq(url), channel=unique("c"))
        with engine.begin() as conn:
            assert broker.publish_in_transaction(conn, [Notification("x", "update", {"bad": "\ud800"})]) is False
            conn.execute(text("INSERT INTO fault_notes VALUES (1, 'still fine')"))  # not aborted
        assert "publishing it after the commit" in caplog.text
        notifier = Notifier(Hub(broker=broker))
        with notifier.attach(sessionmaker(engine)).begin() as s:
            s.add(Note(id=2, body="stored"))
            notifier.notify("x", "update", {"bad": "\ud800"}, session=s)  # a lone surrogate
        assert rows(url) == [(1, "still fine"), (2, "stored")]
        engine.dispose()


# -- payloads and reassembly -----------------------------------------------------------------


def test_a_transactional_sink_that_raises_makes_commit_raise(engine: Engine) -> None:
    """The contract (Sink.publish_in_transaction): what it raises propagates, on every
    database; the transaction is not committed and nothing is published."""

    class Failing(Sink):
        transactional = True

        def __init__(self) -> None:
            self.got: list[list[Notification]] = []

        def publish(self, notifications: list[Notification]) -> None:
            self.got.append(notifications)

        def publish_in_transaction(self, connection: Connection, notifications: list[Notification]) -> bool:
            raise RuntimeError("broken")

    sink = Failing()
    sessions = Notifier(sink).attach(sessionmaker(engine))
    with pytest.raises(RuntimeError, match="broken"), sessions.begin() as s:
        s.add(Container(id=1, name="a"))
    with sessions() as s:
        assert s.scalars(select(Container)).all() == []
    assert sink.got == []


def test_payloads_are_ascii_sized_and_carry_the_batch_size() -> None:
    broker = PostgresBroker(channel="c")
    batch = [Notification("c", "update", {"id": i, "pad": "€😀é" * 200}) for i in range(60)]
    parts = broker.payloads(batch)
    assert len(parts) > 1
    assert all(p.isascii() and len(p) <= MAX_PAYLOAD for p in parts)  # bytes = characters, anywhere
    decoded = [json.loads(p) for p in parts]
    assert {d["n"] for d in decoded} == {60}
    assert [n["data"] for d in decoded for n in d["b"]] == [n.data for n in batch]


async def test_a_split_batch_reaches_the_hub_in_one_handover(admin: Engine) -> None:
    with database(admin) as url:
        engine = create_engine(url)
        channel = unique("c")
        a = CountingHub(broker=PostgresBroker(libpq(url), channel=channel))
        b = CountingHub(broker=PostgresBroker(libpq(url), channel=channel))
        async with a, b:
            await listening(a, b)
            sub = b.subscribe()
            frames(sub)
            sessions = Notifier(a).attach(sessionmaker(engine))
            await asyncio.to_thread(commit_split_batch, sessions)
            got = await receive(sub, lambda got: len(got) == 61, "all 61")
            assert [m["data"]["id"] for m in got] == [*range(1, 61), 100]
            await until(lambda: len(a.handovers) == 2, "A's listener too")  # it may lag behind B's
            assert a.handovers == b.handovers == [60, 1]
            assert b.stats().gaps == 0
        engine.dispose()


async def test_a_torn_batch_is_a_gap_and_old_payloads_pass_as_they_are(admin: Engine) -> None:
    with database(admin) as url:
        engine = create_engine(url)
        channel = unique("c")
        broker = PostgresBroker(libpq(url), channel=channel)
        hub = CountingHub(broker=broker)
        async with hub:
            await listening(hub)
            sub = hub.subscribe()
            frames(sub)
            big = broker.payloads([Notification("c", "insert", {"id": i, "pad": "x" * 500}) for i in range(30)])
            whole = broker.payloads([Notification("c", "insert", {"id": 99})])
            old = '{"i":"0123456789abcdef","o":0,"b":[{"collection":"c","action":"insert","data":{"id":7}}]}'
            assert len(big) > 2
            with engine.begin() as conn:  # what a listener cut off halfway would see
                for payload in [big[0], *whole, old]:
                    conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})
            got = await receive(sub, lambda got: len(got) == 3, "resync, then the two batches")
            assert got[0]["type"] == "resync"
            assert got[0]["reason"].startswith(f"only {len(json.loads(big[0])['b'])} of the 30 notifications of batch")
            assert [m["data"]["id"] for m in got[1:]] == [99, 7]
            assert hub.handovers == [1, 1]
            assert hub.stats().gaps == 1
        engine.dispose()


# -- the listener: not up yet, lost ------------------------------------------------------------


async def test_start_waits_until_the_listener_listens(admin: Engine) -> None:
    with database(admin) as url:
        async with Hub(broker=PostgresBroker(libpq(url), channel=unique("c"))) as hub:
            assert hub.stats().broker == "connected"


async def test_start_returns_after_connect_timeout_when_postgresql_does_not_answer() -> None:
    with socket.socket() as mute:  # accepts connections (the kernel does) and never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        began = time.monotonic()
        async with Hub(broker=PostgresBroker(f"postgresql://127.0.0.1:{port}/test", connect_timeout=1)) as hub:
            waited = time.monotonic() - began
            assert 0.9 < waited < 1.9  # libpq's own attempt lasts 2 s at least
            assert hub.stats().broker == "connecting"


async def test_clients_connected_before_the_listener_was_up_get_resync(
    admin: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with role(admin, "NOLOGIN") as user, database(admin) as url:
        engine = create_engine(url)
        broker = PostgresBroker(libpq(url.set(username=user)), channel=unique("c"), connect_timeout=1)
        async with Hub(broker=broker) as hub:
            await until(lambda: hub.stats().broker == "disconnected", "the first refusal")  # at once, now
            sub = hub.subscribe()
            assert [m["type"] for m in frames(sub)] == ["welcome"]
            sessions = Notifier(hub).attach(sessionmaker(engine))
            with sessions.begin() as s:  # notified while no one listens: lost
                s.add(Note(id=1, body="meanwhile"))
            with admin.connect() as conn:
                conn.execute(text(f"ALTER ROLE {user} LOGIN"))
            got = await receive(sub, lambda got: len(got) == 1, "resync once the listener is up", timeout=15)
            assert got[0]["type"] == "resync"
            assert "connected before the PostgreSQL listener was up" in got[0]["reason"]
            assert hub.stats().gaps == 1 and hub.stats().broker == "connected"
            assert "told 1 client(s) to resync: clients connected before" in caplog.text
            with sessions.begin() as s:
                s.add(Note(id=2, body="live"))
            got = await receive(sub, lambda got: len(got) == 1, "live")
            assert got[0]["data"] == {"id": 2, "body": "live"}
        engine.dispose()


async def test_a_lost_listener_reconnects_promptly_and_says_why(
    admin: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sqla_notify")
    with database(admin) as url:
        engine = create_engine(url)
        channel = unique("c")
        broker = PostgresBroker(libpq(url), channel=channel)
        async with Hub(broker=broker) as hub:
            await listening(hub)
            sub = hub.subscribe()
            frames(sub)
            first = broker.payloads([Notification("c", "insert", {"id": i, "pad": "x" * 500}) for i in range(30)])[0]
            with engine.begin() as conn:  # the first part of a batch, and then the cut
                conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": first})
            await until(lambda: broker._partial is not None, "the first part to arrive")
            with admin.connect() as conn:
                killed = conn.execute(
                    text("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": f"sqla_notify {channel}"},
                ).scalars().all()
            assert killed == [True]
            cut = time.monotonic()
            got = await receive(sub, lambda got: len(got) == 1, "resync", timeout=5)
            assert time.monotonic() - cut < 2  # the first retry comes after 0.2 s at most
            reason = got[0]["reason"]
            assert reason.startswith("the PostgreSQL listener was disconnected for ")
            assert "(psycopg.OperationalError: " in reason  # the cause, on one line
            assert f"{len(json.loads(first)['b'])} of the 30 notifications of batch" in reason
            assert hub.stats().gaps == 1
            assert reason in caplog.text
        engine.dispose()

