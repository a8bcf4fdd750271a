"""What a delivered frame costs the server, whole and split against filtered, counted in
instructions and system calls (issue 12's target: filtered ≤ 1.2× unfiltered per delivered
frame).

``bench_broadcast.py --filtered`` measures the server's CPU time, which a busy machine
blurs. This script runs the same scenario and counts instead: a uvicorn server (uvloop,
websockets-sansio, as ``broadcast_server.py``) with three hubs behind ``notify_router(...,
filters={"posts": {"forum_id"}})``, ``--clients`` raw WebSocket clients on each (in this
process, which only reads and counts frames), and four scenarios:

* ``whole``: every client of the first hub subscribed to ``posts``; ``--frames`` posts, each
  to every client;
* ``split``: client k of the third hub subscribed whole to a collection of its own,
  ``p0000``, ``p0001``, ... (named as long as ``posts``, so frames are the same size);
  posts to those collections in the same shuffled order as ``filtered``, each to one
  client, built the same way but without ``filter_after`` (no filter to test): unfiltered
  delivery at one frame per post, what filtering is compared with like for like;
* ``filtered``: client k of the second subscribed to ``{"collection": "posts", "where":
  {"forum_id": k}}``; ``--frames`` × clients posts in a shuffled order, each to one client;
* ``unwatched``: ``--unwatched`` posts on the filtered hub to forums nobody watches.

All three deliver ``--frames`` × clients frames. Posts are built and published inside the
server as ``contenders/hub.py``'s ``Posts.send`` does, *back to back* (no await between
them) or *paced* (``await asyncio.sleep(0)`` after each). A window ends when the clients
have counted every frame (unwatched: when the hub has taken every post).

* ``--tool callgrind`` (default): the server runs under valgrind's callgrind; each window's
  instructions (user space, the server process: building and publishing the posts, the hub,
  starlette, uvicorn, websockets, uvloop, the garbage collector) are dumped apart through
  callgrind's client requests (a small C helper compiled with ``cc``), so the driver's
  own requests and the connections are not counted. Per window: instructions per frame
  (unwatched: per post), filtered / split and filtered / whole, and the
  ``callgrind_annotate`` of the window in ``--keep DIR`` if given.
* ``--tool strace``: the server runs bare and ``strace -c -f`` is attached for each window:
  system calls per frame.

The collector runs as in production. In ``back to back`` the server holds ``--frames`` ×
clients unsent posts at once (``bench_broadcast --filtered``: 200,000, here 10,000 by
default: valgrind is slow), so its collections are fewer than the timed benchmark's.

    python benchmarks/bench_framecost.py                          # ~7 min (valgrind)
    python benchmarks/bench_framecost.py --tool strace
    python benchmarks/bench_framecost.py --keep /tmp/cg --scenarios filtered --modes paced

``PYTHONPATH`` chooses the checkout the server imports. Prints a table; writes nothing else
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from harness import split_name  # this script's folder is on sys.path, in the server too

HERE = Path(__file__).resolve().parent
TITLE = "General discussion"  # as bench_broadcast's posts: about 100 bytes a frame
SCENARIOS = ("whole", "split", "filtered", "unwatched")
HUBS = ("whole", "split", "filtered")  # unwatched publishes on the filtered hub
MODES = ("back to back", "paced")

_HELPER_C = r"""
#include <valgrind/callgrind.h>
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""


# -- the server (a child process, under valgrind or strace) -----------------------------------


def _helper(path: str | None) -> Any:
    """The callgrind client requests (no-ops outside valgrind), or ``None``."""
    if not path:
        return None
    import ctypes

    return ctypes.CDLL(path)


def serve(port: int, clients: int, helper_path: str | None) -> None:
    import uvicorn
    from fastapi import FastAPI

    from sqla_notify import Hub, Notification
    from sqla_notify.fastapi import notify_router

    cg = _helper(helper_path)
    hubs = {name: Hub(queue_size=1_000_000) for name in HUBS}
    names = [split_name(k) for k in range(clients)]
    done = asyncio.Event()

    async def lifespan(app: FastAPI) -> Any:
        async with hubs["whole"], hubs["split"], hubs["filtered"]:
            yield

    app = FastAPI(lifespan=lifespan)
    for name, hub in hubs.items():
        router = (notify_router(hub, collections=names) if name == "split"
                  else notify_router(hub, collections=["posts"], filters={"posts": {"forum_id"}}))
        app.include_router(router, prefix=f"/{name}")

    @app.post("/run")
    async def run(scenario: str, paced: bool, count: int, tag: str) -> dict[str, Any]:
        hub = hubs["filtered" if scenario == "unwatched" else scenario]
        if scenario == "whole":
            forums = [i % clients for i in range(count)]
        elif scenario == "unwatched":
            forums = [-1 - i for i in range(count)]
        else:  # each forum ``count`` times, shuffled; split: the same order
            forums = [k for k in range(clients) for _ in range(count)]
            random.Random(0).shuffle(forums)
        done.clear()
        published = hub.stats().published
        if cg is not None:
            cg.cg_zero()
        if scenario == "split":
            for i, f in enumerate(forums):  # as contenders/hub.py's Posts.send, for split
                hub.publish([Notification(names[f], "insert", {"id": i, "forum_id": f, "title": TITLE})])
                if paced:
                    await asyncio.sleep(0)
        else:
            for i, f in enumerate(forums):  # as contenders/hub.py's Posts.send
                hub.publish([Notification("posts", "insert", {"id": i, "forum_id": f, "title": TITLE},
                                          filter_after={"forum_id": f})])
                if paced:
                    await asyncio.sleep(0)
        if scenario == "unwatched":
            for _ in range(3):
                await asyncio.sleep(0)
        else:
            await done.wait()  # the clients counted every frame
        if cg is not None:
            cg.cg_dump(tag.encode())
        return {"posts": hub.stats().published - published}

    @app.post("/done")
    async def finished() -> None:
        done.set()

    @app.get("/pid")
    async def pid() -> int:
        return os.getpid()

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", ws="websockets-sansio",
                ws_per_message_deflate=False, ws_ping_interval=None, log_level="warning", lifespan="on")


# -- the driver: clients that count frames ------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.frames = 0
        self.target = 0
        self.reached: asyncio.Future[None] | None = None

    def add(self, n: int) -> None:
        self.frames += n
        if self.reached is not None and self.frames >= self.target and not self.reached.done():
            self.reached.set_result(None)

    def expect(self, total: int) -> asyncio.Future[None]:
        """Done once ``total`` frames are counted, if they are not already (the welcomes
        can all arrive while other clients are still connecting)."""
        self.target, self.reached = total, asyncio.get_running_loop().create_future()
        self.add(0)
        return self.reached


class Client(asyncio.Protocol):
    """A WebSocket client that only counts the text frames it receives."""

    def __init__(self, path: str, counter: Counter) -> None:
        self.path = path
        self.counter = counter
        self.buf = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(  # type: ignore[attr-defined]
            (f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"handshake refused: {buf[:200]!r}")
            self.open = True
            buf = buf[end + 4:]
        pos, n, size = 0, 0, len(buf)
        while size - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if size - pos < head + length:
                break
            if buf[pos] & 0x0F == 1:
                n += 1
            pos += head + length
        self.buf = buf[pos:]
        if n:
            self.counter.add(n)


async def _http(port: int, method: str, path: str) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                 .encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{method} {path}: {data[:500]!r}")
    return json.loads(body)


async def _wait_up(port: int, proc: subprocess.Popen[bytes], deadline: float) -> int:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            pid: int = await _http(port, "GET", "/pid")
            return pid
        except OSError:
            await asyncio.sleep(0.5)
    raise RuntimeError("the server did not come up")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def drive(args: argparse.Namespace) -> list[dict[str, Any]]:
    port = _free_port()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    tmp = Path(tempfile.mkdtemp(prefix="framecost-"))
    helper = None
    cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--clients", str(args.clients)]
    if args.tool == "callgrind":
        helper = tmp / "cg.so"
        src = tmp / "cg.c"
        src.write_text(_HELPER_C)
        subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(helper), str(src)], check=True)
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", *cmd, "--helper", str(helper)]
    server = subprocess.Popen(cmd, env=env, stderr=open(tmp / "server.log", "wb"))
    results = []
    try:
        pid = await _wait_up(port, server, time.monotonic() + 300)
        loop = asyncio.get_running_loop()
        counters = {name: Counter() for name in HUBS}
        for k in range(args.clients):
            where = urllib.parse.quote(json.dumps([{"collection": "posts", "where": {"forum_id": k}}]))
            for name, path in (("whole", "/whole/ws?collections=posts"), ("split", f"/split/ws?collections={split_name(k)}"),
                               ("filtered", f"/filtered/ws?collections={where}")):
                await loop.create_connection(lambda path=path, c=counters[name]: Client(path, c), "127.0.0.1", port)
        for c in counters.values():  # every client's welcome
            await asyncio.wait_for(c.expect(args.clients), 600)
        n = 0
        for scenario in args.scenarios:
            for mode in args.modes:
                n += 1
                tag = f"{scenario}-{mode.replace(' ', '')}"
                count = args.unwatched if scenario == "unwatched" else args.frames
                frames = 0 if scenario == "unwatched" else args.frames * args.clients
                query = f"/run?scenario={scenario}&paced={str(mode == 'paced').lower()}&count={count}&tag={tag}"
                tracer = None
                if args.tool == "strace":
                    out = tmp / f"{tag}.strace"
                    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(pid)],
                                              stderr=subprocess.PIPE)
                    await asyncio.sleep(1.0)  # attached
                switches = (_switches(pid), _switches(os.getpid()))
                request = asyncio.ensure_future(_http(port, "POST", query))
                if frames:
                    c = counters[scenario]
                    await asyncio.wait_for(c.expect(c.frames + frames), 3600)
                    await _http(port, "POST", "/done")
                reply = await request
                row: dict[str, Any] = {"scenario": scenario, "mode": mode, "frames": frames, "posts": reply["posts"]}
                if args.tool == "switches":
                    row["switches"] = [_switches(pid)[0] - switches[0][0], _switches(pid)[1] - switches[0][1],
                                       _switches(os.getpid())[0] - switches[1][0]]
                elif tracer is not None:
                    tracer.send_signal(signal.SIGINT)
                    tracer.wait()
                    row["syscalls"] = _strace_counts((tmp / f"{tag}.strace").read_text())
                else:
                    dump = tmp / f"cg.out.{n}"
                    for _ in range(100):
                        if dump.exists() and "totals:" in dump.read_text():
                            break
                        await asyncio.sleep(0.2)
                    row["instructions"] = _total(dump.read_text())
                    if args.keep:
                        args.keep.mkdir(parents=True, exist_ok=True)
                        (args.keep / f"{tag}.callgrind").write_text(dump.read_text())
                results.append(row)
                print(_line(row), file=sys.stderr, flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    return results


def _switches(pid: int) -> tuple[int, int]:
    """A process's context switches so far: voluntary (it waited), involuntary (preempted)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])


def _total(text: str) -> int:
    match = re.search(r"^(?:totals|summary):\s+(\d+)", text, re.M)
    if match is None:
        raise RuntimeError("no totals in callgrind's dump")
    return int(match.group(1))


def _strace_counts(text: str) -> dict[str, int]:
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    counts.pop("total", None)
    return counts


def _per(row: dict[str, Any]) -> tuple[str, int]:
    return ("post", row["posts"]) if row["scenario"] == "unwatched" else ("frame", row["frames"])


def _line(row: dict[str, Any]) -> str:
    unit, n = _per(row)
    if "instructions" in row:
        return f"{row['scenario']}, {row['mode']}: {row['instructions'] / n:,.0f} instructions per {unit}"
    if "switches" in row:
        server_v, server_i, clients_v = (v / n for v in row["switches"])
        return (f"{row['scenario']}, {row['mode']}: context switches per {unit}: server {server_v:.3f} voluntary, "
                f"{server_i:.3f} involuntary; the clients' process {clients_v:.3f} voluntary (woken)")
    calls = ", ".join(f"{k} {v / n:.3f}" for k, v in sorted(row["syscalls"].items(), key=lambda kv: -kv[1]) if v / n >= 0.001)
    return f"{row['scenario']}, {row['mode']}: system calls per {unit}: {sum(row['syscalls'].values()) / n:.3f} ({calls})"


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    _raise_nofile()  # inherited by the server
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tool", choices=("callgrind", "strace", "switches"), default="callgrind")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=10, help="frames per client in whole and filtered")
    parser.add_argument("--unwatched", type=int, default=2000, help="posts in unwatched")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--keep", type=Path, default=None, help="keep each window's callgrind dump here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.clients, args.helper)
        return
    import uvloop

    rows = uvloop.run(drive(args))
    print(f"{args.tool}: {args.clients:,} clients, {args.frames} frames each; unwatched: {args.unwatched:,} posts")
    print()
    for row in rows:
        print(_line(row))
    print()
    for line in ratios(rows):
        print(line)


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Instructions per frame, filtered against split (the like-for-like target) and whole."""
    per = {(r["scenario"], r["mode"]): r["instructions"] / r["frames"] for r in rows
           if "instructions" in r and r["frames"]}
    return [f"filtered / {base}, {mode}: {per['filtered', mode] / per[base, mode]:.2f}"
            for base in ("split", "whole") for mode in MODES if ("filtered", mode) in per and (base, mode) in per]


if __name__ == "__main__":
    main()
