"""A WebSocket client on a bare socket, for tests that must control exactly when the client
reads (a client that stalls, then resumes) and see every frame the server sends, close
frames included. Client-to-server frames are masked, as RFC 6455 requires."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

TEXT, CLOSE = 0x1, 0x8


def connect(
    port: int, path: str = "/notify/ws", *, rcvbuf: int | None = None, headers: dict[str, str] | None = None,
    source: str | None = None,
) -> socket.socket:
    """Open ``path`` on 127.0.0.1:``port`` and complete the handshake. ``rcvbuf``: a small
    receive buffer, so that a client that does not read fills up quickly."""
    status, sock = handshake(port, path, rcvbuf=rcvbuf, headers=headers, source=source)
    assert status == 101, status
    return sock


def open_socket(port: int, *, rcvbuf: int | None = None, source: str | None = None) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port``, from the address ``source`` (any of 127/8)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_head(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the head of an HTTP response, read byte by byte: nothing after it is consumed."""
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        assert byte, f"the server closed during the response head: {head!r}"
        head += byte
    return int(head.split(b" ", 2)[1]), head


def handshake(
    port: int, path: str = "/notify/ws", *, rcvbuf: int | None = None, headers: dict[str, str] | None = None,
    source: str | None = None,
) -> tuple[int, socket.socket]:
    """Send a WebSocket handshake with ``headers`` (``Host`` defaults to 127.0.0.1:``port``);
    return the server's HTTP status (101: accepted) and the socket."""
    status, _, sock = handshake_head(port, path, rcvbuf=rcvbuf, headers=headers, source=source)
    return status, sock


def handshake_head(
    port: int, path: str = "/notify/ws", *, rcvbuf: int | None = None, headers: dict[str, str] | None = None,
    source: str | None = None,
) -> tuple[int, bytes, socket.socket]:
    """:func:`handshake`, also returning the head of the server's response."""
    sock = open_socket(port, rcvbuf=rcvbuf, source=source)
    key = base64.b64encode(os.urandom(16)).decode()
    fields = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    sock.sendall(
        f"GET {path} HTTP/1.1\r\n{lines}Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    status, head = read_head(sock)
    return status, head, sock


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection ended after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The next frame from the server: (opcode, payload). Raises EOFError at the end."""
    first, second = _exactly(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", _exactly(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", _exactly(sock, 8))[0]
    return first & 0x0F, _exactly(sock, length)


def messages_until_close(sock: socket.socket) -> tuple[list[dict[str, Any]], int | None]:
    """Read text messages until the server's close frame; answer it, as a client must.

    Returns the messages and the close code, or ``None`` if the connection ended without a
    close frame (what a browser reports as 1006).
    """
    out, code, _ = until_close(sock)
    return out, code


def until_close(sock: socket.socket) -> tuple[list[dict[str, Any]], int | None, str]:
    """:func:`messages_until_close`, and the close frame's reason."""
    out: list[dict[str, Any]] = []
    while True:
        try:
            opcode, payload = read_frame(sock)
        except (EOFError, ConnectionResetError):
            return out, None, ""
        if opcode == TEXT:
            out.append(json.loads(payload))
        elif opcode == CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            send_close(sock, code)
            return out, code, payload[2:].decode()


def frame(payload: str | bytes, opcode: int = TEXT) -> bytes:
    """One masked client frame holding ``payload`` (a str goes as UTF-8)."""
    data = payload.encode() if isinstance(payload, str) else payload
    n = len(data)
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + masked


def send_text(sock: socket.socket, *messages: str) -> None:
    """Send ``messages``, one text frame each, in one write."""
    sock.sendall(b"".join(frame(m) for m in messages))


def send_close(sock: socket.socket, code: int = 1000) -> None:
    """Send a masked close frame."""
    mask = os.urandom(4)
    body = struct.pack("!H", code)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
    try:
        sock.sendall(bytes([0x80 | CLOSE, 0x80 | len(body)]) + mask + masked)
    except OSError:
        pass  # it may have gone already


def read_message(sock: socket.socket) -> dict[str, Any]:
    """The next text message from the server, decoded (other frames are an error)."""
    opcode, payload = read_frame(sock)
    assert opcode == TEXT, f"expected a text frame, got opcode {opcode}: {payload[:100]!r}"
    return dict(json.loads(payload))
