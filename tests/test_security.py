"""Safe by default (issue 11), probed as an attacker would: a real uvicorn server
(tests/server_app.py), raw handshakes and requests, and its log read afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sqla_notify import Hub, Notification, _report

from sqla_notify._hub import subscriber as _subscriber
from sqla_notify.fastapi import ALL, notify_router

from . import rawws
from .support.servers import Server, wait_stats

pytestmark = pytest.mark.anyio
EVIL = "https://evil.example"


def _ws_status(server: Server, path: str = "/notify/ws", **headers: str) -> int:
    status, sock = rawws.handshake(server.port, path, headers=headers)
    sock.close()
    return status


def _sse(
    server: Server, path: str = "/notify/events", *, rcvbuf: int | None = None, headers: dict[str, str] | None = None
) -> tuple[int, socket.socket]:
    """A raw SSE request: the status, and the socket positioned after the response head."""
    sock = rawws.open_socket(server.port, rcvbuf=rcvbuf)
    fields = {"Host": f"127.0.0.1:{server.port}", **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    sock.sendall(f"GET {path} HTTP/1.1\r\n{lines}Accept: text/event-stream\r\n\r\n".encode())
    status, _ = rawws.read_head(sock)
    return status, sock


def _sse_status(server: Server, path: str = "/notify/events", **headers: str) -> int:
    status, sock = _sse(server, path, headers=headers)
    sock.close()
    return status


def _close_code(sock: socket.socket) -> int | None:
    try:
        return rawws.messages_until_close(sock)[1]
    finally:
        sock.close()


def _welcomed(sock: socket.socket) -> bool:
    opcode, payload = rawws.read_frame(sock)
    return opcode == rawws.TEXT and json.loads(payload)["type"] == "welcome"


async def _stats(http: httpx.AsyncClient) -> dict[str, Any]:
    return (await http.get("/stats")).json()  # type: ignore[no-any-return]


# -- 1. cross-site WebSocket hijacking -----------------------------------------------------


async def test_a_page_of_another_site_is_refused_with_403_before_authenticate(tmp_path: Path) -> None:
    server = Server(tmp_path)
    own = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            # "raise-..." would make authenticate raise (and count): it must not even run.
            for origin in (EVIL, "null", f"http://127.0.0.1:{server.port + 1}", f"https://127.0.0.1.evil.example"):
                assert _ws_status(server, "/notify/ws?token=raise-x", Origin=origin) == 403, origin
                assert _sse_status(server, "/notify/events?token=raise-x", Origin=origin) == 403, origin
            stats = await _stats(http)
            assert stats["router_authenticate_errors"] == 0 and stats["router_refused_origin"] == 8
            # The site's own pages, and clients that are not browsers (no Origin), pass.
            for headers in ({"Origin": own}, {"Origin": own.upper()}, {}):
                status, sock = rawws.handshake(server.port, headers=headers)
                assert status == 101 and _welcomed(sock), headers
                sock.close()
                assert _sse_status(server, **headers) == 200
            # An https page of the same host: TLS ended at a proxy in front of the server.
            assert _ws_status(server, Origin=f"https://127.0.0.1:{server.port}") == 101
            assert _ws_status(server, Host="127.0.0.1", Origin="https://127.0.0.1") == 101
            assert _ws_status(server, Host="127.0.0.1", Origin="http://127.0.0.1:8080") == 403
    finally:
        server.stop()


async def test_allowed_origins_are_let_in(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_ALLOWED_ORIGINS="https://app.example,null")
    try:
        assert _ws_status(server, Origin="https://app.example") == 101
        assert _ws_status(server, Origin="null") == 101
        assert _sse_status(server, Origin="https://APP.example:443") == 200
        assert _ws_status(server, Origin=EVIL) == 403
        assert _ws_status(server, Origin="https://app.example:8443") == 403
    finally:
        server.stop()


def test_allowed_origins_must_be_origins() -> None:
    for bad in ("https://app.example/", "app.example", "https://app.example/path", "ftp://x"):
        with pytest.raises(ValueError, match="allowed_origins expected origins like"):
            notify_router(Hub(), collections=ALL, allowed_origins=[bad])
    with pytest.raises(TypeError, match="got a str"):
        notify_router(Hub(), collections=ALL, allowed_origins="https://app.example")


# -- 3. hooks fail closed and cannot stall the server ----------------------------------------


async def test_false_and_empty_principals_are_refusals(server: Server) -> None:
    for token in ("false", "empty"):
        sock = rawws.connect(server.port, f"/notify/ws?token={token}")
        assert _close_code(sock) == 1008, token
        assert _sse_status(server, f"/notify/events?token={token}") == 403, token


async def test_a_sync_authenticate_runs_off_the_loop_and_times_out(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_HANDSHAKE_TIMEOUT="1")
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            slow = await asyncio.to_thread(rawws.connect, server.port, "/notify/ws?token=slow")
            # Its authenticate blocks its thread; the loop serves everyone else meanwhile.
            async with httpx.AsyncClient(base_url=server.base, timeout=5) as quick:
                assert (await quick.get("/stats")).status_code == 200
            assert await asyncio.to_thread(_close_code, slow) == 1013  # after handshake_timeout
            status, sock = await asyncio.to_thread(_sse, server, "/notify/events?token=slow")
            sock.close()
            assert status == 503
            assert (await _stats(http))["router_authentication_timeouts"] == 2
    finally:
        server.stop()


async def test_authenticate_as_a_fastapi_dependency(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_AUTH="depends")
    try:
        sock = rawws.connect(server.port, headers={"Cookie": "session=c00kie"})
        assert _welcomed(sock)
        sock.close()
        for cookie in ({"Cookie": "session=stolen"}, {}):  # unknown: None; none: HTTPException
            assert _close_code(rawws.connect(server.port, headers=cookie)) == 1008
            assert _sse_status(server, **cookie) == 403
        assert _sse_status(server, Cookie="session=c00kie") == 200
    finally:
        server.stop()


async def test_authenticate_that_raises_refuses_and_logs_no_secret(tmp_path: Path) -> None:
    server = Server(tmp_path)
    try:
        for _ in range(20):
            assert _close_code(rawws.connect(server.port, "/notify/ws?token=raise-TOPSECRET")) == 1011
        assert _sse_status(server, "/notify/events?token=raise-TOPSECRET") == 500
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            assert (await _stats(http))["router_authenticate_errors"] == 21
    finally:
        server.stop()
    log = server.log.read_text()
    assert "TOPSECRET" not in log
    assert log.count("authenticate raised builtins.ValueError") == 1, log


async def test_authorize_that_raises_denies_once_logged_and_counted(tmp_path: Path) -> None:
    server = Server(tmp_path)
    clients = [rawws.connect(server.port, "/notify/ws?token=secret-alice") for _ in range(20)]
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            for sock in clients:
                assert _welcomed(sock)
            await http.post("/burst", params={"count": 10, "name": "boom-PAYLOADSECRET"})
            await http.post("/burst", params={"count": 1, "name": "public"})
            for sock in clients:  # nothing of the failed ones came before it
                opcode, payload = await asyncio.to_thread(rawws.read_frame, sock)
                assert json.loads(payload)["data"]["name"] == "public"
            stats = await _stats(http)
        assert stats["router_authorize_errors"] == stats["authorize_errors"] == 200
    finally:
        for sock in clients:
            sock.close()
        server.stop()
    log = server.log.read_text()
    assert "PAYLOADSECRET" not in log and "alice" not in log
    assert log.count("authorize raised builtins.RuntimeError") == 1, log


def test_authorize_errors_reach_caplog_without_principal_or_payload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_subscriber, "AUTHORIZE_ERRORS", _report.HookErrors("authorize"))  # a fresh throttle

    def authorize(principal: Any, n: Notification) -> bool:
        raise KeyError(f"{principal} {n.data}")

    hub = Hub()
    app = FastAPI()
    app.include_router(notify_router(hub, collections=ALL, authenticate=lambda conn: "token-abc", authorize=authorize))

    async def publish() -> None:
        hub._dispatch([Notification("forums", "update", {"secret": "hunter2"})] * 5)

    with caplog.at_level(logging.DEBUG, logger="sqla_notify"), TestClient(app) as client:
        portal = client.portal
        assert portal is not None
        portal.call(hub.__aenter__)
        with client.websocket_connect("/ws") as ws, client.websocket_connect("/ws"):
            assert json.loads(ws.receive_text())["type"] == "welcome"
            portal.call(publish)
            ws.send_text('{"type": "subscribe", "collections": ["x"]}')  # a round trip: the dispatch is done
            assert json.loads(ws.receive_text())["type"] == "subscribed"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2" not in text and "token-abc" not in text
    assert [r.getMessage().split(";")[0] for r in caplog.records] == ["authorize raised builtins.KeyError"]
    assert all(r.exc_info is None for r in caplog.records)


# -- 7. connection limits ---------------------------------------------------------------------


async def test_connection_limits_per_process_and_per_client(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_MAX_CONNECTIONS="3", APP_MAX_PER_CLIENT="2")
    held = []
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            for _ in range(2):
                held.append(rawws.connect(server.port))
                assert _welcomed(held[-1])
            assert _close_code(rawws.connect(server.port)) == 1013  # a third from this address
            assert _sse_status(server) == 503
            other = rawws.connect(server.port, source="127.0.0.2")  # another address: room for one
            assert _welcomed(other)
            held.append(other)
            assert _close_code(rawws.connect(server.port, source="127.0.0.3")) == 1013  # the process is full
            stats = await _stats(http)
            assert stats["router_connections"] == 3 and stats["router_refused_limit"] == 3
            gone = held.pop(0)  # one leaves: its place is free again
            rawws.send_close(gone)
            gone.close()
            deadline = time.monotonic() + 10
            while (await _stats(http))["router_connections"] != 2:
                assert time.monotonic() < deadline, "the closed connection kept its place"
                await asyncio.sleep(0.05)
            held.append(rawws.connect(server.port, source="127.0.0.3"))
            assert _welcomed(held[-1])
    finally:
        for sock in held:
            sock.close()
        server.stop()


async def test_connections_that_authenticate_refuses_hold_no_place(tmp_path: Path) -> None:
    """The place is taken once ``authenticate`` has admitted the connection, and given back
    when it ends: refusals (here by a FastAPI dependency) never fill the process up."""
    server = Server(tmp_path, APP_AUTH="depends", APP_MAX_CONNECTIONS="1")
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            for _ in range(3):
                assert _close_code(rawws.connect(server.port, headers={"Cookie": "session=stolen"})) == 1008
                assert _sse_status(server) == 403
            held = rawws.connect(server.port, headers={"Cookie": "session=c00kie"})
            assert _welcomed(held)
            assert _close_code(rawws.connect(server.port, headers={"Cookie": "session=c00kie"})) == 1013
            stats = await _stats(http)
            assert (stats["router_connections"], stats["router_refused_limit"]) == (1, 1)
            held.close()
    finally:
        server.stop()


async def test_a_client_stuck_in_authenticate_is_refused_another_before_authenticate(tmp_path: Path) -> None:
    """Connections inside ``authenticate`` count against the limits: one address's handshake
    that never finishes keeps that address's next ones from reaching ``authenticate`` at all."""
    server = Server(tmp_path, APP_MAX_PER_CLIENT="1", APP_HANDSHAKE_TIMEOUT="5")
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            slow = asyncio.ensure_future(
                asyncio.to_thread(lambda: _close_code(rawws.connect(server.port, "/notify/ws?token=slow")))
            )
            await wait_stats(http, "router_authenticating", 1)
            assert _close_code(rawws.connect(server.port, "/notify/ws?token=slow")) == 1013  # at once
            assert _sse_status(server, "/notify/events?token=slow") == 503
            other = rawws.connect(server.port, source="127.0.0.2")  # another address is let in
            assert _welcomed(other)
            other.close()
            stats = await _stats(http)
            assert (stats["router_refused_limit"], stats["router_authentication_timeouts"]) == (2, 0)
            assert await slow == 1013  # after handshake_timeout
            stats = await _stats(http)
            assert (stats["router_authenticating"], stats["router_authentication_timeouts"]) == (0, 1)
            sock = rawws.connect(server.port)
            assert _welcomed(sock)
            sock.close()
    finally:
        server.stop()


async def test_an_sse_client_the_hub_dropped_is_disconnected(tmp_path: Path) -> None:
    # A long keep-alive: a connection left open after the stream ended would show.
    server = Server(tmp_path, APP_QUEUE_SIZE="16", APP_CLOSE_GRACE="0.5", UVICORN_ARGS="--timeout-keep-alive 60")
    status, stalled = _sse(server, rcvbuf=4096)
    assert status == 200
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            for _ in range(30):  # far more than its socket and queue hold: it is given up on
                await http.post("/burst", params={"count": 10, "size": 20_000})
            await wait_stats(http, "slow_disconnects", 1)

            def read_to_the_end() -> bytes:
                data = b""
                while chunk := stalled.recv(65536):  # the socket's timeout bounds this
                    data += chunk
                return data

            try:
                data = await asyncio.to_thread(read_to_the_end)
            except ConnectionResetError:
                data = b""
            assert b'"type":"welcome"' in data or not data
            deadline = time.monotonic() + 10
            while (await _stats(http))["router_connections"] != 0:
                assert time.monotonic() < deadline, "the dropped SSE client still holds its place"
                await asyncio.sleep(0.05)
    finally:
        stalled.close()
        server.stop()


def test_limits_and_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="notify_router\\(max_connections=...\\) expected an int >= 1 or None, got 0"):
        notify_router(Hub(), collections=ALL, max_connections=0)
    with pytest.raises(ValueError, match="notify_router\\(max_connections_per_client=...\\) expected"):
        notify_router(Hub(), collections=ALL, max_connections_per_client=-1)
    with pytest.raises(ValueError, match="notify_router\\(handshake_timeout=...\\) expected seconds > 0, got 0"):
        notify_router(Hub(), collections=ALL, handshake_timeout=0)
