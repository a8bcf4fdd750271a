"""Hypothesis fuzz of what a client controls: its WebSocket messages (any text, JSON of any
shape, wrong types, huge and unicode names, binary frames) and the query parameters
``collections`` and ``last_id``. Whatever it sends, the connection stays usable: every
message gets an ``error`` or a reply, never a close or a traceback, and a valid subscribe
that follows still works. Bounded and derandomized, so CI runs the same examples each time."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqla_notify import Hub
from sqla_notify._hub.protocol import MAX_ERROR_LENGTH
from sqla_notify.fastapi import notify_router

from . import rawws
from .support.apps import make_app
from .support.servers import Server

FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SENTINEL = "sentinel"
KNOWN = {"forums", "users", SENTINEL}
# A name too long to be valid: its error quotes the start of it, which marks the end of the replies.
MARKER = "zz-end-of-replies-" + "m" * 190
MARKER_QUOTE = "got ['zz-end-of-replies-mmmmm"

names = st.one_of(
    st.sampled_from(["forums", "users", "", " ", "a,b", "\x00", "\u00e9" * 201, "\U0001f600" * 50]),
    st.text(max_size=12),
    st.text(min_size=190, max_size=230),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
messages = st.one_of(
    st.builds(  # the right shape, wrong contents
        lambda kind, collections: json.dumps({"type": kind, "collections": collections}),
        st.sampled_from(["subscribe", "unsubscribe"]) | st.text(max_size=12),
        st.lists(names, max_size=20) | json_values,
    ),
    st.builds(  # extra or missing fields
        lambda fields: json.dumps(fields),
        st.dictionaries(st.sampled_from(["type", "collections", "x", "id"]), json_values, max_size=4),
    ),
    json_values.map(json.dumps),
    st.text(max_size=300),
    st.text(min_size=4097, max_size=4300),  # over max_message_size
    st.binary(max_size=40),
)
query = st.fixed_dictionaries({}, optional={
    "collections": st.lists(names, max_size=20).map(",".join) | st.text(max_size=200),
    "last_id": st.text(max_size=120) | st.from_regex(r"[0-9a-f]{1,12}-[0-9]{1,8}", fullmatch=True),
})


def _fits_a_request_line(params: dict[str, str]) -> bool:
    """Whether a browser could send it: servers cap the request line (nginx at 8 KiB; under
    uvicorn, a handshake whose request line was tens of KiB long got no answer within 10 s
    here, and uvicorn logged a traceback for it at shutdown: a server matter, which happens
    before the router sees the request)."""
    return len(urlencode(params)) < 6000


def _path(base: str, params: dict[str, str]) -> str:
    return f"{base}?{urlencode(params)}" if params else base


def _exchange(send: Callable[[str | bytes], None], receive: Callable[[], dict[str, Any]], sent: list[str | bytes]) -> None:
    """Send ``sent``, then a valid subscribe and the marker; check every reply until the
    marker's error, and that the subscribe took effect."""
    for message in sent:
        send(message)
    send(json.dumps({"type": "subscribe", "collections": [SENTINEL]}))
    send(json.dumps({"type": "subscribe", "collections": [MARKER]}))
    latest: Any = "none"
    while True:
        reply = receive()
        kind = reply.get("type")
        assert kind in {"welcome", "resync", "subscribed", "error"}, reply
        if kind == "error":
            assert len(reply["message"]) <= MAX_ERROR_LENGTH, reply
            if MARKER_QUOTE in reply["message"]:
                break
        elif kind == "subscribed":
            latest = reply["collections"]
    assert latest is None or SENTINEL in latest, latest  # the subscribe after the fuzz worked


def test_fuzzed_messages_and_query_in_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub()
    app = make_app(hub)
    app.include_router(notify_router(hub, collections=KNOWN), prefix="/known/notify")  # unknown names too

    def receive_from(ws: Any) -> Callable[[], dict[str, Any]]:
        def receive() -> dict[str, Any]:
            message = ws.receive()
            assert message["type"] == "websocket.send", message  # a close (1011 or any) fails
            return json.loads(message["text"])  # type: ignore[no-any-return]

        return receive

    with caplog.at_level(logging.WARNING), TestClient(app) as client:

        @FUZZ
        @given(st.sampled_from(["/notify/ws", "/known/notify/ws"]), query, st.lists(messages, max_size=5))
        def check(base: str, params: dict[str, str], sent: list[str | bytes]) -> None:
            with client.websocket_connect(_path(base, params)) as ws:

                def send(message: str | bytes) -> None:
                    if isinstance(message, bytes):
                        ws.send_bytes(message)
                    else:
                        ws.send_text(message)

                _exchange(send, receive_from(ws), sent)

        check()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text


def test_fuzzed_messages_and_query_against_uvicorn(tmp_path: Path) -> None:
    # Its log is checked for tracebacks when it stops; the sentinel is one of its public collections.
    server = Server(tmp_path, APP_COLLECTIONS=f"forums,containers,{SENTINEL}")

    @settings(FUZZ, max_examples=40)
    @given(query.filter(_fits_a_request_line), st.lists(messages, max_size=5))
    def check(params: dict[str, str], sent: list[str | bytes]) -> None:
        sock = rawws.connect(server.port, _path("/notify/ws", params))

        def send(message: str | bytes) -> None:
            if isinstance(message, bytes):
                sock.sendall(rawws.frame(message, 0x2))
            else:
                rawws.send_text(sock, message)

        def receive() -> dict[str, Any]:
            opcode, payload = rawws.read_frame(sock)
            assert opcode == rawws.TEXT, (opcode, payload)  # a close frame fails
            return json.loads(payload)  # type: ignore[no-any-return]

        try:
            _exchange(send, receive, sent)
        finally:
            sock.close()

    try:
        check()
    finally:
        server.stop()
