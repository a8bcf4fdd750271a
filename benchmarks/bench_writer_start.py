"""How the hub starts its clients' writers: 32 per event-loop step, against all in one step.

The hub starts a writer task for each client that has something to send. Started all in
one event-loop step, a notification to 1,000 clients leaves 1,000 pending tasks and their
coroutines alive at once: they outlive the collector's young generation, pile up in the old
ones and set off full collections, each as long as the heap is large. The hub therefore
starts them ``_START_CHUNK`` (32) at a time. This script measures that choice against the
one it replaced, side by side in one run.

Each round starts ``broadcast_server.py`` (``harness.Server``: uvicorn, per-message deflate off) twice, once
per setting (``BENCH_START_CHUNK``; "all in one step" is a chunk larger than the client
count), the order alternating by round. ``--clients`` clients (the ``websockets`` library,
in this process, reading everything) connect to the hub; then, per server:

* a *paced burst*: ``--messages`` notifications, one per event-loop turn (as commits arriving
  one at a time), timed by the server until every frame is in a socket's transport;
* *one notification* at a time, ``--singles`` of them 50 ms apart, each timed the same way;
* the server's time in the garbage collector over each part (``GET /gc``).

    python benchmarks/bench_writer_start.py              # 3 rounds, about 2 minutes
    python benchmarks/bench_writer_start.py --rounds 1   # about 40 s

Writes ``benchmarks/results/writer-start.json`` and ``writer-start.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

import sqla_notify
from harness import RESULTS, Server, base_meta, git_state, log as _log, percentile, write
from sqla_notify._hub.hub import _START_CHUNK

SERVER_LOG = Path(f"/tmp/bench_writer_start-{os.getpid()}.log")  # the servers' stderr
ALL_AT_ONCE = 1_000_000  # a chunk larger than any client count: the behaviour before chunking
SETTINGS = {"chunked": _START_CHUNK, "all at once": ALL_AT_ONCE}


async def _measure(chunk: int, args: argparse.Namespace) -> dict[str, Any]:
    """One server with the hub starting ``chunk`` writers per step: a paced burst, then singles."""
    server = Server("broadcast_server:app", SERVER_LOG, env={"BENCH_START_CHUNK": str(chunk)})
    port = server.port
    sockets: list[Any] = []
    readers: list[asyncio.Task[None]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            async def read(ws: Any) -> None:
                async for _ in ws:
                    pass

            sockets = [await websockets.connect(f"ws://127.0.0.1:{port}/notify/ws") for _ in range(args.clients)]
            readers = [asyncio.create_task(read(ws)) for ws in sockets]

            async def gc_seconds() -> float:
                return float(sum((await http.get("/gc")).json()["seconds"]))

            async def broadcast(count: int, paced: bool) -> float:
                r = (await http.post("/broadcast/notify", params={"count": count, "paced": paced})).json()
                if not r["ok"] or r["clients"] != args.clients:
                    raise SystemExit(f"the broadcast did not reach every client: {r}")
                return float(r["seconds"])

            await broadcast(args.messages, paced=False)  # warm-up, not recorded
            gc0 = await gc_seconds()
            burst = await broadcast(args.messages, paced=True)
            gc1 = await gc_seconds()
            singles = []
            for _ in range(args.singles):
                singles.append(await broadcast(1, paced=False))
                await asyncio.sleep(0.05)
            gc2 = await gc_seconds()
    finally:
        for task in readers:
            task.cancel()
        for ws in sockets:
            ws.transport.abort()
        server.stop()
    return {
        "chunk": chunk, "paced_burst_s": burst, "paced_burst_gc_s": gc1 - gc0,
        "singles_s": singles, "singles_gc_s": gc2 - gc1,
    }


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def report(meta: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        f"Python {meta['python']}, {meta['cpus']} CPUs, {meta['clients']:,} clients, {meta['rounds']} rounds; "
        f"a paced burst of {meta['messages']} notifications and {meta['singles']} single notifications per server; "
        "times are the server's, until every frame is in a socket's transport; median (min–max) over rounds, "
        "single notifications pooled.",
        "",
        "| writers started | paced burst (ms) | GC during it (ms) | one notification p50 | p99 | max (ms) | GC during the singles (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in runs.items():
        singles = [s * 1e3 for r in rs for s in r["singles_s"]]
        label = f"{SETTINGS[name]} per loop step (now)" if name == "chunked" else "all in one loop step (before)"
        lines.append(
            f"| {label} | {_spread([r['paced_burst_s'] * 1e3 for r in rs])} "
            f"| {_spread([r['paced_burst_gc_s'] * 1e3 for r in rs])} "
            f"| {statistics.median(singles):.1f} | {percentile(singles, 0.99):.1f} | {max(singles):.1f} "
            f"| {_spread([r['singles_gc_s'] * 1e3 for r in rs])} |"
        )
    paired = [a["paced_burst_s"] / b["paced_burst_s"] for a, b in zip(runs["chunked"], runs["all at once"])]
    lines += ["", f"Paced burst, chunked / all at once, paired by round: **{statistics.median(paired):.2f}** "
                  f"({min(paired):.2f}–{max(paired):.2f})"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200, help="notifications in the paced burst")
    parser.add_argument("--singles", type=int, default=100, help="single notifications per server")
    args = parser.parse_args()
    code = git_state()
    started = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            result = asyncio.run(_measure(SETTINGS[name], args))
            runs[name].append(result)
            singles = sorted(result["singles_s"])
            _log(
                f"  round {r + 1}/{args.rounds} {name}: paced burst {result['paced_burst_s'] * 1e3:.0f} ms "
                f"(GC {result['paced_burst_gc_s'] * 1e3:.0f} ms), one notification max {singles[-1] * 1e3:.1f} ms"
            )
    meta = {
        **base_meta(code),
        "sqla_notify": sqla_notify.__version__, "websockets": websockets.__version__,
        "clients": args.clients, "rounds": args.rounds, "messages": args.messages, "singles": args.singles,
        "settings": SETTINGS, "duration_s": round(time.monotonic() - started, 1),
    }
    table = report(meta, runs)
    print(table)
    write("writer-start", {"meta": meta, "runs": runs}, f"# bench_writer_start ({meta['when']})\n\n{table}\n")
    _log(f"wrote writer-start.json and writer-start.md in {RESULTS} ({meta['duration_s']:.0f} s)")


if __name__ == "__main__":
    main()
