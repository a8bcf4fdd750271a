"""Structured logs: every record of the ``sqla_notify`` logger carries ``event``,
``connection``, ``collection`` and ``broker`` (``extra=``), and no secret.

One test drives a set of faults (the ones the other tests drive one by one), captures every
record, and checks them all.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

from sqla_notify import Hub, Notification, Notifier, NotifyOptions, filter_columns
from sqla_notify import _report
from sqla_notify._capture import recorder as _capture
from sqla_notify._hub import subscriber as _subscriber
from sqla_notify.fastapi import ALL, bearer_token, notify_router
from sqla_notify.postgres import PostgresBroker
from sqla_notify.redis import RedisBroker

from .models import Base, Forum
from .support.hubs import N, until

PRINCIPAL = "principal-SECRET-alice"
TOKEN = "token-SECRET-4f1c"
PAYLOAD = "payload-SECRET-row"
PASSWORD = "password-SECRET-pw"
SECRETS = (PRINCIPAL, TOKEN, PAYLOAD, PASSWORD)
FIELDS = ("event", "connection", "collection", "broker")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def authenticate(conn: HTTPConnection) -> str:
    token = bearer_token(conn)
    if token == "boom":
        raise RuntimeError(f"cannot check {token} for {PRINCIPAL}")
    if token != TOKEN:
        raise HTTPException(403)
    return PRINCIPAL


def authorize(principal: Any, n: Notification) -> bool:
    if n.collection == "secret":
        raise KeyError(f"{principal} may not see {n.data}")
    return True


async def hub_faults() -> list[str]:
    """A slow client, a backlogged one, a broker that cannot be reached (with a password in
    its URL); returns the slow client's connection id."""
    async with Hub(queue_size=1) as hub:
        slow, backlogged = hub.subscribe(principal=PRINCIPAL), hub.subscribe(principal=PRINCIPAL)
        slow.receive_nowait()  # took its welcome, never comes back
        for k in range(4):
            hub.publish([Notification("forums", "insert", {"id": k, "body": PAYLOAD})])
        await until(lambda: slow.close_code is not None, "the slow client's end")
        assert backlogged.close_code is None
    broker = RedisBroker(f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0", connect_timeout=0.2)
    async with Hub(broker=broker) as hub:
        hub.publish([Notification("forums", "insert", {"body": PAYLOAD})])
        await until(lambda: broker.errors > 0, "a failed read")
    return [slow.id, backlogged.id]


def test_every_record_has_its_fields_and_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fresh throttles: each kind is logged once here whatever ran before.
    monkeypatch.setattr(_subscriber, "AUTHORIZE_ERRORS", _report.HookErrors("authorize", "authorize_error"))
    monkeypatch.setattr(_capture, "_PAYLOAD_ERRORS", _report.HookErrors("a payload function", "payload_error"))

    hub = Hub()
    app = FastAPI()
    app.include_router(notify_router(
        hub, collections=ALL, authenticate=authenticate, authorize=authorize, max_connections=1,
        handshake_timeout=5,
    ))

    def sink(batch: list[Notification]) -> None:
        raise ValueError(f"cannot store {batch}")

    engine = create_engine(f"sqlite:///{tmp_path / 'logs.db'}")
    Base.metadata.create_all(engine)
    failing = Notifier(sink).attach(sessionmaker(engine))
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    with caplog.at_level(logging.DEBUG, logger="sqla_notify"):
        with TestClient(app) as client:
            portal = client.portal
            assert portal is not None
            portal.call(hub.__aenter__)
            with client.websocket_connect("/ws", headers=bearer) as ws:
                json.loads(ws.receive_text())
                # authorize raises: withheld, logged by type
                hub.publish([Notification("secret", "insert", {"body": PAYLOAD})])
                hub.publish([N(1)])
                assert json.loads(ws.receive_text())["collection"] == "forums"
                # over max_connections
                with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws", headers=bearer) as other:
                    other.receive_text()
            # a foreign Origin; authenticate raising
            with pytest.raises(WebSocketDisconnect), client.websocket_connect(
                "/ws", headers={**bearer, "Origin": "https://evil.example"},
            ) as ws:
                ws.receive_text()
            with client.websocket_connect("/ws", headers={"Authorization": "Bearer boom"}) as ws, \
                    pytest.raises(WebSocketDisconnect):
                ws.receive_text()
            portal.call(hub.__aexit__, None, None, None)
            slow_ids = portal.call(hub_faults)
        # a sink that raises
        with failing.begin() as session:
            session.add(Forum(name=PAYLOAD))

    records = [r for r in caplog.records if r.name == "sqla_notify"]
    events = {r.event for r in records}  # type: ignore[attr-defined]
    assert {
        "authorize_error", "limit_refused", "origin_refused", "authenticate_error", "slow_client", "resync",
        "broker_lost", "sink_error",
    } <= events, events
    for record in records:
        for name in FIELDS:
            assert hasattr(record, name), f"{record.getMessage()!r} has no {name!r}"
        text = logging.Formatter("%(message)s %(event)s %(connection)s %(collection)s %(broker)s").format(record)
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in a {record.event} record: {text}"  # type: ignore[attr-defined]
    slow = [r for r in records if r.event == "slow_client"]  # type: ignore[attr-defined]
    # a tag of the connection, never its id (which would let a reader silence that tab)
    assert [r.connection for r in slow] == [_report.connection_tag(i) for i in slow_ids[:1]]  # type: ignore[attr-defined]
    assert all(i not in r.getMessage() + str(r.connection) for r in records for i in slow_ids)  # type: ignore[attr-defined]
    lost = next(r for r in records if r.event == "broker_lost")  # type: ignore[attr-defined]
    assert lost.broker.startswith("RedisBroker('redis://:***@127.0.0.1:")  # type: ignore[attr-defined]
    engine.dispose()


def test_records_about_a_collection_name_it(caplog: pytest.LogCaptureFixture) -> None:
    broker = PostgresBroker("postgresql://127.0.0.1/unused")
    with caplog.at_level(logging.DEBUG, logger="sqla_notify"):
        broker.payloads([Notification("forums", "update", {"body": PAYLOAD * 1000})])
        broker._deliver("not json")
    too_large, bad = caplog.records
    assert (too_large.event, too_large.collection) == ("payload_too_large", "forums")  # type: ignore[attr-defined]
    assert (bad.event, bad.collection) == ("broker_bad_entry", None)  # type: ignore[attr-defined]
    assert bad.broker == repr(broker)  # type: ignore[attr-defined]


def test_fields_are_all_there_even_when_empty() -> None:
    assert _report.fields("x") == {"event": "x", "connection": None, "collection": None, "broker": None}


def test_bad_options_name_their_collection(caplog: pytest.LogCaptureFixture) -> None:
    class Own(DeclarativeBase):
        pass

    class Model(Own):
        __tablename__ = "log_bad_options"
        __sqla_notify__ = NotifyOptions(exclude={"nope"})
        id: Mapped[int] = mapped_column(primary_key=True)

    with caplog.at_level(logging.DEBUG, logger="sqla_notify"):
        filter_columns(Own)
    (record,) = [r for r in caplog.records if r.event == "bad_options"]  # type: ignore[attr-defined]
    assert record.collection == "log_bad_options"  # type: ignore[attr-defined]
