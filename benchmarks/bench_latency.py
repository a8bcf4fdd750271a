"""Commit → client latency through the hub: SQLite and PostgreSQL, sync and async sessions.

**The modes.** One uvicorn process (``commit_server.py``, started by ``harness.Server``:
``--ws-per-message-deflate false``, uvicorn's other settings default: uvloop and httptools
when installed) serves one ``Hub`` and four ways to commit one row:

* SQLite, a sync ``Session`` in a ``def`` endpoint (FastAPI runs it in a worker thread);
* SQLite, an ``AsyncSession`` (aiosqlite) in an ``async def`` endpoint;
* PostgreSQL, a sync ``Session`` (psycopg 3) in a ``def`` endpoint;
* PostgreSQL, an ``AsyncSession`` in an ``async def`` endpoint, through psycopg 3's async mode
  (``postgresql+psycopg://`` with ``create_async_engine``: the ``postgres`` extra's driver, so
  sync and async differ only in the session kind).

One process serves all four, so the modes share the hub, the clients and the CPUs and differ
only in the database and the session kind. SQLite is a file in a temporary directory in WAL
mode, with the default ``synchronous=FULL``: each commit waits for an fsync of the log, as
PostgreSQL's waits for its WAL flush. (With SQLite's default rollback journal, a commit on an
ext4 VM disk waits 1–20 ms, varying from minute to minute, to create, sync and delete its
journal file; that swamps what this benchmark is after.) PostgreSQL's table is
``bench_latency_items_<run id>``, created before the run and dropped after it, so other users
of the database are not disturbed.

**The clock.** This process holds ``--clients`` WebSocket clients (the ``websockets`` library,
decoding every message with ``json.loads`` as a browser would), subscribed to both tables'
collections, and issues the commits as HTTP POSTs at a steady ``--rate`` (not as fast as
possible). Latency runs from the server's ``time.time()`` just before it calls ``commit()`` to
each client's decoded message, for every client and every commit: one machine, one clock.
The clients share the two CPUs with the server, so the figures include their own decoding.

**Rounds.** After an unrecorded warm-up of each mode (connections, statement caches),
``--rounds`` rounds each run every mode for ``--seconds``, the order rotating by one place per
round so that no mode always follows the same one. A mode's deliveries are all in (or 5 s have
passed) before the next mode starts. Reported per mode: p50/p90/p99/max over every round's
deliveries pooled, and the per-round p50 and p99 as a median with the min–max over rounds,
which says how reproducible the figures are; and how long ``commit()`` itself took (the
server's ``time.time()`` after it returns), the database's share of the latency. The CPU used
by the server, by the clients and by everything else (PostgreSQL included) during each round
is recorded too, so a busy machine shows.

PostgreSQL comes from ``SQLA_NOTIFY_PG_URL`` or ``--pg-url`` (default
``postgresql+psycopg://127.0.0.1/test``; another driver in the URL is replaced by psycopg).
If it cannot be reached, its modes are skipped with a message.

    python benchmarks/bench_latency.py            # 5 rounds × 4 modes × 8 s, about 3 min
    python benchmarks/bench_latency.py --quick    # 2 rounds × 4 modes × 3 s, about 30 s
    python benchmarks/bench_latency.py --no-pg --clients 10 --seconds 2 --rounds 1

Writes ``benchmarks/results/latency.json`` (machine, versions, settings, per-round figures)
and ``latency.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
import websockets
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

import sqla_notify
from harness import RESULTS, Server, git_state, machine_cpu, own_cpu, percentile, postgres, presets, process_cpu
from harness import quantiles, rotation, tail
from harness import versions, write

SERVER_LOG = Path(f"/tmp/bench_latency-{os.getpid()}.log")  # the server's stderr
DEFAULT_PG = "postgresql+psycopg://127.0.0.1/test"
SQLITE_TABLE = "bench_latency_items"
DRAIN_TIMEOUT = 5.0  # s: how long a mode's last notifications may take before they count as missing
WARMUP_SECONDS = 0.5
BUSY = 0.5  # "other" CPU above this (half a CPU) in a round: something else was running
QUICK = {"seconds": 3.0, "rounds": 2}
FULL = {"seconds": 8.0, "rounds": 5}
VERSIONS = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "psycopg", "psycopg-binary",
            "aiosqlite", "websockets", "httpx", "msgspec")


@dataclass
class Mode:
    """One way to commit: a database and a session kind, and what was measured for it."""

    db: str  # "sqlite" or "postgres": the server's path
    kind: str  # "sync" or "async"
    label: str
    collection: str  # the table's name, which is the notifications' collection
    rounds: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # ms, every round pooled
    commits: list[float] = field(default_factory=list)  # ms that commit() itself took, pooled

    @property
    def key(self) -> str:
        return f"{self.db}-{self.kind}"


def _modes(pg_table: str | None) -> list[Mode]:
    modes = [
        Mode("sqlite", "sync", "SQLite, sync `Session` (def endpoint, worker thread)", SQLITE_TABLE),
        Mode("sqlite", "async", "SQLite, `AsyncSession` (aiosqlite, async def endpoint)", SQLITE_TABLE),
    ]
    if pg_table is not None:
        modes += [
            Mode("postgres", "sync", "PostgreSQL, sync `Session` (psycopg, def endpoint, worker thread)", pg_table),
            Mode("postgres", "async", "PostgreSQL, `AsyncSession` (psycopg async, async def endpoint)", pg_table),
        ]
    return modes


# == measuring ===============================================================================


# Where the distribution is kept for the plot (results/latency-cdf.png): every percentile,
# then the tail in finer steps, then the maximum.
CDF_POINTS = [i / 100 for i in range(100)] + [0.99 + i / 1000 for i in range(1, 10)] + [0.9995, 0.9999, 1.0]


class CpuClock:
    """CPU time of the machine, the server process and this one (the clients), between reads.

    Shares are of one CPU (100% = one CPU busy all along); *other* is the machine's busy time
    that neither the server nor the clients account for: PostgreSQL, and anything else running.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def read(self) -> tuple[float, ...]:
        busy, _interrupts, stolen, _total = machine_cpu()
        return time.monotonic(), busy, stolen, process_cpu(self.server_pid), own_cpu()

    @staticmethod
    def shares(before: tuple[float, ...], after: tuple[float, ...]) -> dict[str, float]:
        wall, machine, steal, server, clients = (b - a for a, b in zip(before, after))
        return {
            "server": server / wall, "clients": clients / wall,
            "other": max(0.0, machine - server - clients) / wall, "machine": machine / wall,
            "stolen": steal / wall,
        }


async def _commit_at_rate(http: httpx.AsyncClient, mode: Mode, rate: float, seconds: float) -> list[tuple[int, float, float]]:
    """POST one commit every ``1 / rate`` s for ``seconds``; (row id, commit() called, returned) of each."""
    interval = 1 / rate
    next_at = time.monotonic()
    end = next_at + seconds
    pending = []
    while next_at < end:  # a steady rate, not as fast as possible
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        pending.append(asyncio.ensure_future(http.post(f"/{mode.db}/{mode.kind}")))
        next_at += interval
    sent = []
    for response in await asyncio.gather(*pending):
        response.raise_for_status()
        body = response.json()
        sent.append((int(body["id"]), float(body["t"]), float(body["committed"])))
    return sent


async def _collect(received: dict[tuple[str, int], list[float]], collection: str,
                   sent: list[tuple[int, float, float]], clients: int) -> list[float]:
    """Wait (bounded) for every client's copy of ``sent``; their latencies in ms."""
    expected = clients * len(sent)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        if sum(len(received.get((collection, row_id), ())) for row_id, _, _ in sent) >= expected:
            break
        await asyncio.sleep(0.02)
    return [(t - started) * 1e3 for row_id, started, _ in sent for t in received.pop((collection, row_id), [])]


async def _run(modes: list[Mode], port: int, server_pid: int, args: argparse.Namespace) -> Counter[str]:
    """Measure every mode, round after round; returns the count of unexpected messages by kind."""
    received: dict[tuple[str, int], list[float]] = {}  # (collection, row id) -> arrival at each client
    unexpected: Counter[str] = Counter()  # resync, error, a notification without a row id

    async def listen(ws: Any) -> None:
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            if "collection" in message and "id" in (message.get("data") or {}):
                received.setdefault((message["collection"], message["data"]["id"]), []).append(now)
            elif message.get("type") not in ("welcome", "subscribed"):
                unexpected[message.get("type") or f"{message.get('action')} without a row id"] += 1

    collections = ",".join(sorted({m.collection for m in modes}))
    url = f"ws://127.0.0.1:{port}/notify/ws?collections={collections}"
    sockets = [await websockets.connect(url) for _ in range(args.clients)]
    listeners = [asyncio.ensure_future(listen(ws)) for ws in sockets]
    cpu = CpuClock(server_pid)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for mode in modes:  # warm-up, not recorded
                sent = await _commit_at_rate(http, mode, args.rate, WARMUP_SECONDS)
                await _collect(received, mode.collection, sent, args.clients)
            for r in range(args.rounds):
                order = rotation(r, modes)
                for position, mode in enumerate(order, 1):
                    before = cpu.read()
                    sent = await _commit_at_rate(http, mode, args.rate, args.seconds)
                    latencies = await _collect(received, mode.collection, sent, args.clients)
                    shares = CpuClock.shares(before, cpu.read())
                    commits = [(done - started) * 1e3 for _, started, done in sent]
                    mode.latencies += latencies
                    mode.commits += commits
                    figures = {
                        "round": r + 1, "position": position, "commits": len(sent),
                        "deliveries": len(latencies), "missing": args.clients * len(sent) - len(latencies),
                        **tail(latencies), "commit_p50_ms": statistics.median(commits),
                        "commit_p99_ms": percentile(commits, 0.99), "cpu": shares,
                    }
                    mode.rounds.append(figures)
                    print(
                        f"  round {r + 1}/{args.rounds} {mode.key:<15} {len(sent)} commits, "
                        f"p50 {_ms(figures['p50_ms'])} p99 {_ms(figures['p99_ms'])} max {_ms(figures['max_ms'])} ms"
                        f"{'; ' + str(figures['missing']) + ' missing' if figures['missing'] else ''}; "
                        f"CPU server {shares['server']:.0%}, clients {shares['clients']:.0%}, other {shares['other']:.0%}",
                        file=sys.stderr, flush=True,
                    )
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    if unexpected:
        print(f"  unexpected messages: {dict(unexpected)}", file=sys.stderr)
    return unexpected


# == the server and the databases ============================================================


def _table(metadata: MetaData, name: str) -> Table:
    return Table(name, metadata, Column("id", Integer, primary_key=True), Column("name", String(20)))


def _versions() -> dict[str, str]:
    return {"python": sys.version.split()[0], "sqlalchemy": sqlalchemy.__version__,
            "sqla_notify": sqla_notify.__version__, "sqlite": sqlite3.sqlite_version, **versions(*VERSIONS)}


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# == reporting ===============================================================================


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _spread(values: list[float | None]) -> dict[str, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}


def _spread_text(spread: dict[str, float] | None) -> str:
    if spread is None:
        return "–"
    return f"{spread['median']:.2f} ({spread['min']:.2f}–{spread['max']:.2f})"


def _row(mode: Mode) -> dict[str, Any]:
    return {
        "mode": mode.key, "session": mode.label, "table": mode.collection,
        "commits": sum(r["commits"] for r in mode.rounds),
        "deliveries": len(mode.latencies),
        "missing": sum(r["missing"] for r in mode.rounds),
        **tail(mode.latencies),
        "commit_p50_ms": statistics.median(mode.commits), "commit_p99_ms": percentile(mode.commits, 0.99),
        "p50_per_round_ms": _spread([r["p50_ms"] for r in mode.rounds]),
        "p99_per_round_ms": _spread([r["p99_ms"] for r in mode.rounds]),
        "rounds": mode.rounds,
        "cdf_points": CDF_POINTS, "cdf_ms": quantiles(mode.latencies, CDF_POINTS),
    }


def report(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    v = meta["versions"]
    lines = [
        (f"Python {v['python']}, SQLAlchemy {v['sqlalchemy']}, FastAPI {v.get('fastapi')}, uvicorn {v.get('uvicorn')}, "
         f"psycopg {v.get('psycopg', '–')}, aiosqlite {v.get('aiosqlite', '–')}, "
         f"PostgreSQL {(meta['postgresql_server'] or '–').split()[0]}, {meta['cpus']} CPUs. "
         f"{meta['clients']} clients, {meta['rate']:g} commits/s (one row each), {meta['rounds']} round{'s' if meta['rounds'] > 1 else ''} × "
         f"{meta['seconds']:g} s per mode, modes interleaved; latency from `commit()` called to each "
         "client's decoded message. Percentiles over every round's deliveries; per round: median (min–max) "
         "over rounds; *of which `commit()`*: how long the server's `commit()` call itself took."),
        "",
        "| session | deliveries | missing | p50 (ms) | p90 (ms) | **p99 (ms)** | max (ms) | p50 per round | p99 per round | of which `commit()`: p50 / p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['session']} | {r['deliveries']:,} | {r['missing']:,} | {_ms(r['p50_ms'])} | {_ms(r['p90_ms'])} "
            f"| **{_ms(r['p99_ms'])}** | {_ms(r['max_ms'])} | {_spread_text(r['p50_per_round_ms'])} "
            f"| {_spread_text(r['p99_per_round_ms'])} | {r['commit_p50_ms']:.2f} / {r['commit_p99_ms']:.2f} |"
        )
    lines += ["", _spread_line(rows, meta["rounds"]), "", _cpu_line(rows, meta)]
    if meta["unexpected_messages"]:
        lines += ["", f"Unexpected messages to the clients (a client fell behind?): {meta['unexpected_messages']}."]
    if meta["postgres_skipped"]:
        lines += ["", f"PostgreSQL skipped: {meta['postgres_skipped']}."]
    return "\n".join(lines)


def _spread_line(rows: list[dict[str, Any]], rounds: int) -> str:
    """The widest per-round spread of p50 and of p99 over the modes: "reproducible within"."""
    parts = []
    for name in ("p50", "p99"):
        spreads = [(r[f"{name}_per_round_ms"], r["mode"]) for r in rows if r[f"{name}_per_round_ms"]]
        if not spreads or rounds < 2:
            continue
        s, mode = max(spreads, key=lambda x: x[0]["max"] - x[0]["min"])
        width = s["max"] - s["min"]
        parts.append(f"{name} within {width:.2f} ms ({width / s['median']:.0%} of its median; widest: {mode})")
    if not parts:
        return "Spread: one round only, no spread to report."
    return f"Spread over {rounds} rounds (max − min of the per-round figure, the widest mode): " + "; ".join(parts) + "."


def _cpu_line(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    shares = [r["cpu"] for row in rows for r in row["rounds"]]
    if not shares:
        return ""
    med = {k: statistics.median(s[k] for s in shares) for k in ("server", "clients", "other", "stolen")}
    top = max(s["other"] for s in shares)
    busy = sum(1 for s in shares if s["other"] > BUSY)
    return (
        f"CPU while measuring (100% = one of {meta['cpus']} CPUs; median over rounds and modes): server "
        f"{med['server']:.0%}, clients {med['clients']:.0%}, everything else (PostgreSQL included) "
        f"{med['other']:.0%} (at most {top:.0%} in one round; above {BUSY:.0%}, other work was sharing the "
        f"CPUs, in {busy} of the {len(shares)} runs of a mode), stolen {med['stolen']:.0%}; load average "
        f"{meta['loadavg_before'][0]:.2f} before, {meta['loadavg_after'][0]:.2f} after."
    )


# == main ====================================================================================


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="commits per second")
    parser.add_argument("--seconds", type=float, help=f"per mode and round (default {FULL['seconds']:g}, quick {QUICK['seconds']:g})")
    parser.add_argument("--rounds", type=int, help=f"default {FULL['rounds']}, quick {QUICK['rounds']}")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds: about 30 s")
    parser.add_argument("--pg-url", default=os.environ.get("SQLA_NOTIFY_PG_URL", DEFAULT_PG))
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()
    presets(args, QUICK, FULL)
    if args.rounds < 1 or args.seconds <= 0 or args.rate <= 0 or args.clients < 1:
        parser.error("--rounds, --seconds, --rate and --clients must be positive")

    started = time.monotonic()
    loadavg_before = _loadavg()
    code = git_state()  # before the run: what the server imports
    pg_url, pg_version, skipped = (None, None, "--no-pg") if args.no_pg else postgres(args.pg_url)
    if skipped:
        print(f"PostgreSQL skipped: {skipped}", file=sys.stderr)
    pg_table = f"{SQLITE_TABLE}_{os.getpid():x}{secrets.token_hex(2)}" if pg_url else None
    modes = _modes(pg_table)

    with tempfile.TemporaryDirectory() as tmp:
        sqlite_path = Path(tmp) / "latency.db"
        sqlite_engine = create_engine(f"sqlite:///{sqlite_path}")
        with sqlite_engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # stays with the file: every connection uses it
        _table(MetaData(), SQLITE_TABLE).create(sqlite_engine)
        sqlite_engine.dispose()
        pg_engine = create_engine(pg_url) if pg_url else None
        pg_metadata = MetaData()
        if pg_engine is not None and pg_table is not None:
            _table(pg_metadata, pg_table).create(pg_engine)
        try:
            databases = {"sqlite": [f"sqlite:///{sqlite_path}", SQLITE_TABLE]}
            if pg_url and pg_table:
                databases["postgres"] = [pg_url.render_as_string(hide_password=False), pg_table]
            env = {"BENCH_DATABASES": json.dumps(databases), "BENCH_NAME": "bench_latency"}
            server = Server("commit_server:app", SERVER_LOG, env=env, ready="/stats")
            try:
                unexpected = asyncio.run(_run(modes, server.port, server.proc.pid, args))
            finally:
                server.stop()
        finally:
            if pg_engine is not None:
                pg_metadata.drop_all(pg_engine)
                pg_engine.dispose()

    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "platform": platform.platform(),
        "cpus": os.cpu_count(), "versions": _versions(), "postgresql_server": pg_version, "git": code,
        "mode": next((name for name, preset in (("full", FULL), ("quick", QUICK))
                      if all(getattr(args, k) == v for k, v in preset.items())), "custom"),
        "clients": args.clients, "rate": args.rate,
        "seconds": args.seconds, "rounds": args.rounds, "warmup_seconds": WARMUP_SECONDS,
        "drain_timeout_s": DRAIN_TIMEOUT, "order": "rotating by one mode per round",
        "uvicorn": "one process, --ws-per-message-deflate false, other settings default",
        "sqlite": "a file in a temporary directory, journal_mode=WAL, synchronous=FULL (the default)",
        "postgresql": pg_url.render_as_string() if pg_url else None, "postgres_skipped": skipped,
        "unexpected_messages": dict(unexpected),
        "loadavg_before": loadavg_before, "loadavg_after": _loadavg(),
        "duration_s": round(time.monotonic() - started, 1),
    }
    rows = [_row(m) for m in modes]
    table = report(meta, rows)
    print(table)
    written = write("latency", {"meta": meta, "latency": rows}, f"# bench_latency ({meta['when']}, {meta['mode']})\n\n{table}\n")
    try:
        from plots import plot_latency  # matplotlib: the bench extra
    except ImportError as exc:
        print(f"no plot ({exc}); pip install -e '.[bench]'", file=sys.stderr)
    else:
        written.append(plot_latency(RESULTS / "latency.json", RESULTS).name)
    print(f"\nwrote {', '.join(written)} in {RESULTS} ({meta['duration_s']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
