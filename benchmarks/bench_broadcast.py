"""WebSocket broadcast: sqla_notify's hub against a bare loop and FastAPI's ConnectionManager.

The three contenders run side by side in one uvicorn process (``broadcast_server.py``).

Measured, for each contender, rounds interleaved (the order rotates every round):

* **throughput**: 1,000 (and 100) connected clients, a burst of ``--messages`` notifications
  of about 100 bytes. Deliveries/s = clients × messages / the time from the broadcast request
  until the last client has received its last frame (clock read by the clients; all processes
  share CLOCK_MONOTONIC). The server's own hand-off time (until every frame is in a socket's
  transport) is reported beside it, with the server's and the clients' CPU time over the
  burst, to show who the bottleneck was. Two kinds of burst at 1,000 clients: *back to back*
  (all ``publish`` calls in one go, so the hub's writers send many frames per wake-up) and
  *paced* (``await asyncio.sleep(0)`` after each notification, so they wake once per
  notification, as when commits arrive one at a time).
* **stalled clients**: 990 clients, one burst as above; then 10 more clients that never read
  (``SO_RCVBUF`` shrunk, reading paused) connect, their buffers are filled until sending to
  them blocks (the steady state of a client that stopped reading a while ago), and the same
  burst runs again. Reported: the healthy clients' completion time in both, or, when they
  never complete, "stalled" with the share delivered before ``--stall-timeout``. A fresh
  server per contender and round.
* **memory per idle connection**: the server's RSS before and after opening 1,000 idle
  connections, divided by 1,000. A fresh server per contender and round.

The load generators are separate processes (``--client-procs``) running asyncio protocols
that do the handshake and then only walk frame headers to count frames (and answer pings),
cheap enough that the server stays the bottleneck (its CPU share is in the table). The
ConnectionManager does the same work as the bare loop: its ratio to it is the noise floor.

    python benchmarks/bench_broadcast.py              # about 8 minutes
    python benchmarks/bench_broadcast.py --quick      # about 80 s, noisier
    python benchmarks/bench_broadcast.py --profile /tmp/prof   # cProfile one burst per contender

Writes ``benchmarks/results/broadcast.json`` and ``broadcast.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import pstats
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CONTENDERS = ("bare", "manager", "notify")
MODES = {"burst": "back to back", "paced": "paced"}
LABELS = {
    "bare": "bare `await ws.send_text` loop",
    "manager": "FastAPI docs' ConnectionManager",
    "notify": "sqla_notify Hub + notify_router",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_LOG = Path(f"/tmp/bench_broadcast-{os.getpid()}.log")  # the servers' stderr


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# == the load generator (runs in child processes) ============================================

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


class Client(asyncio.Protocol):
    """A WebSocket client that counts data frames by walking headers, and answers pings.

    Server frames are unmasked, so a frame is 2, 4 or 10 bytes of header then the payload:
    skipping payloads costs a few operations per frame, whatever their content.
    """

    def __init__(self, group: Group, path: bytes, stall: bool, wait_welcome: bool) -> None:
        self.group = group
        self.request = path
        self.stall = stall
        self.wait_welcome = wait_welcome  # the hub's first frame says it has subscribed us
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
        if self.stall:
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
                count += 1
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
            if not self.ready.done():
                self.ready.set_result(None)  # the welcome
        if self.target and self.frames >= self.target and self.skip == 0 and not self.done_at:
            self.done_at = time.perf_counter()
            group = self.group
            group.pending -= 1
            if group.pending == 0 and group.done is not None and not group.done.done():
                group.done.set_result(None)

    def control(self, op: int, payload: bytes) -> None:
        assert self.transport is not None
        if op == 9:  # ping -> pong, masked with a zero key
            self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
        elif op == 8:  # close
            self.transport.close()


class Worker:
    """One load-generating process: obeys the driver's commands on a pipe."""

    def __init__(self, conn: multiprocessing.connection.Connection, port: int) -> None:
        self.conn = conn
        self.port = port
        self.groups: dict[str, Group] = {c: Group() for c in CONTENDERS}
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

    async def _open(self, contender: str, stall: bool) -> Client:
        loop = asyncio.get_running_loop()
        group = self.groups[contender]
        path = f"/{contender}/ws" + ("?role=stall" if stall else "")
        request = HANDSHAKE.format(path=path, port=self.port, extensions=DEFLATE_OFFER if _deflate() else "").encode()
        client = Client(group, request, stall, wait_welcome=contender == "notify")
        if stall:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # the kernel's minimum
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", self.port))
            await loop.create_connection(lambda: client, sock=sock)
        else:
            await loop.create_connection(lambda: client, "127.0.0.1", self.port)
        await asyncio.wait_for(client.ready, 30)
        group.clients.append(client)
        return client

    async def do_connect(self, contender: str, healthy: int, stalled: int) -> dict[str, Any]:
        limit = asyncio.Semaphore(64)

        async def one(stall: bool) -> None:
            async with limit:
                await self._open(contender, stall)

        await asyncio.gather(*(one(False) for _ in range(healthy)), *(one(True) for _ in range(stalled)))
        return {"connected": len(self.groups[contender].clients)}

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


def worker_main(conn: multiprocessing.connection.Connection, port: int) -> None:
    """Entry point of a load-generating process."""
    _raise_nofile()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()  # the cheaper client
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(Worker(conn, port).run())
    finally:
        loop.close()


# == the driver ==============================================================================


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A uvicorn process serving broadcast_server:app on a free loopback port."""

    def __init__(self, queue_size: int) -> None:
        self.port = _free_port()
        env = dict(os.environ, BENCH_QUEUE_SIZE=str(queue_size))
        self.log = SERVER_LOG.open("ab")
        self.log_start = self.log.tell()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "broadcast_server:app", "--app-dir", str(HERE),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--ws-per-message-deflate", "true" if _deflate() else "false", "--log-level", "warning",
            ],
            env=env, start_new_session=True,  # inherits the raised RLIMIT_NOFILE
            stdout=self.log, stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.info = self.get("/info")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.1)
        assert self.info["pid"] == self.proc.pid

    def request(self, method: str, path: str, timeout: float = 30) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: {response.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, timeout: float = 30) -> Any:
        return self.request("POST", path, timeout)

    def cpu(self) -> float:
        """User + system CPU seconds of the server process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> dict[str, int]:
        """Stop the server; count the errors it logged (tracebacks go to SERVER_LOG)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        with SERVER_LOG.open("rb") as f:
            f.seek(self.log_start)
            text = f.read()
        return {
            "asgi_exceptions": text.count(b"Exception in ASGI application"),
            "error_lines": text.count(b"ERROR:"),
            "warning_lines": text.count(b"WARNING:"),
        }


class Clients:
    """The load-generating processes, driven over pipes."""

    def __init__(self, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs = procs
        self.ctx = ctx
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.workers: list[Any] = []
        self.port = 0
        self.pool = concurrent.futures.ThreadPoolExecutor(2)

    def start(self, port: int) -> None:
        """(Re)start the workers for a server on ``port``."""
        self.stop()
        self.port = port
        for _ in range(self.procs):
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(target=worker_main, args=(child, port), daemon=True)
            proc.start()
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

    def connect(self, contender: str, healthy: int, stalled: int = 0) -> None:
        for pipe, h, s in zip(self.pipes, self._split(healthy), self._split(stalled)):
            pipe.send(("connect", contender, h, s))
        for pipe in self.pipes:
            reply = pipe.recv()
            if "error" in reply:
                raise RuntimeError(f"client worker: {reply['error']}")

    def close(self, contender: str) -> None:
        self._all("close", contender)

    def burst(
        self, server: Server, contender: str, count: int, timeout: float, paced: bool = False,
    ) -> dict[str, Any]:
        """One broadcast of ``count`` messages, timed from the request to the last frame."""
        gc0 = server.get("/gc")
        armed = self._all("arm", contender, count, timeout)
        clients = sum(a["armed"] for a in armed)
        cpu0 = server.cpu()
        t0 = time.perf_counter()
        future = self.pool.submit(
            server.post,
            f"/broadcast/{contender}?count={count}&timeout={timeout}&paced={str(paced).lower()}",
            timeout + 5,
        )
        reports = [pipe.recv() for pipe in self.pipes]
        server_cpu = server.cpu() - cpu0
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
            "median_client_s": statistics.median(done) if done else None,
            "server_handoff_s": response.get("seconds") if response.get("ok") else None,
            "server_clients": response.get("clients"),
            "server_response": response if not response.get("ok") else None,
            "deliveries_per_s": clients * count / elapsed if not timed_out else None,
            "server_cpu_s": server_cpu,
            # Garbage collection in the server during the burst (and the HTTP requests around it).
            "server_gc_s": sum(gc1["seconds"]) - sum(gc0["seconds"]),
            "server_gc_count": [b - a for a, b in zip(gc0["count"], gc1["count"])],
            "client_cpu_s": [r["cpu"] for r in reports],
        }
        if not timed_out and response.get("clients") not in (None, clients):
            raise RuntimeError(f"server broadcast to {response.get('clients')} clients, expected {clients}")
        return result


NOTES = """\
*Back to back*: the burst's notifications are published in one go (one `publish` per
notification, no await between them), so the hub's writers find many frames queued and send
them in one pass per client. *Paced*: `await asyncio.sleep(0)` after each notification, as
when commits arrive one at a time: every writer then wakes once per notification. The bare
loop and the manager do the same work either way. *Last frame in*: from the broadcast
request to the last client's last frame, by the clients' clock; deliveries/s is clients ×
messages over it. *Server hand-off*: the server's own time until every frame is in a
socket's transport. *Server GC*: time in the server's garbage collector during the burst
(medians throughout). Server CPU near 100% with the last frame in within a few ms of the
hand-off means the server, not the load generator, is the bottleneck. Stalled clients'
buffers are filled until sending to them blocks before the measured burst. The manager does
the same work as the bare loop: its ratio to it shows how noisy the machine was."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _rotation(r: int) -> list[str]:
    k = r % len(CONTENDERS)
    return list(CONTENDERS[k:] + CONTENDERS[:k])


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


# -- the three measurements -----------------------------------------------------------------


def run_throughput(
    clients: Clients, n: int, messages: int, rounds: int, queue_size: int, paced: bool,
) -> dict[str, Any]:
    """Bursts to ``n`` clients of each contender, all connected at once, rounds interleaved."""
    modes = ["burst", "paced"] if paced else ["burst"]
    _log(f"throughput: {n} clients, bursts of {messages}, {rounds} rounds, {' and '.join(modes)}")
    server = Server(queue_size)
    clients.start(server.port)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {c: [] for c in CONTENDERS} for m in modes}
    try:
        for c in CONTENDERS:
            clients.connect(c, n)
        for c in CONTENDERS:  # warm-up
            clients.burst(server, c, 20, 30)
        for r in range(rounds):
            for mode in modes:
                for c in _rotation(r):
                    time.sleep(0.2)
                    run = clients.burst(server, c, messages, 120, paced=mode == "paced")
                    if run["timed_out"]:
                        raise RuntimeError(f"{c}: burst timed out: {run}")
                    runs[mode][c].append(run)
                _log(
                    f"  throughput, {n} clients, {mode}: round {r + 1}/{rounds}: "
                    + ", ".join(f"{c} {runs[mode][c][-1]['deliveries_per_s'] / 1e3:.0f}k/s" for c in CONTENDERS)
                )
        hub_stats = server.get("/stats")
        for c in CONTENDERS:
            clients.close(c)
    finally:
        clients.stop()
        log = server.stop()
    return {
        "clients": n, "messages": messages, "runs": runs, "hub_stats": hub_stats, "server": server.info,
        "server_log": log,
    }


def run_stalled(
    clients: Clients, n: int, stalled: int, messages: int, rounds: int, timeout: float, queue_size: int,
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    info: dict[str, Any] = {}
    for r in range(rounds):
        for c in _rotation(r):
            server = Server(queue_size)
            info = server.info
            clients.start(server.port)
            try:
                clients.connect(c, n - stalled)
                clients.burst(server, c, 20, 30)  # warm-up
                time.sleep(0.2)
                before = clients.burst(server, c, messages, 60)
                clients.connect(c, 0, stalled)
                prefill = server.post(f"/prefill/{c}", 60)
                time.sleep(0.2)
                during = clients.burst(server, c, messages, timeout)
                hub_stats = server.get("/stats")
                clients.close(c)
            finally:
                clients.stop()
                log = server.stop()
            runs[c].append({
                "unstalled": before, "stalled": during, "prefill": prefill, "hub_stats": hub_stats,
                "server_log": log,
            })
            state = (
                f"timed out, {during['delivered_share']:.1%} delivered" if during["timed_out"]
                else f"{during['completion_s'] * 1e3:.0f} ms"
            )
            _log(
                f"  stalled clients: round {r + 1}/{rounds}: {c}: unstalled "
                f"{before['completion_s'] * 1e3:.0f} ms, with {stalled} stalled: {state} "
                f"(prefill: {prefill['blocked']}/{prefill['stalled']} blocked)"
            )
    return {"clients": n, "stalled": stalled, "messages": messages, "timeout_s": timeout, "runs": runs, "server": info}


def run_memory(clients: Clients, n: int, rounds: int, queue_size: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    for r in range(rounds):
        for c in _rotation(r):
            server = Server(queue_size)
            clients.start(server.port)
            try:
                clients.connect(c, 20)  # first-connection allocations are not per-connection cost
                clients.close(c)
                time.sleep(0.5)
                before = server.get("/rss")
                clients.connect(c, n)
                time.sleep(1.0)
                after = server.get("/rss")
                if after[c] != n or before[c] != 0:
                    raise RuntimeError(f"{c}: expected 0 then {n} connections, got {before[c]}, {after[c]}")
                clients.close(c)
            finally:
                clients.stop()
                server.stop()
            per = (after["rss"] - before["rss"]) / n
            runs[c].append({"rss_before": before["rss"], "rss_after": after["rss"], "per_connection": per})
            _log(f"  memory: round {r + 1}/{rounds}: {c}: {per / 1024:.1f} KiB per connection")
    return {"connections": n, "runs": runs}


def run_profile(clients: Clients, n: int, messages: int, out: Path, queue_size: int) -> None:
    """cProfile of the server's loop thread during one burst per contender and mode (to stderr)."""
    out.mkdir(parents=True, exist_ok=True)
    server = Server(queue_size)
    clients.start(server.port)
    try:
        for c in CONTENDERS:
            clients.connect(c, n)
            clients.burst(server, c, 20, 30)
        for mode, label in MODES.items():
            for c in CONTENDERS:
                path = out / f"broadcast-{c}-{mode}.prof"
                server.post("/profile/start")
                run = clients.burst(server, c, messages, 120, paced=mode == "paced")
                server.post(f"/profile/stop?path={path}")
                _log(f"\n== {c}, {label}: {run['completion_s'] * 1e3:.0f} ms under cProfile; {path}")
                stats = pstats.Stats(str(path), stream=sys.stderr)
                stats.strip_dirs().sort_stats("tottime").print_stats(25)
        for c in CONTENDERS:
            clients.close(c)
    finally:
        clients.stop()
        server.stop()


# -- report ---------------------------------------------------------------------------------


def _ms(s: float) -> str:
    return f"{s * 1e3:.0f}"


def _throughput_rows(block: dict[str, Any], mode: str, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for c in CONTENDERS:
        rate = [r["deliveries_per_s"] for r in runs[c]]
        # Paired: the same round, a few seconds apart.
        ratio = [h["deliveries_per_s"] / b["deliveries_per_s"] for h, b in zip(runs[c], runs["bare"])]
        handoff = [r["server_handoff_s"] for r in runs[c] if r["server_handoff_s"] is not None]
        rows.append({
            "clients": block["clients"], "messages": block["messages"], "mode": mode, "contender": c,
            "deliveries_per_s": _spread(rate), "ratio_to_bare": _spread(ratio),
            "completion_s": _spread([r["completion_s"] for r in runs[c]]),
            "server_handoff_s": statistics.median(handoff) if handoff else None,
            "server_cpu_share": statistics.median(r["server_cpu_s"] / r["completion_s"] for r in runs[c]),
            "server_gc_s": statistics.median(r["server_gc_s"] for r in runs[c]),
            "busiest_client_cpu_share": statistics.median(
                max(r["client_cpu_s"]) / r["completion_s"] for r in runs[c]
            ),
        })
    return rows


def summarize(throughput: list[dict[str, Any]], stalled: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"throughput": [], "stalled": [], "memory": []}
    for block in throughput:
        for mode, runs in block["runs"].items():
            summary["throughput"] += _throughput_rows(block, mode, runs)
    for c in CONTENDERS:
        runs = stalled["runs"][c]
        before = [r["unstalled"]["completion_s"] for r in runs]
        timed_out = [r["stalled"]["timed_out"] for r in runs]
        during = [r["stalled"]["completion_s"] for r in runs if not r["stalled"]["timed_out"]]
        ratios = [
            r["stalled"]["completion_s"] / r["unstalled"]["completion_s"]
            for r in runs if not r["stalled"]["timed_out"]
        ]
        summary["stalled"].append({
            "contender": c,
            "unstalled_s": _spread(before),
            "stalled_s": _spread(during) if during else None,
            "ratio": _spread(ratios) if ratios else None,
            "timed_out_rounds": sum(timed_out),
            "rounds": len(runs),
            "delivered_share_when_timed_out": [
                r["stalled"]["delivered_share"] for r in runs if r["stalled"]["timed_out"]
            ],
            "prefill": [r["prefill"] for r in runs],
            "server_asgi_exceptions": sum(r["server_log"]["asgi_exceptions"] for r in runs),
        })
    for c in CONTENDERS:
        per = [r["per_connection"] for r in memory["runs"][c]]
        ratio = [m["per_connection"] / b["per_connection"] for m, b in zip(memory["runs"][c], memory["runs"]["bare"])]
        summary["memory"].append({"contender": c, "per_connection": _spread(per), "ratio_to_bare": _spread(ratio)})
    return summary


def render(summary: dict[str, Any], stalled: dict[str, Any], memory: dict[str, Any]) -> str:
    lines = [
        (
            "| clients | burst | contender | deliveries/s (median, min–max) | **vs bare** (median, min–max) "
            "| last frame in (ms) | server hand-off (ms) | server GC (ms) | server CPU | busiest client CPU |"
        ),
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in summary["throughput"]:
        med, lo, hi = t["deliveries_per_s"]
        rm, rl, rh = t["ratio_to_bare"]
        handoff = "–" if t["server_handoff_s"] is None else _ms(t["server_handoff_s"])
        lines.append(
            f"| {t['clients']:,} | {MODES[t['mode']]} | {LABELS[t['contender']]} | {med / 1e3:.0f}k ({lo / 1e3:.0f}k–{hi / 1e3:.0f}k) "
            f"| **{rm:.2f}** ({rl:.2f}–{rh:.2f}) | {_ms(t['completion_s'][0])} | {handoff} "
            f"| {_ms(t['server_gc_s'])} "
            f"| {t['server_cpu_share']:.0%} | {t['busiest_client_cpu_share']:.0%} |"
        )
    lines += [
        "",
        (
            f"| {stalled['stalled']} of {stalled['clients']:,} clients stalled | healthy clients, unstalled (ms) "
            "| healthy clients, with stalled (ms) | **ratio** (median, min–max) |"
        ),
        "|---|---:|---:|---:|",
    ]
    for s in summary["stalled"]:
        before = f"{_ms(s['unstalled_s'][0])} ({_ms(s['unstalled_s'][1])}–{_ms(s['unstalled_s'][2])})"
        if s["timed_out_rounds"]:
            shares = s["delivered_share_when_timed_out"]
            during = (
                f"stalled in {s['timed_out_rounds']}/{s['rounds']} rounds (timed out after "
                f"{stalled['timeout_s']:.0f} s, {max(shares):.1%} delivered)"
            )
        else:
            during = ""
        if s["stalled_s"] is not None:
            med, lo, hi = s["stalled_s"]
            during = (during + "; " if during else "") + f"{_ms(med)} ({_ms(lo)}–{_ms(hi)})"
        ratio = "–" if s["ratio"] is None else f"**{s['ratio'][0]:.2f}** ({s['ratio'][1]:.2f}–{s['ratio'][2]:.2f})"
        lines.append(f"| {LABELS[s['contender']]} | {before} | {during} | {ratio} |")
    logged = [s for s in summary["stalled"] if s["server_asgi_exceptions"]]
    if logged:
        lines += ["", "Server log during the stalled runs (tracebacks in the server log): " + "; ".join(
            f"{LABELS[s['contender']]}: {s['server_asgi_exceptions']} × \"Exception in ASGI application\""
            for s in logged
        ) + "."]
    lines += [
        "",
        (
            f"| idle connections ({memory['connections']:,}) | RSS per connection (KiB, median, min–max) "
            "| **vs bare** (median, min–max) |"
        ),
        "|---|---:|---:|",
    ]
    for m in summary["memory"]:
        med, lo, hi = m["per_connection"]
        rm, rl, rh = m["ratio_to_bare"]
        lines.append(
            f"| {LABELS[m['contender']]} | {med / 1024:.1f} ({lo / 1024:.1f}–{hi / 1024:.1f}) "
            f"| **{rm:.2f}** ({rl:.2f}–{rh:.2f}) |"
        )
    # Against the project's targets.
    hub_1000 = next(
        (t for t in summary["throughput"] if t["contender"] == "notify" and t["clients"] == 1000
         and t["mode"] == "burst"),
        None,
    )
    paced_1000 = next(
        (t for t in summary["throughput"] if t["contender"] == "notify" and t["clients"] == 1000
         and t["mode"] == "paced"),
        None,
    )
    hub_stall = next(s for s in summary["stalled"] if s["contender"] == "notify")
    hub_mem = next(m for m in summary["memory"] if m["contender"] == "notify")
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    if hub_1000 is not None:
        r = hub_1000["ratio_to_bare"][0]
        lines.append(
            f"| hub ≥ 80% of the bare loop's deliveries/s at 1,000 clients | {r:.0%} "
            f"(per-round {hub_1000['ratio_to_bare'][1]:.0%}–{hub_1000['ratio_to_bare'][2]:.0%}) "
            f"| {'met' if r >= 0.8 else 'missed'} |"
        )
    if paced_1000 is not None:
        r = paced_1000["ratio_to_bare"][0]
        lines.append(
            f"| the same, paced (one notification per loop iteration) | {r:.0%} "
            f"(per-round {paced_1000['ratio_to_bare'][1]:.0%}–{paced_1000['ratio_to_bare'][2]:.0%}) "
            f"| {'met' if r >= 0.8 else 'missed'} |"
        )
    if hub_stall["ratio"] is not None and not hub_stall["timed_out_rounds"]:
        r = hub_stall["ratio"][0]
        lines.append(
            f"| {stalled['stalled']} stalled clients: healthy completion within 10% of unstalled | {r - 1:+.0%} "
            f"(per-round {hub_stall['ratio'][1] - 1:+.0%} to {hub_stall['ratio'][2] - 1:+.0%}) "
            f"| {'met' if r <= 1.1 else 'missed'} |"
        )
    else:
        lines.append(f"| {stalled['stalled']} stalled clients: within 10% | hub timed out | missed |")
    r = hub_mem["ratio_to_bare"][0]
    lines.append(
        f"| memory per idle connection ≤ bare + 10% | {r - 1:+.0%} "
        f"({hub_mem['per_connection'][0] / 1024:.1f} KiB vs "
        f"{summary['memory'][0]['per_connection'][0] / 1024:.1f} KiB) | {'met' if r <= 1.1 else 'missed'} |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter bursts and stall timeout (~80 s)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="throughput rounds at --clients[0] (default 7, quick 1); 3× that for the others")
    parser.add_argument("--stall-rounds", type=int, default=None, help="default 3, quick 1")
    parser.add_argument("--memory-rounds", type=int, default=None, help="default 3, quick 1")
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--messages", type=int, default=None, help="notifications per burst (default 200, quick 100)")
    parser.add_argument("--stalled", type=int, default=10, help="stalled clients (of the first --clients)")
    parser.add_argument("--stall-timeout", type=float, default=None, help="seconds (default 15, quick 5)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections for the memory measure")
    parser.add_argument("--client-procs", type=int, default=1, help="load-generating processes")
    parser.add_argument("--no-paced", action="store_true",
                        help="skip the paced bursts (one notification per event-loop iteration)")
    parser.add_argument("--queue-size", type=int, default=1000, help="the hub's queue_size")
    parser.add_argument("--deflate", action="store_true",
                        help="per-message compression on (clients offer it, as browsers do); writes broadcast-deflate.*")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="only profile one burst per contender, writing .prof files to DIR")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 7)
    args.messages = args.messages or (100 if args.quick else 200)
    stall_rounds = args.stall_rounds or (1 if args.quick else 3)
    memory_rounds = args.memory_rounds or (1 if args.quick else 3)
    stall_timeout = args.stall_timeout or (5.0 if args.quick else 15.0)
    _raise_nofile()
    if args.deflate:
        os.environ["BENCH_DEFLATE"] = "1"  # before the client processes start
    name = "broadcast-deflate" if args.deflate else "broadcast"
    deflate = "on" if args.deflate else "off"
    clients = Clients(args.client_procs)
    if args.profile is not None:
        run_profile(clients, args.clients[0], args.messages, args.profile, args.queue_size)
        return

    started = time.monotonic()
    throughput = []
    for i, n in enumerate(args.clients):
        paced = i == 0 and not args.no_paced  # the first (largest) client count only
        # Smaller client counts make short, noisy bursts: more rounds (they are cheap).
        block_rounds = rounds if i == 0 else 3 * rounds
        throughput.append(run_throughput(clients, n, args.messages, block_rounds, args.queue_size, paced))
    _log(f"stalled clients: {args.stalled} of {args.clients[0]}, {stall_rounds} rounds")
    stalled = run_stalled(
        clients, args.clients[0], args.stalled, args.messages, stall_rounds, stall_timeout, args.queue_size
    )
    _log(f"memory: {args.idle} idle connections, {memory_rounds} rounds")
    memory = run_memory(clients, args.idle, memory_rounds, args.queue_size)

    summary = summarize(throughput, stalled, memory)
    table = render(summary, stalled, memory)
    print(table)

    RESULTS.mkdir(exist_ok=True)
    server = throughput[0]["server"]
    meta = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **{k: server[k] for k in ("fastapi", "starlette", "uvicorn", "websockets", "msgspec", "sqla_notify")},
        "server_loop": server["loop"],
        "uvicorn_settings": f"--ws-per-message-deflate {str(args.deflate).lower()} --log-level warning (ws: auto = websockets-sansio)",
        "client_procs": args.client_procs,
        "messages": args.messages,
        "clients": args.clients,
        "rounds": rounds,
        "stall_rounds": stall_rounds,
        "memory_rounds": memory_rounds,
        "stalled": args.stalled,
        "stall_timeout_s": stall_timeout,
        "idle_connections": args.idle,
        "queue_size": args.queue_size,
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "throughput": throughput, "stalled": stalled, "memory": memory},
        indent=2,
    ) + "\n")
    (RESULTS / f"{name}.md").write_text(
        f"# bench_broadcast ({meta['when']})\n\n"
        f"Python {meta['python']}, FastAPI {meta['fastapi']}, uvicorn {meta['uvicorn']} "
        f"(websockets {meta['websockets']}, loop {meta['server_loop']}, per-message deflate {deflate}), "
        f"{meta['cpus']} CPUs, {args.client_procs} client process(es); bursts of {args.messages} "
        f"notifications of about 100 bytes; throughput: median of {rounds} interleaved rounds, "
        f"stalled: {stall_rounds} rounds, memory: {memory_rounds} rounds; spread = min–max. "
        f"Server/client CPU = CPU seconds over the burst's duration.\n\n{NOTES}\n\n{table}\n"
    )
    _log(f"\nwrote {RESULTS / name}.json and {name}.md ({meta['duration_s']} s)")


if __name__ == "__main__":
    main()
