"""Credentials that expire (issue 11, item 4), against a real uvicorn server (tests/server_app.py)
with raw frames: the close code and its timing, refusals, and where a token may travel."""

from __future__ import annotations

import base64
import json
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from sqla_notify.fastapi import Credentials, bearer_token

from . import rawws
from .support.servers import Server

EXPIRED = 4401
TTL = 1.0  # seconds: short, so that tests wait little; the connection is up well before


def _protocols(token: str) -> str:
    """What the browser client offers in ``Sec-WebSocket-Protocol`` for ``token``."""
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return f"sqla-notify, sqla-notify.bearer.{encoded}"


def _issue(http: httpx.Client, name: str, ttl: float) -> tuple[str, float, float]:
    """A token for ``name``, and the wall-clock bounds of its expiry."""
    before = time.time()
    token: str = http.post("/tokens", params={"name": name, "ttl": ttl}).json()["token"]
    return token, before + ttl, time.time() + ttl


def _frames_until_close(sock: socket.socket) -> tuple[list[dict[str, Any]], int | None, float]:
    """Messages until the close frame, its code, and when it arrived (socket timeout: 10 s)."""
    messages, code = rawws.messages_until_close(sock)
    return messages, code, time.time()


def _sse(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes, socket.socket]:
    sock = rawws.open_socket(port)
    lines = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"127.0.0.1:{port}", **headers}.items())
    sock.sendall(f"GET {path} HTTP/1.1\r\n{lines}Accept: text/event-stream\r\n\r\n".encode())
    status, head = rawws.read_head(sock)
    return status, head, sock


def _read_to_end(sock: socket.socket) -> tuple[bytes, float]:
    data = b""
    while chunk := sock.recv(65536):  # bounded by the socket's timeout
        data += chunk
    return data, time.time()


@pytest.fixture
def server(tmp_path: Path) -> Any:
    s = Server(tmp_path, UVICORN_ARGS="--log-level info")  # the access log is on
    yield s
    s.stop()


@pytest.fixture
def http(server: Server) -> Any:
    with httpx.Client(base_url=server.base, timeout=10) as client:
        yield client


def test_a_websocket_is_closed_with_4401_when_its_credentials_expire(server: Server, http: httpx.Client) -> None:
    token, earliest, latest = _issue(http, "alice", TTL)
    status, head, sock = rawws.handshake_head(server.port, headers={"Sec-WebSocket-Protocol": _protocols(token)})
    try:
        assert status == 101
        assert b"\r\nsec-websocket-protocol: sqla-notify\r\n" in head.lower()  # the protocol, not the token
        http.post("/burst", params={"count": 1, "name": "private-alice"})  # alice's, so she is alice
        messages, code, closed_at = _frames_until_close(sock)
    finally:
        sock.close()
    assert [m.get("type") or m["data"]["name"] for m in messages] == ["welcome", "private-alice"]
    assert code == EXPIRED
    assert earliest - 0.05 <= closed_at <= latest + 1.5, (closed_at - earliest, "seconds after expiry")
    assert http.get("/stats").json()["router_expired"] == 1


def test_an_sse_stream_ends_with_expired_when_its_credentials_expire(server: Server, http: httpx.Client) -> None:
    token, earliest, latest = _issue(http, "alice", TTL)
    status, _, sock = _sse(server.port, "/notify/events", {"Authorization": f"Bearer {token}"})
    try:
        assert status == 200
        body, ended_at = _read_to_end(sock)
    finally:
        sock.close()
    # Chunked: the last chunk of data, then the empty chunk that ends the response.
    assert body.endswith(b'data: {"type":"expired"}\n\n\r\n0\r\n\r\n'), body[-200:]
    assert b'"type":"welcome"' in body
    assert earliest - 0.05 <= ended_at <= latest + 1.5, (ended_at - earliest, "seconds after expiry")
    assert http.get("/stats").json()["router_expired"] == 1


def test_credentials_that_have_expired_are_refused(server: Server, http: httpx.Client) -> None:
    token, _, _ = _issue(http, "alice", -1)
    sock = rawws.connect(server.port, headers={"Sec-WebSocket-Protocol": _protocols(token)})
    try:
        messages, code, _ = _frames_until_close(sock)
    finally:
        sock.close()
    assert (messages, code) == ([], EXPIRED)  # no welcome: not admitted at all
    status, head, sock = _sse(server.port, "/notify/events", {"Authorization": f"Bearer {token}"})
    sock.close()
    assert status == 401 and b'www-authenticate: bearer error="invalid_token"' in head.lower()
    stats = http.get("/stats").json()
    assert stats["router_expired"] == 2 and stats["router_refused_authentication"] == 0


def test_tokens_in_the_handshake_headers_stay_out_of_the_access_log(server: Server, http: httpx.Client) -> None:
    ws_token, _, _ = _issue(http, "alice", 60)
    sse_token, _, _ = _issue(http, "alice", 60)
    query_token, _, _ = _issue(http, "alice", 60)
    status, head, sock = rawws.handshake_head(server.port, headers={"Sec-WebSocket-Protocol": _protocols(ws_token)})
    try:
        # Accepted with the protocol (a browser fails the handshake otherwise), never the token.
        assert status == 101 and b"\r\nsec-websocket-protocol: sqla-notify\r\n" in head.lower(), head
        assert json.loads(rawws.read_frame(sock)[1])["type"] == "welcome"
    finally:
        sock.close()
    status, _, sse = _sse(server.port, "/notify/events", {"Authorization": f"Bearer {sse_token}"})
    sse.close()
    assert status == 200
    # The app opted in to ?token= (bearer_token(conn, query="token")): that one is logged.
    sock = rawws.connect(server.port, f"/notify/ws?token={query_token}")
    sock.close()
    assert http.get("/tokens/seen").json() == [ws_token, sse_token, query_token]  # each authenticated
    server.stop()
    log = server.log.read_text()
    assert '"WebSocket /notify/ws" [accepted]' in log and '"GET /notify/events HTTP/1.1" 200' in log, log
    assert query_token in log  # the log records query strings: the check below would see a token
    assert ws_token not in log and _protocols(ws_token).split(".")[-1] not in log, log
    assert sse_token not in log, log


def test_a_refusal_for_a_limit_still_answers_the_browser_subprotocol(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_MAX_CONNECTIONS="1")
    held = rawws.connect(server.port)
    try:
        # A browser fails a handshake that offered subprotocols and got none back: the
        # client would see 1006 instead of 1013.
        status, head, sock = rawws.handshake_head(server.port, headers={"Sec-WebSocket-Protocol": "sqla-notify"})
        assert status == 101 and b"\r\nsec-websocket-protocol: sqla-notify\r\n" in head.lower()
        assert rawws.messages_until_close(sock)[1] == 1013
        sock.close()
        # A client that does not offer it is accepted without one, as before.
        status, head, sock = rawws.handshake_head(server.port)
        sock.close()
        assert status == 101 and b"sec-websocket-protocol" not in head.lower()
    finally:
        held.close()
        server.stop()


# -- the pieces, in process -------------------------------------------------------------------


def _websocket(query: bytes = b"", headers: dict[str, str] | None = None, subprotocols: list[str] | None = None) -> WebSocket:
    scope = {
        "type": "websocket", "path": "/ws", "query_string": query, "subprotocols": subprotocols or [],
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }

    async def receive() -> Any:
        raise AssertionError("not read")

    async def send(message: Any) -> None:
        raise AssertionError("not sent")

    return WebSocket(scope, receive, send)


def test_bearer_token_reads_the_subprotocol_then_authorization_and_the_query_only_if_asked() -> None:
    offer = [p.strip() for p in _protocols("t/+=é").split(",")]
    assert bearer_token(_websocket(subprotocols=offer, headers={"Authorization": "Bearer other"})) == "t/+=é"
    assert bearer_token(_websocket(headers={"Authorization": "bearer  abc "})) == "abc"
    assert bearer_token(_websocket(headers={"Authorization": "Basic abc"})) is None
    assert bearer_token(_websocket(b"token=abc")) is None  # not in the URL unless the app opts in
    assert bearer_token(_websocket(b"token=abc"), query="token") == "abc"
    assert bearer_token(_websocket(subprotocols=["sqla-notify.bearer.%%%"])) is None
    request = HTTPConnection({"type": "http", "query_string": b"", "headers": [(b"authorization", b"Bearer xyz")]})
    assert bearer_token(request) == "xyz"


def test_credentials_take_epoch_seconds_or_aware_datetimes() -> None:
    moment = datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert Credentials("alice", moment).expires_at == moment.timestamp()
    assert Credentials("alice", 1_900_000_000).expires_at == 1_900_000_000.0
    with pytest.raises(ValueError, match="timezone-aware datetime, got a naive one"):
        Credentials("alice", datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="finite number"):
        Credentials("alice", float("inf"))
    for bad in ("1900000000", True, None):
        with pytest.raises(TypeError, match="expected seconds since the epoch or an aware datetime"):
            Credentials("alice", bad)  # type: ignore[arg-type]
