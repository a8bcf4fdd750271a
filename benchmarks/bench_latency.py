"""Commit → client latency through the hub: 100 WebSocket clients, a steady commit rate.

A uvicorn process serves benchmarks/latency_server.py; this process holds the clients
(the ``websockets`` library, parsing every message as a browser would) and issues the
commits over HTTP at a fixed rate, alternately through a sync ``def`` endpoint and an
``async def`` one. Latency is measured from the moment the server calls ``commit()`` to the
moment each client has decoded the notification, on one machine, so on one clock.

    python benchmarks/bench_latency.py                  # 100 clients, 50 commits/s, 10 s per mode
    python benchmarks/bench_latency.py --clients 10 --seconds 3

Writes ``benchmarks/results/latency.json`` and ``latency.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
import websockets

import sqla_notify

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(port: int, db: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.latency_server:app", "--port", str(port),
         "--ws-per-message-deflate", "false", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "BENCH_DB": str(db)},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the latency server did not start")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(port: int, clients: int, rate: float, seconds: float) -> dict[str, list[float]]:
    received: dict[int, list[float]] = {}  # row id -> arrival times at each client

    async def listen(ws: Any) -> None:
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            if message.get("collection") == "items":
                received.setdefault(message["data"]["id"], []).append(now)

    sockets = [await websockets.connect(f"ws://127.0.0.1:{port}/notify/ws?collections=items") for _ in range(clients)]
    listeners = [asyncio.ensure_future(listen(ws)) for ws in sockets]
    sent: dict[str, list[tuple[int, float]]] = {"sync": [], "async": []}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for mode in ("sync", "async"):
                interval = 1 / rate
                next_at = time.monotonic()
                end = next_at + seconds
                pending = []
                while next_at < end:  # a steady rate, not as fast as possible
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    pending.append(asyncio.ensure_future(http.post(f"/{mode}")))
                    next_at += interval
                for response in await asyncio.gather(*pending):
                    body = response.json()
                    sent[mode].append((body["id"], body["t"]))
                print(f"  {mode}: {len(sent[mode])} commits", file=sys.stderr)
        deadline = time.monotonic() + 10  # let the last notifications arrive, bounded
        expected = clients * sum(len(v) for v in sent.values())
        while sum(len(v) for v in received.values()) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    out: dict[str, list[float]] = {}
    for mode, rows in sent.items():
        out[mode] = [(t - started) * 1e3 for row_id, started in rows for t in received.get(row_id, [])]
        missing = clients * len(rows) - len(out[mode])
        if missing:
            print(f"  {mode}: {missing} deliveries missing", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="commits per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per mode")
    args = parser.parse_args()

    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = _start_server(port, Path(tmp) / "latency.db")
        try:
            samples = asyncio.run(_run(port, args.clients, args.rate, args.seconds))
        finally:
            server.terminate()
            server.wait(10)

    rows = []
    for mode, values in samples.items():
        rows.append({
            "session": {"sync": "sync Session (def endpoint, worker thread)", "async": "AsyncSession (async def endpoint)"}[mode],
            "deliveries": len(values),
            "p50_ms": statistics.median(values),
            "p90_ms": _percentile(values, 0.90),
            "p99_ms": _percentile(values, 0.99),
            "max_ms": max(values),
        })
    lines = [
        f"{args.clients} clients, {args.rate:g} commits/s, {args.seconds:g} s per session kind; "
        "latency from `commit()` called to each client's decoded message.",
        "",
        "| session | deliveries | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['session']} | {r['deliveries']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
            f"| **{r['p99_ms']:.2f}** | {r['max_ms']:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
        "sqlalchemy": sqlalchemy.__version__, "sqla_notify": sqla_notify.__version__,
        "websockets": websockets.__version__, "clients": args.clients, "rate": args.rate,
        "seconds": args.seconds, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (RESULTS / "latency.json").write_text(json.dumps({"meta": meta, "latency": rows}, indent=2) + "\n")
    (RESULTS / "latency.md").write_text(f"# bench_latency ({meta['when']})\n\n{table}\n")


if __name__ == "__main__":
    main()
