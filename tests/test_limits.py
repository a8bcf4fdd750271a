"""Memory per client bounded in bytes (issue 11, item 5): replies to a client's own messages,
what errors quote, and the rate of its messages. Probed against a real uvicorn server with
raw frames (a client that never reads is only possible there), and in-process."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sqla_notify import Hub
from sqla_notify._hub.protocol import MAX_ERROR_LENGTH
from sqla_notify.fastapi import notify_router

from . import rawws
from .support.apps import make_app
from .support.servers import Server

# The longest names, as many as one client may hold: each ``subscribed`` lists them all (~52 KB).
NAMES = [f"{i:03d}" + "n" * 197 for i in range(256)]
NO_LIMIT = {"APP_MESSAGE_RATE": "1000000", "APP_MESSAGE_BURST": "1000000"}
MB = 1024 * 1024
linux = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")


def _peak_rss(server: Server) -> int:
    """The uvicorn process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _settled(server: Server) -> dict[str, Any]:
    """The stats once the server has stopped queueing and dropping frames (it has read
    everything the client sent)."""
    last, same, deadline = None, 0, time.monotonic() + 30
    while same < 5:
        assert time.monotonic() < deadline, "the server kept working"
        stats: dict[str, Any] = httpx.get(f"{server.base}/stats", timeout=10).json()
        key = (stats["frames_sent"], stats["frames_dropped"], stats["router_connections"])
        same = same + 1 if key == last else 0
        last = key
        time.sleep(0.1)
    return stats


def _warm(server: Server) -> None:
    sock = rawws.connect(server.port)
    rawws.read_frame(sock)
    sock.close()


def _send(sock: Any, messages: list[str]) -> None:
    """Send, until the server stops reading (it closed the connection)."""
    try:
        for i in range(0, len(messages), 50):
            rawws.send_text(sock, *messages[i : i + 50])
    except OSError:
        pass


def _resubscribes(count: int) -> list[str]:
    """Subscribe to every name of ``NAMES``, then toggle one, ``count`` times: a full
    ``subscribed`` list in reply to each."""
    messages = [json.dumps({"type": "subscribe", "collections": NAMES[i : i + 16]}) for i in range(0, 256, 16)]
    messages += [
        json.dumps({"type": "unsubscribe" if i % 2 else "subscribe", "collections": NAMES[:1]}) for i in range(count)
    ]
    return messages


# -- against a real server --------------------------------------------------------------------


@linux
@pytest.mark.parametrize("limits", [{}, NO_LIMIT], ids=["defaults", "without-rate-limit"])
def test_a_client_that_never_reads_and_resubscribes_stays_within_a_few_mb(
    tmp_path: Path, limits: dict[str, str]
) -> None:
    # At be6071f one such connection grew the server by about 60 MB: a queue of 1,000 frames
    # of ~52 KB each. Now a newer ``subscribed`` replaces the one waiting (without the rate
    # limit), or the client is closed after its burst (with it).
    server = Server(tmp_path, APP_CLOSE_GRACE="60", APP_COLLECTIONS="*", **limits)  # any name
    try:
        _warm(server)
        before = _peak_rss(server)
        sock = rawws.connect(server.port, "/notify/ws?collections=", rcvbuf=4096)
        _send(sock, _resubscribes(2000))
        stats = _settled(server)
        growth = _peak_rss(server) - before
        sock.close()
        assert growth < 8 * MB, f"the server grew by {growth / MB:.1f} MB: {stats}"
        if limits:  # it was served all along: the replies were coalesced, not refused
            assert stats["router_connections"] == 1 and stats["slow_disconnects"] == 0
    finally:
        server.stop()


@linux
def test_unread_replies_close_with_1008_and_errors_quote_little(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_CLOSE_GRACE="60", **NO_LIMIT)
    try:
        sock = rawws.connect(server.port, "/notify/ws?collections=forums", rcvbuf=4096)
        # 10 MB of notifications, more than the socket holds: the server's writer waits.
        httpx.post(f"{server.base}/burst", params={"count": 500, "size": 20_000}, timeout=10).raise_for_status()
        _settled(server)
        before = _peak_rss(server)  # the replay window holds those 10 MB from now on
        # Each of these used to be echoed whole (~4 KB); at 1,000 queued frames, 4 MB.
        long_names = json.dumps({"type": "subscribe", "collections": ["x" * 201] * 19})
        long_tag = json.dumps({"type": "y" * 4000, "collections": []})
        _send(sock, [long_names, long_tag] * 2000)
        _settled(server)
        growth = _peak_rss(server) - before
        messages, code, reason = rawws.until_close(sock)  # it reads at last
        sock.close()
        assert (code, reason) == (1008, "too many replies waiting: read them")
        # What it had been sent, then the close: the replies that waited were dropped.
        assert {m.get("collection", m.get("type")) for m in messages} <= {"welcome", "forums", "error"}
        assert growth < 8 * MB, f"the server grew by {growth / MB:.1f} MB"
    finally:
        server.stop()


def test_a_flood_of_messages_is_closed_with_1008(tmp_path: Path) -> None:
    server = Server(tmp_path)  # the defaults: 50 at once, then 10 per second
    try:
        sock = rawws.connect(server.port, "/notify/ws?collections=")
        rawws.send_text(sock, *[json.dumps({"type": "subscribe", "collections": [f"c{i}"]}) for i in range(200)])
        messages, code, reason = rawws.until_close(sock)
        sock.close()
        assert (code, reason) == (1008, "too many messages: over 50 at once or 10 per second")
        replies = [m for m in messages if m["type"] == "subscribed"]
        assert len(replies) <= 55  # at most the burst and what the rate refilled (what waited is dropped)
        sock = rawws.connect(server.port)  # the server itself is fine
        assert json.loads(rawws.read_frame(sock)[1])["type"] == "welcome"
        sock.close()
    finally:
        server.stop()


# -- in-process -------------------------------------------------------------------------------


def _subscribe(name: str) -> str:
    return json.dumps({"type": "subscribe", "collections": [name]})


def test_messages_within_the_rate_are_served(tmp_path: Path) -> None:
    hub = Hub()
    with TestClient(make_app(hub, max_message_burst=5, max_message_rate=50)) as client, \
            client.websocket_connect("/notify/ws?collections=") as ws:
        assert ws.receive_json()["type"] == "welcome"
        for i in range(5):  # the burst
            ws.send_text(_subscribe(f"a{i}"))
        for i in range(10):  # at most 20 per second (a sleep is never shorter): under the rate
            time.sleep(0.05)
            ws.send_text(_subscribe(f"b{i}"))
        replies = [ws.receive_json() for _ in range(15)]
        assert {m["type"] for m in replies} == {"subscribed"}
        assert len(replies[-1]["collections"]) == 15
        for i in range(10):
            ws.send_text(_subscribe(f"c{i}"))
        while (message := ws.receive())["type"] == "websocket.send":
            pass
        assert message == {
            "type": "websocket.close", "code": 1008, "reason": "too many messages: over 5 at once or 50 per second"
        }


def test_errors_quote_a_few_names_cut_short(tmp_path: Path) -> None:
    known = {f"collection-{i:04d}" for i in range(1000)}
    with TestClient(make_app(Hub(), collections=known)) as client, \
            client.websocket_connect("/notify/ws?collections=") as ws:
        assert ws.receive_json()["type"] == "welcome"
        ws.send_text(json.dumps({"type": "subscribe", "collections": ["u" * 190 + str(i) for i in range(20)]}))
        message = ws.receive_json()["message"]
        assert len(message) <= MAX_ERROR_LENGTH
        assert message.startswith("unknown collection(s) ['" + "u" * 39 + "\u2026', ")
        assert "and 15 more; expected any of ['collection-0000', " in message and message.endswith("and 995 more")
        ws.send_text(json.dumps({"type": "subscribe", "collections": ["x" * 201] * 19}))
        message = ws.receive_json()["message"]
        assert len(message) <= MAX_ERROR_LENGTH
        assert message.startswith("collection names must be 1 to 200 characters, got ['xxx") and "and 14 more" in message
        ws.send_text(json.dumps({"type": "y" * 4000, "collections": []}))
        message = ws.receive_json()["message"]
        assert message.startswith("invalid message: Invalid value 'yyy") and "expected {" in message
        assert len(message) <= MAX_ERROR_LENGTH


def test_too_many_collections_is_said_without_the_list(tmp_path: Path) -> None:
    names = ",".join(NAMES) + ",one-more"
    with TestClient(make_app(Hub())) as client, client.websocket_connect(f"/notify/ws?collections={names}") as ws:
        assert ws.receive_json()["type"] == "welcome"
        assert ws.receive_json() == {"type": "error", "message": "at most 256 subscriptions per client, got 257"}
        # Refused whole: the client holds nothing, and may subscribe within the limit.
        ws.send_text(_subscribe("and-another"))
        assert ws.receive_json() == {"type": "subscribed", "collections": ["and-another"]}


def test_a_newer_subscribed_replaces_the_one_waiting() -> None:
    hub = Hub()  # not running, no transport: frames wait in the queue
    sub = hub.subscribe(frozenset())
    for i in range(100):
        hub.update(sub, frozenset(NAMES[: i % 7]))
        hub.send_error(sub, f"error {i}")
    queue = [json.loads(f) for f in sub.receive_nowait() if isinstance(f, str)]
    assert queue[0]["type"] == "welcome"
    assert [m["type"] for m in queue[1:]] == ["error"] * 99 + ["subscribed", "error"]
    assert queue[-2]["collections"] == NAMES[: 99 % 7]  # the latest, after what came before it


def test_unread_replies_over_the_budget_close_the_client() -> None:
    hub = Hub()
    sub = hub.subscribe(frozenset())
    sub.reply_budget = 10_000
    hub.update(sub, frozenset(NAMES))  # larger than the budget on its own: one reply always fits
    assert hub.stats().connections == 1
    hub.send_error(sub, "x" * 1000)
    assert (sub.close_code, sub.close_reason) == (1008, "too many replies waiting: read them")
    assert sub.pending == 0 and hub.stats().connections == 0
    hub.send_error(sub, "more")  # nothing is queued for a client being closed
    hub.update(sub, frozenset())
    assert sub.receive_nowait() == [] and sub.collections == frozenset(NAMES)


def test_replies_taken_by_the_writer_no_longer_count() -> None:
    hub = Hub()
    sub = hub.subscribe(frozenset())
    sub.reply_budget = 2_000
    for _ in range(20):
        hub.send_error(sub, "x" * 500)
        sub.receive_nowait()  # sent: the budget is for what waits
    assert sub.close_code is None


def test_limits_must_be_positive() -> None:
    for name, value, expected in [
        ("max_message_rate", 0, "messages per second > 0"), ("max_message_burst", 1.5, "an int >= 1"),
        ("max_reply_bytes", 0, "an int >= 1"), ("max_message_size", -1, "an int >= 1"),
        ("max_collections", 0, "an int >= 1"),
    ]:
        with pytest.raises(ValueError, match=f"notify_router\\({name}=...\\) expected {expected}, got {value}"):
            options: dict[str, Any] = {name: value}
            notify_router(Hub(), **options)

