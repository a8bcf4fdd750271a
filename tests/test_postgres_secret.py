"""Who may write to a PostgresBroker's channel (issue 11, item 6): any role that can connect
to the database can LISTEN and NOTIFY on it. A second role, created by the test, sends
forged payloads; without ``secret`` they are delivered (docs/processes.md says so), with it they
are dropped and counted, and so are copies of valid payloads sent again. End to end, through
two real uvicorn servers, a forged id with a newline never reaches an SSE stream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.orm import sessionmaker

from sqla_notify import Hub, Notification, Notifier
from sqla_notify._brokers.mac import TAG_LEN, Signer
from sqla_notify.metrics import readings
from sqla_notify.postgres import MAX_PAYLOAD, PostgresBroker

from .support.hubs import frames, listening, receive, until
from .support.pg import commit_split_batch, database, libpq, role, unique
from .support.servers import Server, two_pg_servers
from .support.services import pg_engine, pg_url

pytestmark = pytest.mark.anyio
SECRET = "a shared secret of more than 16 bytes"


def forged(batch_id: str = "f0f0f0f0f0f0f0f0", collection: str = "fault_notes", row: int = 666,
           action: str = "insert") -> str:
    """A payload as a process would send it, made up by someone else."""
    return json.dumps({"i": batch_id, "o": 0, "n": 1,
                       "b": [{"collection": collection, "action": action, "data": {"id": row}}]})


@asynccontextmanager
async def intruder(url: URL, name: str, channel: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of role ``name`` (no privilege granted), listening on ``channel``."""
    async with await psycopg.AsyncConnection.connect(libpq(url.set(username=name)), autocommit=True) as conn:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield conn


async def notify(conn: psycopg.AsyncConnection[Any], channel: str, *payloads: str) -> None:
    async with conn.transaction():
        for payload in payloads:
            await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


async def heard(conn: psycopg.AsyncConnection[Any], count: int) -> list[str]:
    """The next ``count`` payloads ``conn`` hears (bounded)."""
    return [n.payload async for n in conn.notifies(timeout=10, stop_after=count)]


# -- without a secret, what any role can do -----------------------------------------------------


async def test_without_a_secret_any_role_can_read_the_channel_and_make_every_process_deliver_a_forged_batch(
    admin: Engine,
) -> None:
    with role(admin) as mallory, database(admin) as url:
        channel = unique("c")
        async with Hub(broker=PostgresBroker(libpq(url), channel=channel)) as a, \
                Hub(broker=PostgresBroker(libpq(url), channel=channel)) as b:
            await listening(a, b)
            on_a, on_b = a.subscribe(), b.subscribe()
            frames(on_a), frames(on_b)
            async with intruder(url, mallory, channel) as conn:
                await notify(conn, channel, forged())
                for sub in (on_a, on_b):
                    got = await receive(sub, lambda got: len(got) == 1, "the forged batch")
                    assert got[0] == {"id": "f0f0f0f0f0f0f0f0:0", "collection": "fault_notes", "action": "insert",
                                      "data": {"id": 666}}
                Notifier(a).notify("fault_notes", "update", {"id": 1, "secret": "s3cr3t"})
                payloads = await heard(conn, 2)  # its own, then the process's
            assert '"secret":"s3cr3t"' in payloads[1]
            await receive(on_b, lambda got: len(got) == 1, "the real one")


async def test_a_process_without_the_secret_delivers_signed_payloads_unchecked(admin: Engine) -> None:
    with database(admin) as url:
        channel = unique("c")
        signing_broker = PostgresBroker(libpq(url), channel=channel, secret=SECRET)
        async with Hub(broker=PostgresBroker(libpq(url), channel=channel)) as plain, Hub(broker=signing_broker) as signing:
            await listening(plain, signing)
            sub = plain.subscribe()
            frames(sub)
            Notifier(signing).notify("fault_notes", "update", {"id": 1})
            got = await receive(sub, lambda got: len(got) == 1, "the signed batch")
            assert got[0]["data"] == {"id": 1}
            Notifier(plain).notify("fault_notes", "update", {"id": 2})  # unsigned: dropped by the other
            got = await receive(sub, lambda got: len(got) == 1, "its own batch")
            await until(lambda: signing_broker.rejected == 1, "the other to drop it")
            assert signing.stats().published == 1
            (reading,) = [r for r in readings(signing) if r.name == "sqla_notify_broker_rejected"]
            assert reading.value == 1  # what /metrics reports


# -- with a secret -----------------------------------------------------------------------------


async def test_with_a_secret_forged_payloads_are_dropped_counted_and_logged_once(
    admin: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sqla_notify")
    with role(admin) as mallory, database(admin) as url:
        channel = unique("c")
        engine = create_engine(url)
        a_broker = PostgresBroker(libpq(url), channel=channel, secret=SECRET)
        b_broker = PostgresBroker(libpq(url), channel=channel, secret=SECRET)
        async with Hub(broker=a_broker) as a, Hub(broker=b_broker) as b:
            await listening(a, b)
            sub = b.subscribe()
            frames(sub)
            other = Signer("another secret, 16 bytes or more", domain=f"sqla_notify postgres {channel}", owner="")
            wrong_channel = Signer(SECRET, domain="sqla_notify postgres elsewhere", owner="")
            valid = PostgresBroker(channel=channel, secret=SECRET).payloads([Notification("fault_notes", "insert")])[0]
            tampered = valid[:TAG_LEN] + valid[TAG_LEN:].replace('"insert"', '"delete"')
            attempts = [
                forged(),  # no tag
                other.sign(forged("0000000000000001")),  # another secret
                wrong_channel.sign(forged("0000000000000002")),  # signed for another channel
                tampered,  # a valid tag, for another text
                "x" * 43 + ".{}",  # garbage
                forged("evil\nevent: forged"),
            ]
            async with intruder(url, mallory, channel) as conn:
                await notify(conn, channel, *attempts)
                await notify(conn, channel, forged("0000000000000003"))  # another transaction

            # Valid traffic still flows, in commit order, a split batch in one piece.
            sessions = Notifier(a).attach(sessionmaker(engine))

            def work() -> None:
                commit_split_batch(sessions)
                Notifier(a).notify("fault_notes", "reload")  # not in a transaction: the broker's connection

            await asyncio.to_thread(work)
            got = await receive(sub, lambda got: len(got) == 62, "the 62 valid notifications")
            assert [m["data"]["id"] for m in got[:61]] == [*range(1, 61), 100]
            assert got[61]["action"] == "reload"
            assert all(m.get("type") is None for m in got)  # no resync: a forgery is no gap
            await until(lambda: a_broker.rejected == len(attempts) + 1, "A to drop them too")  # A's listener may lag
            await asyncio.sleep(0.2)
            assert frames(sub) == []
            assert b_broker.rejected == len(attempts) + 1
            assert b.stats().gaps == 0 and b.stats().published == 62
        engine.dispose()
    warnings = [r.getMessage() for r in caplog.records if "dropped a NOTIFY payload" in r.getMessage()]
    assert len(warnings) == 2, warnings  # once per broker: throttled
    assert "tag was missing or wrong" in warnings[0]
    assert not any(w in caplog.text for w in ("666", "evil", "0000000000000003"))  # never the payload


async def test_with_a_secret_copies_of_valid_payloads_are_dropped(admin: Engine) -> None:
    """A role that LISTENs sees valid payloads, and may send them again: a copy of one of
    the last 10,000 payloads is dropped (docs/processes.md says what this leaves open)."""
    with role(admin) as mallory, database(admin) as url:
        channel = unique("c")
        broker = PostgresBroker(libpq(url), channel=channel, secret=SECRET)
        async with Hub(broker=broker) as hub:
            await listening(hub)
            sub = hub.subscribe()
            frames(sub)
            async with intruder(url, mallory, channel) as conn:
                batch = [Notification("c", "insert", {"id": i, "pad": "x" * 500}) for i in range(30)]
                payloads = broker.payloads(batch)
                gap = broker._gap_payload("a test lost nothing")
                assert len(payloads) > 2
                async with await psycopg.AsyncConnection.connect(libpq(url), autocommit=True) as writer:
                    await notify(writer, channel, *payloads)
                    await notify(writer, channel, gap)
                copies = await heard(conn, len(payloads) + 1)
                got = await receive(sub, lambda got: len(got) == 31, "the batch, then a resync")
                assert [m["data"]["id"] for m in got[:30]] == list(range(30))
                assert got[30]["type"] == "resync" and "a test lost nothing" in got[30]["reason"]
                assert broker.rejected == 0

                await notify(conn, channel, *copies)  # the whole batch and the gap marker again
                await notify(conn, channel, copies[1])  # one part of it, alone
                await notify(conn, channel, *broker.payloads([Notification("c", "insert", {"id": 99})]))
            got = await receive(sub, lambda got: len(got) == 1, "the last batch")
            assert got[0]["data"] == {"id": 99}  # sent by a role without the secret, signed by one with it
            assert broker.rejected == len(copies) + 1
            assert hub.stats().gaps == 1  # a part without its first would be a gap: it was dropped before


def test_signed_payloads_fit_under_the_limit_and_are_bound_to_their_channel() -> None:
    broker = PostgresBroker(channel="c", secret=SECRET)
    batch = [Notification("c", "update", {"id": i, "pad": "€😀é" * 200}) for i in range(60)]
    parts = broker.payloads(batch)
    assert len(parts) > 1 and all(p.isascii() and len(p) <= MAX_PAYLOAD for p in parts)
    signer = Signer(SECRET, domain="sqla_notify postgres c", owner="")
    texts = [signer.verify(p) for p in parts]
    assert all(t is not None and t.startswith('{"i":') for t in texts)
    assert [n["data"] for t in texts for n in json.loads(t or "")["b"]] == [n.data for n in batch]
    assert Signer(SECRET, domain="sqla_notify postgres d", owner="").verify(parts[0]) is None
    # A row that fits without a tag but not with one is sent without its data.
    plain = PostgresBroker(channel="c")
    for size in range(MAX_PAYLOAD - 110, MAX_PAYLOAD - 40):
        big = [Notification("c", "update", {"id": 1, "pad": "x" * size})]
        [signed] = broker.payloads(big)
        assert len(signed) <= MAX_PAYLOAD
        if len(plain.payloads(big)[0]) > MAX_PAYLOAD - TAG_LEN:
            assert '"data"' not in signed


def test_secret_arguments_are_checked_and_secrets_can_be_changed() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes, got one of 5"):
        PostgresBroker(secret="short")
    with pytest.raises(TypeError, match="expected a str or bytes"):
        PostgresBroker(secret=1234567890123456789)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a str or bytes"):
        PostgresBroker(secret=[])
    old, new = b"the old secret, 16 bytes or more", "the new secret, 16 bytes or more"
    payload = PostgresBroker(channel="c", secret=old).payloads([Notification("c", "insert")])[0]
    changing = Signer([new, old], domain="sqla_notify postgres c", owner="")
    assert changing.verify(payload) is not None  # during the change: both accepted
    assert Signer(new, domain="sqla_notify postgres c", owner="").verify(payload) is None
    assert changing.sign("{}").startswith(Signer(new, domain="sqla_notify postgres c", owner="").sign("{}"))


# -- end to end: two uvicorn servers and an SSE reader -----------------------------------------


class Events:
    """An SSE stream of ``server`` read in the background: its raw lines."""

    def __init__(self, server: Server) -> None:
        self.lines: list[str] = []
        self._task = asyncio.get_running_loop().create_task(self._read(f"{server.base}/notify/events"))

    async def _read(self, url: str) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=None)) as http, http.stream("GET", url) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                self.lines.append(line)

    def data(self) -> list[dict[str, Any]]:
        """The JSON of each ``data:`` line (``{"not json": line}`` for a line that is not)."""
        got = []
        for line in self.lines:
            if line.startswith("data: "):
                try:
                    got.append(json.loads(line[len("data: "):]))
                except ValueError:
                    got.append({"not json": line})
        return got

    async def until(self, done: Callable[[list[dict[str, Any]]], bool], what: str) -> list[dict[str, Any]]:
        for _ in range(1000):
            if done(self.data()):
                return self.data()
            assert not self._task.done(), self._task
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}; got {self.lines}")

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _stats(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        stats: dict[str, Any] = (await http.get(f"{server.base}/stats")).json()
        return stats


async def _forge_on_servers(tmp_path: Path, config: pytest.Config, secret: str | None) -> None:
    """Two servers; an SSE client of B; a role without privileges NOTIFYs a batch whose id
    holds an SSE line, then a batch that looks valid; A commits for real."""
    channel = unique("sqla_secret")
    env = {"APP_CHANNEL": channel, **({} if secret is None else {"APP_PG_SECRET": secret})}
    admin_engine = pg_engine(config).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with role(admin_engine) as mallory, two_pg_servers(tmp_path, config, **env) as (a, b):
            events = Events(b)
            try:
                await events.until(lambda got: bool(got) and got[0]["type"] == "welcome", "the welcome")
                async with await psycopg.AsyncConnection.connect(
                    libpq(make_url(pg_url(config)).set(username=mallory)), autocommit=True
                ) as conn:
                    await notify(conn, channel, forged("evil\nevent: forged\ndata: {}", "forums", 666))
                    # Fields are JSON inside a data: line: a newline there is escaped.
                    await notify(conn, channel, forged("f0f0f0f0f0f0f0f0", "forums", 667, "insert\n\nevent: forged"))
                async with httpx.AsyncClient(timeout=10) as http:
                    ids = (await http.post(f"{a.base}/forums/many", params={"count": 300})).json()["ids"]
                    one = (await http.post(f"{a.base}/forums/sync", params={"name": "after"})).json()["id"]
                got = await events.until(lambda got: any(m.get("data") == {"id": one} for m in got), "the commits")
            finally:
                await events.close()
            assert not any(line.startswith("event:") for line in events.lines)  # nothing injected
            assert all(line.startswith(("id: ", "data: ", ":")) or not line for line in events.lines)
            notes = [m for m in got if "type" not in m]
            stats = await _stats(b)
            if secret is None:
                # The hub refused the id (a gap: resync); the other forgery is delivered.
                assert [m["type"] for m in got if "type" in m] == ["welcome", "resync"]
                assert "invalid id" in got[1]["reason"] and stats["gaps"] == 1
                assert notes[0] == {"id": "f0f0f0f0f0f0f0f0:0", "collection": "forums",
                                    "action": "insert\n\nevent: forged", "data": {"id": 667}}
                notes = notes[1:]
                assert stats.get("broker_rejected", 0) == 0  # (not there before the option)
            else:
                assert [m["type"] for m in got if "type" in m] == ["welcome"]
                assert stats["gaps"] == 0 and stats["broker_rejected"] == 2
                for _ in range(100):  # A's listener may lag behind B's
                    if (await _stats(a))["broker_rejected"] == 2:
                        break
                    await asyncio.sleep(0.05)
                assert (await _stats(a))["broker_rejected"] == 2
            assert [m["data"]["id"] for m in notes] == [*ids, one]  # in order, the split batch whole
            assert len({m["id"].partition(":")[0] for m in notes[:300]}) == 1
    finally:
        admin_engine.dispose()


async def test_a_forged_newline_in_an_id_never_reaches_an_sse_stream(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    await _forge_on_servers(tmp_path, request.config, secret=None)


async def test_with_a_secret_servers_drop_forgeries_and_deliver_commits_over_sse(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    await _forge_on_servers(tmp_path, request.config, secret=SECRET)
