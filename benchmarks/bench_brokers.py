"""Several processes: the in-process hub against the Redis and PostgreSQL brokers, side by side.

Three configurations run at once, each as two uvicorn processes (``commit_server.py``,
``--ws-per-message-deflate false``) with ``--clients`` WebSocket clients (default 100) on each:

* **in-process** ``Hub()``: each process's commits reach only its own clients. This is the
  baseline (what one process costs), not a working multi-process setup.
* **Redis** ``Hub(broker=RedisBroker(url, stream=<unique per run>))``.
* **PostgreSQL** ``Hub(broker=PostgresBroker(url, channel=<unique per run>))``: only when
  ``sqla_notify.postgres`` provides ``PostgresBroker`` and the database answers.

All three commit to the same database, PostgreSQL (``--pg-url`` or ``SQLA_NOTIFY_PG_URL``) on
loopback (one table per configuration and run, dropped at the end; unreachable: one shared
SQLite file instead, and then PostgreSQL is not a contender), so only the broker differs. Redis
comes from ``SQLA_NOTIFY_REDIS_URL``. Commits are ORM
commits through a sync ``Session`` of ``notifier.attach(sessionmaker(engine))``, made by each
server in a worker thread (a ``POST /db/load`` request, as a ``def`` endpoint would) on a shared
schedule that alternates between the two processes. Every process, and this one, reads the
same CLOCK_MONOTONIC, so a server's ``time.monotonic()`` just before ``commit()`` and a
client's arrival time compare directly.

The clients live in this process (``loadgen.RecordingClient``), cheap enough not to be the
bottleneck (their CPU share is reported). Arrival time is when the bytes reach the client.

**(a) Latency** at a moderate rate (``--rate`` commits/s, one row each, default 50/s):
every client decodes every notification; latency = arrival - the commit's timestamp, for each
client that should receive it (the committing process's clients in-process, all clients with
a broker). ``--rounds`` rounds, the configurations' order rotating; percentiles over all
deliveries, with the spread of the per-round p99. Target (the issue): a broker adds at most
2 ms at p99 over in-process. Read the difference with this in mind: with a broker every commit
is sent by both processes to all 200 clients, twice the baseline's frames on the same CPUs,
and these clients read twice as many; so the difference holds that extra fan-out as well as
the broker's round trip. The configurations not being measured stay connected, idle.

**(b) Sustained rate**: steps of a rising offered rate, in committed notifications per second
over both processes (at most 100 commits/s, so several rows per commit beyond that), each
step ``--step-seconds`` long, the configurations interleaved per step. A step *holds* when
every client receives every notification it should, none late by more than ``LAG_BOUND``
(lag sampled on the last notification of each socket read, so a client's final notification
is always sampled; a backlog shows as lag), with no ``resync``, drop or disconnection, and the
commits kept to their schedule (within ``LATE_BOUND``). A step that fails is retried once;
the second failure ends that configuration's ramp. Reported: the highest step that held,
as notifications delivered per second per process (with a broker every process delivers every
notification; in-process only its own half) and WebSocket frames per second per process,
both over the commits' actual window (commits that fall behind schedule stretch it); and for
the step that failed, the CPU shares while the commits ran: each server process (and its event
loop, i.e. without the committing thread), the clients, Redis, PostgreSQL (all its
processes), interrupts (loopback networking), the whole machine and what of it none of these
account for (other work on the machine), with a guess at the bottleneck from those figures.

    python benchmarks/bench_brokers.py            # about 5 minutes
    python benchmarks/bench_brokers.py --quick    # about 70 s, noisier
    python benchmarks/bench_brokers.py --no-ramp --clients 1    # latency only, 1 client each

Writes ``benchmarks/results/brokers.json`` and ``brokers.md`` (``--out`` renames them). Servers' stderr goes to
``/tmp/bench_brokers-<pid>.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import sqlalchemy
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

import sqla_notify
from harness import Redis, Server, git_state, machine_cpu, named_cpu, new_loop, own_cpu, percentile, postgres, presets
from harness import raise_nofile, rotation, tail, versions, write
from brokers_report import report
from loadgen import RecordingClient as Client

LAG_BOUND = 1.0  # s: a step holds only if every notification arrives within this
LATE_BOUND = 0.5  # s: ... and the commits keep to their schedule within this
MAX_COMMITS = 100  # commits/s over both processes; beyond, several rows per commit
SERVER_LOG = Path(f"/tmp/bench_brokers-{os.getpid()}.log")


# == the configurations ======================================================================


@dataclass
class Config:
    key: str
    broker: str  # BENCH_BROKER
    table: str
    env: dict[str, str]
    servers: list[Server] = field(default_factory=list)
    clients: list[list[Client]] = field(default_factory=list)  # per server
    http: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        return self.broker != "none"


def postgres_available() -> str | None:
    """Why the PostgreSQL contender cannot run (its extra not installed), or ``None`` if it can."""
    try:
        from sqla_notify.postgres import PostgresBroker  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        return f"sqla_notify.postgres does not import ({exc!r})"
    return None


def _start(cfg: Config) -> None:
    """Start two servers (not waiting for them: all configurations start at once)."""
    for _ in range(2):
        cfg.servers.append(Server(
            "commit_server:app", SERVER_LOG, ready=None,
            env={**cfg.env, "BENCH_BROKER": cfg.broker, "BENCH_NAME": "bench_brokers",
                 "BENCH_DATABASES": json.dumps({"db": [cfg.env["BENCH_DB_URL"], cfg.table]})},
        ))


def _ready(cfg: Config) -> None:
    """Wait until both servers answer and their hubs' brokers are connected (up to 60 s each)."""
    for server in cfg.servers:
        server.wait("/stats", lambda stats: stats["broker"] in ("none", "connected"), seconds=60)
        cfg.http.append(httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10))


async def _connect(cfg: Config, clients: int) -> None:
    for server in cfg.servers:
        cfg.clients.append(await Client.open(server.port, f"/notify/ws?collections={cfg.table}", clients))


async def _stats(cfg: Config) -> list[dict[str, Any]]:
    return [(await http.get("/stats")).json() for http in cfg.http]


def _snapshot(cfg: Config, r: Redis) -> dict[str, Any]:
    cpu: dict[str, Any] = {"wall": time.monotonic(), "servers": [s.cpu() for s in cfg.servers]}
    cpu["clients"] = own_cpu()
    cpu["machine"] = machine_cpu()
    cpu["postgres"] = named_cpu("postgres")
    cpu["redis"] = r.cpu()
    return cpu


def _shares(a: dict[str, Any], b: dict[str, Any], thread_cpu: list[float]) -> dict[str, Any]:
    """CPU shares (1.0 = one CPU) between two snapshots."""
    wall = b["wall"] - a["wall"]
    servers = [(y - x) / wall for x, y in zip(a["servers"], b["servers"])]
    out: dict[str, Any] = {
        "servers": servers,
        "server_loops": [s - t / wall for s, t in zip(servers, thread_cpu)],
        "clients": (b["clients"] - a["clients"]) / wall,
        # the machine's busy CPUs, of which interrupts (loopback networking), and stolen by the host
        **{name: (b["machine"][i] - a["machine"][i]) / (b["machine"][3] - a["machine"][3]) * (os.cpu_count() or 1)
           for i, name in enumerate(("machine", "interrupts", "stolen"))},
        "redis": (b["redis"] - a["redis"]) / wall,
        "postgres": (b["postgres"] - a["postgres"]) / wall if a["postgres"] is not None and b["postgres"] is not None else None,
    }
    known = sum(servers) + out["clients"] + (out["redis"] or 0) + (out["postgres"] or 0) + out["interrupts"]
    out["other"] = max(0.0, out["machine"] - known)  # other processes on the machine
    return out


# == one run of commits ======================================================================


async def _settle(cfg: Config, quiet: float = 0.3, bound: float = 10.0) -> None:
    """Wait (bounded) until no client has received anything for ``quiet`` seconds."""
    deadline = time.monotonic() + bound
    last = -1
    while time.monotonic() < deadline:
        now = sum(c.count for g in cfg.clients for c in g)
        if now == last:
            return
        last = now
        await asyncio.sleep(quiet)


async def run(
    cfg: Config, r: Redis, *,
    commits_per_s: float, rows: int, seconds: float, record_all: bool,
) -> dict[str, Any]:
    """Commit at ``commits_per_s`` over both servers, alternately, and watch the clients."""
    per_proc = max(1, round(seconds * commits_per_s / 2))
    interval = 2 / commits_per_s
    own = per_proc * rows
    for group in cfg.clients:
        for c in group:
            c.reset(2 * own if cfg.shared else own, record_all)
    stats0 = await _stats(cfg)
    gc.collect()
    gc.disable()  # no collection pauses in the clients' timestamps (they make no cycles)
    try:
        cpu0 = _snapshot(cfg, r)
        start = time.monotonic() + 0.1
        replies = await asyncio.gather(*(
            http.post("/db/load", json={"start": start, "offset": i * interval / 2, "interval": interval,
                                     "count": per_proc, "rows": rows}, timeout=seconds * 3 + 60)
            for i, http in enumerate(cfg.http)
        ))
        cpu1 = _snapshot(cfg, r)  # CPU over the commits' window: while the load is offered
        bodies = [reply.json() for reply in replies]
        last_t = max(b["commits"][-1][0] for b in bodies)
        clients = [c for g in cfg.clients for c in g]
        deadline = max(time.monotonic(), last_t + LAG_BOUND) + 2.0  # a little beyond the bound, to see
        while not all(c.done_at or c.closed for c in clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        gc.enable()
    stats1 = await _stats(cfg)

    t_of: dict[int, tuple[float, int]] = {}  # row id -> (commit time, server index)
    for server, body in enumerate(bodies):
        for t, ids in body["commits"]:
            for row_id in ids:
                t_of[row_id] = (t, server)
    first_t = min(b["commits"][0][0] for b in bodies)
    lags: list[float] = []
    same: list[float] = []  # clients of the committing process
    other: list[float] = []
    unknown = 0
    for server, group in enumerate(cfg.clients):
        for c in group:
            for row_id, arrived in c.samples:
                found = t_of.get(row_id)
                if found is None:
                    unknown += 1
                    continue
                lag = arrived - found[0]
                lags.append(lag)
                (same if found[1] == server else other).append(lag)
    complete = all(c.done_at for c in clients)
    done = [c.done_at for c in clients if c.done_at]
    window = last_t - first_t + interval / 2  # the commits' schedule, both processes
    counters = {k: sum(s[k] - s0[k] for s, s0 in zip(stats1, stats0)) for k in ("frames_dropped", "slow_disconnects", "gaps")}
    controls = sorted({k for c in clients for k in c.controls})
    late = max(b["late"] for b in bodies)
    result = {
        "commits_per_s": commits_per_s, "rows": rows, "seconds": seconds,
        "offered_notifications_per_s": commits_per_s * rows,
        "commits": sum(len(b["commits"]) for b in bodies), "expected_per_client": clients[0].target,
        "clients_complete": sum(1 for c in clients if c.done_at), "clients": len(clients),
        "deliveries": sum(c.count for c in clients), "closed": sum(1 for c in clients if c.closed),
        "lag_p50_ms": statistics.median(lags) * 1e3 if lags else None,
        "lag_p90_ms": percentile(lags, 0.90) * 1e3 if lags else None,
        "lag_p99_ms": percentile(lags, 0.99) * 1e3 if lags else None,
        "lag_max_ms": max(lags) * 1e3 if lags else None,
        "lag_samples": len(lags), "unknown_ids": unknown,
        "last_in_after_last_commit_ms": (max(done) - last_t) * 1e3 if done else None,
        "window_s": window,
        "delivered_notifications_per_s_per_process": [min(c.count for c in g) / window for g in cfg.clients],
        "schedule_late_ms": late * 1e3, "hub": counters, "controls": controls,
        "cpu": _shares(cpu0, cpu1, [b["thread_cpu"] for b in bodies]),
    }
    problems = []
    if not complete:
        problems.append(f"{len(clients) - len(done)} of {len(clients)} clients incomplete")
    if lags and max(lags) > LAG_BOUND:
        problems.append(f"lag {max(lags) * 1e3:.0f} ms > {LAG_BOUND * 1e3:.0f} ms")
    if late > LATE_BOUND:
        problems.append(f"commits {late * 1e3:.0f} ms behind schedule")
    if counters["frames_dropped"]:
        problems.append(f"{counters['frames_dropped']:,} frames dropped (client queues overflowed)")
    if counters["slow_disconnects"] or result["closed"]:
        problems.append(f"{max(counters['slow_disconnects'], result['closed'])} clients closed")
    if counters["gaps"]:
        problems.append(f"{counters['gaps']} broker gaps")
    if controls:
        problems.append("clients got " + ", ".join(controls))
    result["problems"] = problems
    if record_all:
        result["latencies_ms"] = [x * 1e3 for x in lags]
        result["same_process_ms"] = [x * 1e3 for x in same]
        result["other_process_ms"] = [x * 1e3 for x in other]
    if problems:
        await _settle(cfg)
    return result


# == the phases ==============================================================================


async def latency(cfgs: list[Config], r: Redis, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {c.key: {"rounds": []} for c in cfgs}
    for rnd in range(args.rounds):
        for cfg in rotation(rnd, cfgs):
            res = await run(cfg, r, commits_per_s=args.rate, rows=1, seconds=args.seconds, record_all=True)
            out[cfg.key]["rounds"].append(res)
            print(f"  latency {cfg.key} round {rnd + 1}: p99 {res['lag_p99_ms']:.2f} ms"
                  f"{' ' + '; '.join(res['problems']) if res['problems'] else ''}", file=sys.stderr)
    for cfg in cfgs:
        rounds = out[cfg.key]["rounds"]
        values = [x for rd in rounds for x in rd.pop("latencies_ms")]
        same = [x for rd in rounds for x in rd.pop("same_process_ms")]
        other = [x for rd in rounds for x in rd.pop("other_process_ms")]
        expected = sum(rd["commits"] * (len(cfg.clients[0]) * (2 if cfg.shared else 1)) for rd in rounds)
        out[cfg.key].update({
            "deliveries": len(values), "missing": expected - len(values), **tail(values),
            "p99_per_round_ms": [rd["lag_p99_ms"] for rd in rounds],
            "same_process_p99_ms": percentile(same, 0.99) if same else None,
            "other_process_p99_ms": percentile(other, 0.99) if other else None,
        })
    return out


def _rates(args: argparse.Namespace) -> list[float]:
    rates, rate = [], args.start_rate
    while rate <= args.max_rate * 1.0001:
        rates.append(rate)
        rate *= args.factor
    return rates


async def ramp(cfgs: list[Config], r: Redis, args: argparse.Namespace, budget_end: float) -> dict[str, Any]:
    out: dict[str, Any] = {c.key: {"steps": [], "held": None, "failed": None, "stopped": None} for c in cfgs}
    active = list(cfgs)
    for i, rate in enumerate(_rates(args)):
        if not active:
            break
        rows = max(1, math.ceil(rate / MAX_COMMITS))
        for cfg in rotation(i, active):
            if time.monotonic() > budget_end:
                out[cfg.key]["stopped"] = "time budget"
                continue
            for attempt in (1, 2):
                step = await run(cfg, r, commits_per_s=rate / rows, rows=rows, seconds=args.step_seconds, record_all=False)
                step["attempt"] = attempt
                out[cfg.key]["steps"].append(step)
                verdict = "held" if not step["problems"] else "; ".join(step["problems"])
                print(f"  ramp {cfg.key} {rate:.0f}/s (try {attempt}): lag p99 {step['lag_p99_ms'] or 0:.0f} ms, "
                      f"servers {' '.join(f'{x:.0%}' for x in step['cpu']['servers'])}: {verdict}", file=sys.stderr)
                if not step["problems"]:
                    out[cfg.key]["held"] = step
                    break
            else:
                out[cfg.key]["failed"] = step
                out[cfg.key]["stopped"] = "failed twice"
        active = [c for c in active if out[c.key]["stopped"] is None]
    for cfg in active:
        out[cfg.key]["stopped"] = "top of the ramp"
    return out


# == main ====================================================================================


def _versions(r: Redis, pg_version: str | None) -> dict[str, Any]:
    found: dict[str, Any] = versions(
        "fastapi", "uvicorn", "starlette", "redis", "psycopg", "msgspec", "uvloop", "httptools", "websockets")
    found.update(python=sys.version.split()[0], sqlalchemy=sqlalchemy.__version__, sqla_notify=sqla_notify.__version__)
    found["redis_server"] = r.version
    if pg_version is not None:
        found["postgresql_server"] = pg_version
    return found


async def _main(
    args: argparse.Namespace, cfgs: list[Config], r: Redis, started: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``started``: when the servers were started; the ramp's time budget counts from it."""
    try:
        for cfg in cfgs:
            await _connect(cfg, args.clients)
            for rows in (1, 4):  # warm-up: connections, caches, statements
                await run(cfg, r, commits_per_s=50, rows=rows, seconds=0.4, record_all=False)
        print(f"  {len(cfgs)} configurations up in {time.monotonic() - started:.0f} s", file=sys.stderr)
        lat = await latency(cfgs, r, args)
        thr = await ramp(cfgs, r, args, started + args.budget) if args.ramp else {c.key: None for c in cfgs}
        return lat, thr
    finally:
        for cfg in cfgs:
            for group in cfg.clients:
                for c in group:
                    if c.transport is not None:
                        c.transport.close()
            for http in cfg.http:
                await http.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="about 80 s: shorter, fewer rounds, coarser ramp")
    add("--clients", type=int, default=100, help="per process")
    add("--rate", type=float, default=50.0, help="latency: commits/s over both processes")
    add("--seconds", type=float, help="latency: seconds per round and configuration")
    add("--rounds", type=int, help="latency rounds")
    add("--step-seconds", type=float, help="ramp: seconds per step")
    add("--start-rate", type=float, help="ramp: first step, committed notifications/s")
    add("--max-rate", type=float, default=25_600.0, help="ramp: last step")
    add("--factor", type=float, help="ramp: rate ratio between steps")
    add("--budget", type=float, help="seconds after which the ramp stops")
    add("--no-ramp", dest="ramp", action="store_false", help="latency only")
    add("--out", default="brokers", help="results/<out>.json and .md")
    add("--pg-url", default=os.environ.get("SQLA_NOTIFY_PG_URL", "postgresql+psycopg://127.0.0.1/test"))
    args = parser.parse_args()
    quick = {"seconds": 2.5, "rounds": 2, "step_seconds": 1.5, "start_rate": 200.0, "factor": 2.0, "budget": 75.0}
    full = {"seconds": 5.0, "rounds": 3, "step_seconds": 3.0, "start_rate": 200.0, "factor": math.sqrt(2), "budget": 300.0}
    presets(args, quick, full)
    raise_nofile(8192)

    run_id = f"{os.getpid():x}{secrets.token_hex(3)}"
    code = git_state()  # before the run: what the servers import
    url, pg_version, unreachable = postgres(args.pg_url)
    pg_url = None if url is None else url.render_as_string(hide_password=False)
    if unreachable:
        print(f"postgres: {unreachable}; commits go to SQLite", file=sys.stderr)
    skipped = postgres_available() if pg_url else "PostgreSQL unreachable"
    if skipped:
        print(f"postgres: skipped (not available: {skipped})")
    r = Redis.connect("bench_brokers")
    if isinstance(r, str):
        raise SystemExit(f"Redis is needed: {r}")

    use_pg = pg_url is not None
    tmp = Path(f"/tmp/bench_brokers-{run_id}.db")
    db_url = pg_url if use_pg else f"sqlite:///{tmp}"
    engine = create_engine(cast(str, db_url))
    if not use_pg:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    stream = r.new_stream()
    channel = f"bench_brokers_{run_id}"
    common = {"BENCH_DB_URL": cast(str, db_url)}
    cfgs = [
        Config("inproc", "none", f"bench_brokers_{run_id}_inproc", common),
        Config("redis", "redis", f"bench_brokers_{run_id}_redis",
               {**common, "BENCH_REDIS_URL": r.url, "BENCH_STREAM": stream}),
    ]
    if not skipped:
        plain = cast(str, pg_url).replace("+psycopg", "")
        cfgs.append(Config("postgres", "postgres", f"bench_brokers_{run_id}_postgres",
                           {**common, "BENCH_PG_URL": plain, "BENCH_CHANNEL": channel}))
    metadata = MetaData()
    for cfg in cfgs:
        Table(cfg.table, metadata, Column("id", Integer, primary_key=True), Column("name", String(20)))
    metadata.create_all(engine)
    try:
        started = time.monotonic()
        for cfg in cfgs:
            _start(cfg)
        for cfg in cfgs:
            _ready(cfg)
        loop = new_loop()
        try:
            lat, thr = loop.run_until_complete(_main(args, cfgs, r, started))
        finally:
            loop.close()
    finally:
        for cfg in cfgs:
            for server in cfg.servers:
                server.stop()
        metadata.drop_all(engine)
        engine.dispose()
        r.drop_all()
        tmp.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "platform": platform.platform(),
        "cpus": os.cpu_count(), "versions": _versions(r, pg_version), "git": code,
        "mode": "quick" if args.quick else "full", "clients_per_process": args.clients,
        "database": "PostgreSQL (loopback)" if use_pg else "one SQLite file (WAL)",
        "rate": args.rate, "seconds": args.seconds, "rounds": args.rounds,
        "step_seconds": args.step_seconds, "start_rate": args.start_rate, "max_rate": args.max_rate,
        "factor": args.factor, "lag_bound_s": LAG_BOUND, "late_bound_s": LATE_BOUND,
        "max_commits_per_s": MAX_COMMITS, "uvicorn": "--ws-per-message-deflate false, other settings default",
        "note": "In-process, each process's commits reach only its own clients: the baseline.",
        "postgres_skipped": skipped,
    }
    table = report(meta, lat, thr, skipped)
    print(table)
    write(args.out, {"meta": meta, "latency": lat, "throughput": thr}, f"# bench_brokers ({meta['when']}, {meta['mode']})\n\n{table}\n")
    log_lines = SERVER_LOG.read_text(errors="replace").splitlines()
    if log_lines:
        errors = sum(1 for line in log_lines if "Traceback" in line or "ERROR" in line)
        print(f"\nthe servers logged {len(log_lines)} line(s), {errors} of errors: {SERVER_LOG}", file=sys.stderr)
    else:
        SERVER_LOG.unlink()


if __name__ == "__main__":
    main()
