"""The load generator of ``bench_broadcast.py``: processes of asyncio WebSocket clients that
count frames by walking their headers, driven over pipes.

Each worker process (:func:`worker_main`) holds a :class:`Group` of clients per contender and
obeys the driver's commands: ``connect`` (healthy and stalled clients), ``arm`` (expect N more
frames on every healthy client, report when they are in) and ``close``. The clients do the
handshake and then only walk frame headers to count frames (and answer pings), cheap enough
that the server stays the bottleneck. Socket.IO clients speak Engine.IO v4 (join the
namespace with ``40``, answer pings with ``3``) and count only event frames (``42[...]``).
A stalled client shrinks ``SO_RCVBUF`` and stops reading once connected.

Scale (10,000 clients and more): each process raises its file-descriptor limit, and process
``i`` connects from its own loopback address, ``127.0.0.<i + 1>``, with the port picked at
``connect()`` (``IP_BIND_ADDRESS_NO_PORT``): each process then has the whole ephemeral port
range to itself, so a server port never runs out of them. :class:`Clients` can spread its
processes over several servers (``--workers``), evenly.

``bench_brokers.py``'s clients are here too (:class:`RecordingClient`): in its own process,
they keep the row id and arrival time of the notifications they are asked to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import statistics
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, cast

import msgspec

from contenders import FILTERED, ORDER
from harness import Server, new_loop, pin, raise_nofile, split_name

# Linux's value; the socket module names it from Python 3.12 (or 3.11 on some builds) only.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
HUBS = ("notify", "redis")  # their first frame (the welcome) says the client is subscribed
PATHS = {c: f"/{c}/ws" for c in ORDER} | {"socketio": "/socket.io/?EIO=4&transport=websocket",
                                          "whole": "/whole/ws?collections=posts"}


def _forum_path(forum: int) -> str:
    """A ``filtered`` client's path: subscribed to the posts of one forum."""
    entries = msgspec.json.encode([{"collection": "posts", "where": {"forum_id": forum}}]).decode()
    return "/filtered/ws?collections=" + urllib.parse.quote(entries)


def _split_path(forum: int) -> str:
    """A ``split`` client's path: subscribed whole to the collection of its own forum."""
    return "/split/ws?collections=" + split_name(forum)


HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n{extensions}\r\n"
)
# --deflate: the clients offer per-message compression as browsers do, and the server accepts
# it. The clients count frames by their headers, so they need not inflate anything.
DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def _deflate() -> bool:
    return os.environ.get("BENCH_DEFLATE") == "1"




class Group:
    """The clients of one contender in one worker process."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.pending = 0
        self.done: asyncio.Future[None] | None = None


# Socket.IO over Engine.IO v4, the packets a client sees: "0{...}" open (answer "40" to join
# the default namespace), "40{"sid":...}" joined, "2" ping (answer "3"), "42[...]" an event.
SIO_JOIN = b"\x81\x82\0\0\0\x0040"  # masked text frames, zero mask key
SIO_PONG = b"\x81\x81\0\0\0\x003"


class Client(asyncio.Protocol):
    """A WebSocket client that counts data frames by walking headers, and answers pings.

    Server frames are unmasked, so a frame is 2, 4 or 10 bytes of header then the payload:
    skipping payloads costs a few operations per frame, whatever their content. A Socket.IO
    client (``sio``) also reads the first two bytes of each text frame: it counts only events
    (``42``), answers Engine.IO pings and joins the namespace when the server opens.
    """

    def __init__(self, group: Group, path: bytes, stall: bool, wait_welcome: bool, sio: bool = False) -> None:
        self.group = group
        self.request = path
        self.stall = stall
        self.sio = sio  # ready once joined ("40{...}"); a stalled one stops reading then
        self.wait_welcome = wait_welcome or sio  # the hub's first frame says it has subscribed us
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.is_open = False
        self.buffer = b""  # the handshake response, then a partial frame header
        self.skip = 0  # payload bytes of the current frame still to come
        self.frames = 0  # data frames received
        self.base = 0  # frames when armed
        self.target = 0  # 0: not armed
        self.done_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost during handshake: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.is_open:
            self.feed(data)
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self.buffer[:end], self.buffer[end + 4:]
        self.buffer = b""
        if not head.startswith(b"HTTP/1.1 101"):
            self.ready.set_exception(ConnectionError(head.decode(errors="replace")))
            return
        self.is_open = True
        assert self.transport is not None
        if self.stall and not self.sio:
            self.transport.pause_reading()  # and never read again
            self.ready.set_result(None)
            return
        if not self.wait_welcome:
            self.ready.set_result(None)
        if rest:
            self.feed(rest)

    def feed(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        n = len(data)
        i = self.skip
        if i >= n:
            self.skip = i - n
            return
        count = 0
        sio = self.sio
        while True:
            if i + 2 > n:
                self.buffer = data[i:]
                self.skip = 0
                break
            op = data[i] & 0x0F
            length = data[i + 1]
            if length < 126:
                start = i + 2
            elif length == 126:
                if i + 4 > n:
                    self.buffer = data[i:]
                    self.skip = 0
                    break
                length = (data[i + 2] << 8) | data[i + 3]
                start = i + 4
            else:
                if i + 10 > n:
                    self.buffer = data[i:]
                    self.skip = 0
                    break
                length = int.from_bytes(data[i + 2:i + 10], "big")
                start = i + 10
            end = start + length
            if op == 1 or op == 2:
                if not sio:
                    count += 1
                else:  # Socket.IO: look at the packet type
                    if start + min(length, 2) > n:
                        self.buffer = data[i:]
                        self.skip = 0
                        break
                    kind = data[start:start + min(length, 2)]
                    if kind == b"42":
                        count += 1
                    else:
                        self.engineio(kind)
            elif op >= 8:  # control frame (at most 125 bytes): wait for all of it
                if end > n:
                    self.buffer = data[i:]
                    self.skip = 0
                    break
                self.control(op, data[start:end])
            if end >= n:
                self.skip = end - n
                break
            i = end
        if count:
            self.frames += count
            if not self.ready.done() and not sio:
                self.ready.set_result(None)  # the welcome
        if self.target and self.frames >= self.target and self.skip == 0 and not self.done_at:
            self.done_at = time.perf_counter()
            group = self.group
            group.pending -= 1
            if group.pending == 0 and group.done is not None and not group.done.done():
                group.done.set_result(None)

    def engineio(self, kind: bytes) -> None:
        """A Socket.IO client's non-event packet (by its first two bytes)."""
        assert self.transport is not None
        if kind == b"2":  # ping
            self.transport.write(SIO_PONG)
        elif kind == b"0{":  # open: join the default namespace
            self.transport.write(SIO_JOIN)
        elif kind == b"40" and not self.ready.done():  # joined: from now on in every emit
            self.ready.set_result(None)
            if self.stall:
                self.transport.pause_reading()  # and never read again

    def control(self, op: int, payload: bytes) -> None:
        assert self.transport is not None
        if op == 9:  # ping -> pong, masked with a zero key
            self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
        elif op == 8:  # close
            self.transport.close()


class Worker:
    """One load-generating process: obeys the driver's commands on a pipe."""

    def __init__(self, conn: multiprocessing.connection.Connection, port: int, source: str = "127.0.0.1") -> None:
        self.conn = conn
        self.port = port
        self.source = source
        self.groups: dict[str, Group] = {c: Group() for c in (*ORDER, *FILTERED)}
        self.commands: asyncio.Queue[Any] = asyncio.Queue()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), lambda: self.commands.put_nowait(self.conn.recv()))
        while True:
            cmd, *args = await self.commands.get()
            if cmd == "quit":
                return
            try:
                reply = await getattr(self, "do_" + cmd)(*args)
            except Exception as exc:  # noqa: BLE001 - reported to the driver, which stops
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self.conn.send(reply)

    async def _open(self, contender: str, stall: bool, forum: int = 0) -> Client:
        loop = asyncio.get_running_loop()
        group = self.groups[contender]
        base = (_forum_path(forum) if contender == "filtered" else _split_path(forum) if contender == "split"
                else PATHS[contender])
        path = base + (("&" if "?" in base else "?") + "role=stall" if stall else "")
        request = HANDSHAKE.format(path=path, port=self.port, extensions=DEFLATE_OFFER if _deflate() else "").encode()
        client = Client(group, request, stall, wait_welcome=contender in HUBS or contender in FILTERED,
                        sio=contender == "socketio")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if stall:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # the kernel's minimum
            # The port is chosen at connect(), unique per (source, server) pair only: a bind()
            # alone would reserve it for any destination, and TIME_WAITs would use the range up.
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source, 0))
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as create_connection does
            await loop.sock_connect(sock, ("127.0.0.1", self.port))
        except BaseException:
            sock.close()
            raise
        await loop.create_connection(lambda: client, sock=sock)
        await asyncio.wait_for(client.ready, 30)
        group.clients.append(client)
        return client

    async def do_connect(self, contender: str, healthy: int, stalled: int, first_forum: int = 0) -> dict[str, Any]:
        """Open ``healthy`` and ``stalled`` clients; ``filtered`` and ``split`` ones watch forums
        from ``first_forum`` on, one each."""
        limit = asyncio.Semaphore(64)

        async def one(stall: bool, forum: int = 0) -> None:
            async with limit:
                await self._open(contender, stall, forum)

        await asyncio.gather(*(one(False, first_forum + i) for i in range(healthy)), *(one(True) for _ in range(stalled)))
        return {"connected": len(self.groups[contender].clients),
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "source": self.source}

    async def do_arm(self, contender: str, count: int, timeout: float) -> dict[str, Any]:
        """Expect ``count`` more frames on every healthy client; reply, then report when done."""
        group = self.groups[contender]
        healthy = [c for c in group.clients if not c.stall]
        group.pending = len(healthy)
        group.done = asyncio.get_running_loop().create_future()
        for c in healthy:
            c.base = c.frames
            c.target = c.frames + count
            c.done_at = 0.0
        if not healthy:
            group.done.set_result(None)
        cpu0 = time.process_time()
        self.conn.send({"armed": len(healthy)})
        try:
            await asyncio.wait_for(asyncio.shield(group.done), timeout)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        cpu = time.process_time() - cpu0
        for c in healthy:
            c.target = 0
        return {
            "clients": len(healthy),
            "timed_out": timed_out,
            "done_at": [c.done_at for c in healthy if c.done_at],
            "frames": sum(min(c.frames - c.base, count) for c in healthy),
            "extra": sum(max(0, c.frames - c.base - count) for c in healthy),
            "cpu": cpu,
        }

    async def do_close(self, contender: str) -> dict[str, Any]:
        group = self.groups[contender]
        for c in group.clients:
            if c.transport is not None:
                c.transport.close()
        if group.clients:
            await asyncio.wait([c.lost for c in group.clients], timeout=10)
        closed = len(group.clients)
        group.clients.clear()
        return {"closed": closed}


def worker_main(conn: multiprocessing.connection.Connection, port: int, source: str = "127.0.0.1") -> None:
    """Entry point of a load-generating process: its clients connect from ``source`` to ``port``."""
    raise_nofile()  # up to the hard limit, which the driver raised before starting us
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(Worker(conn, port, source).run())
    finally:
        loop.close()


class Clients:
    """The load-generating processes, driven over pipes. ``redis_cpu``: Redis's CPU seconds
    so far, read around the ``redis`` contender's bursts."""

    def __init__(self, procs: int, redis_cpu: Callable[[], float | None] | None = None) -> None:
        self.redis_cpu = redis_cpu
        ctx = multiprocessing.get_context("spawn")
        self.procs = procs
        self.ctx = ctx
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.workers: list[Any] = []
        self.ports: list[int] = []  # each worker's server port
        self.port = 0
        self.forums = 0  # forums given to filtered and split clients so far: each client watches its own
        self.pool = concurrent.futures.ThreadPoolExecutor(2)

    def start(self, port: int | Sequence[int]) -> None:
        """(Re)start the workers for a server on ``port``; several ports: the workers take
        them in turn (as many workers each, so clients split evenly if ``procs`` is a multiple)."""
        self.stop()
        ports = [port] if isinstance(port, int) else list(port)
        self.port = ports[0]
        self.forums = 0
        for i in range(self.procs):
            parent, child = self.ctx.Pipe()
            # Its own loopback source address each: a port range each (module docstring).
            proc = self.ctx.Process(target=worker_main, args=(child, ports[i % len(ports)], f"127.0.0.{i + 1}"),
                                    daemon=True)
            proc.start()
            pin(proc.pid, "clients")
            self.ports.append(ports[i % len(ports)])
            self.pipes.append(parent)
            self.workers.append(proc)

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("quit",))
            except OSError:
                pass
        for proc in self.workers:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        self.pipes.clear()
        self.workers.clear()
        self.ports.clear()

    def _all(self, *cmd: Any) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(cmd)
        replies = [pipe.recv() for pipe in self.pipes]
        for r in replies:
            if "error" in r:
                raise RuntimeError(f"client worker: {r['error']}")
        return replies

    def _split(self, n: int) -> list[int]:
        return [n // self.procs + (1 if i < n % self.procs else 0) for i in range(self.procs)]

    def connect(self, contender: str, healthy: int, stalled: int = 0) -> list[dict[str, Any]]:
        """Open ``healthy`` and ``stalled`` clients of ``contender``, split over the workers;
        each worker's reply (its clients, file-descriptor limit and source address)."""
        for pipe, h, s in zip(self.pipes, self._split(healthy), self._split(stalled)):
            pipe.send(("connect", contender, h, s, self.forums))
            self.forums += h
        replies = [pipe.recv() for pipe in self.pipes]
        ours = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        for reply in replies:
            if "error" in reply:
                raise RuntimeError(f"client worker: {reply['error']}")
            if reply["nofile"] < ours:  # it could not raise its limit to the driver's
                raise RuntimeError(f"client worker: file-descriptor limit {reply['nofile']}, expected {ours}")
        return replies

    def close(self, contender: str) -> None:
        self._all("close", contender)

    def burst(
        self, server: Server, contender: str, count: int, timeout: float, paced: bool = False,
        others: Sequence[Server] = (),
    ) -> dict[str, Any]:
        """One broadcast of ``count`` messages, timed from the request to the last frame.

        ``others``: servers whose clients get the burst through the Redis broker (``--workers``):
        their CPU counts with ``server``'s, which then has only its share of the clients.
        """
        gc0 = server.get("/gc")
        armed = self._all("arm", contender, count, timeout)
        clients = sum(a["armed"] for a in armed)
        redis_cpu0 = self.redis_cpu() if contender == "redis" and self.redis_cpu is not None else None
        servers = [server, *others]
        cpu0 = sum(s.cpu() for s in servers)
        t0 = time.perf_counter()
        future = self.pool.submit(
            server.post,
            f"/broadcast/{contender}?count={count}&timeout={timeout}&paced={str(paced).lower()}",
            timeout + 5,
        )
        reports = [pipe.recv() for pipe in self.pipes]
        server_cpu = sum(s.cpu() for s in servers) - cpu0
        redis_cpu1 = self.redis_cpu() if self.redis_cpu is not None and redis_cpu0 is not None else None
        redis_cpu = redis_cpu1 - redis_cpu0 if redis_cpu0 is not None and redis_cpu1 is not None else None
        for r in reports:
            if "error" in r:
                raise RuntimeError(f"client worker: {r['error']}")
        done = [t - t0 for r in reports for t in r["done_at"]]
        timed_out = any(r["timed_out"] for r in reports)
        try:
            response = future.result(timeout=2 if timed_out else timeout + 5)
        except (concurrent.futures.TimeoutError, OSError, RuntimeError) as exc:  # stuck behind a stalled client
            response = {"error": repr(exc)}
        elapsed = max(done) if done and not timed_out else time.perf_counter() - t0
        started_at = response.get("started_at")
        # From the server starting to publish to the last client's last frame (one clock).
        publish_to_last = (
            max(t for r in reports for t in r["done_at"]) - started_at
            if done and not timed_out and started_at is not None else None
        )
        gc1 = server.get("/gc") if not timed_out else gc0
        frames = sum(r["frames"] for r in reports)
        result = {
            "contender": contender,
            "paced": paced,
            "clients": clients,
            "messages": count,
            "timed_out": timed_out,
            "delivered_share": frames / (clients * count) if clients else 0.0,
            "extra_frames": sum(r["extra"] for r in reports),
            "completion_s": elapsed,
            "publish_to_last_s": publish_to_last,
            "median_client_s": statistics.median(done) if done else None,
            "server_handoff_s": response.get("seconds") if response.get("ok") else None,
            "server_clients": response.get("clients"),
            "server_response": response if not response.get("ok") else None,
            "deliveries_per_s": clients * count / elapsed if not timed_out else None,
            "server_cpu_s": server_cpu,
            "redis_cpu_s": redis_cpu,  # Redis's own CPU over the burst (Redis contender only)
            # Garbage collection in the server during the burst (and the HTTP requests around it).
            "server_gc_s": sum(gc1["seconds"]) - sum(gc0["seconds"]),
            "server_gc_count": [b - a for a, b in zip(gc0["count"], gc1["count"])],
            "server_gc_cpu_s": sum(gc1.get("cpu_seconds", ())) - sum(gc0.get("cpu_seconds", ())),
            "client_cpu_s": [r["cpu"] for r in reports],
        }
        share = sum(a["armed"] for a, p in zip(armed, self.ports) if p == server.port)  # its own clients
        if not timed_out and response.get("clients") not in (None, share):
            raise RuntimeError(f"server broadcast to {response.get('clients')} clients, expected {share}")
        return result


# == bench_brokers.py's clients: in its own process, keeping arrival times ===================

_decode = msgspec.json.Decoder().decode


class RecordingClient(asyncio.Protocol):
    """A WebSocket client in ``bench_brokers.py``'s own process: does the handshake, walks frame
    headers, answers pings and decodes only the JSON it needs.

    ``record_all``: decode every notification and keep ``(row id, arrival)``; otherwise
    count them and keep that pair for the last notification of each read.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.open = False
        self.closed = False
        self.record_all = False
        self.count = 0
        self.target = 0
        self.done_at = 0.0
        self.samples: list[tuple[int, float]] = []
        self.controls: list[str] = []  # control messages after the welcome (resync...)

    @classmethod
    async def open(cls, port: int, path: str, n: int) -> list[RecordingClient]:
        """``n`` clients of ``ws://127.0.0.1:<port><path>``, once each has had the hub's welcome."""
        request = HANDSHAKE.format(path=path, port=port, extensions="").encode()
        loop = asyncio.get_running_loop()
        clients = [(await loop.create_connection(lambda: cls(request), "127.0.0.1", port))[1] for _ in range(n)]
        await asyncio.wait_for(asyncio.gather(*(c.welcomed for c in clients)), 30)
        return clients

    def reset(self, target: int, record_all: bool) -> None:
        """Expect ``target`` notifications from now; ``record_all``: keep every arrival."""
        self.count, self.target, self.done_at = 0, target, 0.0
        self.samples, self.controls, self.record_all = [], [], record_all

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"lost before the welcome: {exc}"))

    def data_received(self, data: bytes) -> None:
        if not self.open:
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.welcomed.set_exception(ConnectionError(data[:end].decode(errors="replace")))
                return
            self.open, self.buf, data = True, b"", data[end + 4:]
        self.feed(data)

    def feed(self, data: bytes) -> None:
        now = time.monotonic()
        if self.buf:
            data = self.buf + data
        n, i, count, last, last_end = len(data), 0, 0, -1, 0
        while i + 2 <= n:
            op, length, start = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
            if length == 126:
                if i + 4 > n:
                    break
                length, start = int.from_bytes(data[i + 2:i + 4], "big"), i + 4
            elif length == 127:
                if i + 10 > n:
                    break
                length, start = int.from_bytes(data[i + 2:i + 10], "big"), i + 10
            end = start + length
            if end > n:
                break
            if op == 1:
                if data[start + 2] == 105:  # b'{"id":...': a notification
                    count += 1
                    if self.record_all:
                        self.samples.append((_decode(data[start:end])["data"]["id"], now))
                    else:
                        last = start
                        last_end = end
                else:
                    self.control(_decode(data[start:end])["type"])
            elif op == 9:  # ping: pong, masked with a zero key as a client must
                assert self.transport is not None
                self.transport.write(bytes((0x8A, 0x80 | length, 0, 0, 0, 0)) + data[start:end])
            elif op == 8:
                self.closed = True
            i = end
        self.buf = data[i:]
        if count:
            self.count += count
            if last >= 0:
                self.samples.append((_decode(data[last:last_end])["data"]["id"], now))
            if self.target and not self.done_at and self.count >= self.target:
                self.done_at = now

    def control(self, kind: str) -> None:
        if kind == "welcome" and not self.welcomed.done():
            self.welcomed.set_result(None)
        else:
            self.controls.append(kind)
