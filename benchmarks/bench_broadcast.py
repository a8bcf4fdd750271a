"""WebSocket broadcast: sqla_notify's hub, in-process and through Redis, against a bare loop,
FastAPI's ConnectionManager, encode/broadcaster and python-socketio.

The contenders (``contenders/``, one module each) run side by side in one uvicorn process
(``broadcast_server.py``); each sends every client the same ~100-byte notification, encoded
once per notification. The load generator is separate processes (``loadgen.py``).
Measured, rounds interleaved (the order rotates every round), every ratio paired with the
bare loop of the same server and round:

* **throughput**: 1,000, 100 and 5,000 clients (``--clients``), bursts *back to back* and
  (at the first count) *paced*, one notification per event-loop turn; at 5,000 clients the
  contenders take turns in threes, each turn with the bare loop, the two hubs together;
* **stalled clients**: the same burst to 990 clients, then with 10 more whose buffers are full;
* **one notification**: publish → last of 990 clients, then with 10 more stalled;
* **memory per idle connection**: RSS before and after 1,000 idle connections.

``--only`` runs some of these (``throughput stalled single memory``, default all) and
``workers``: the hub via Redis served by ``--workers N`` uvicorn processes (N ports sharing
one stream, the clients split evenly) against one, total deliveries/s. 10,000 clients and
more: the driver raises the file-descriptor limit (past the hard limit where allowed) and
every server and client process inherits it (checked); where two contenders' clients do not
fit in one server's limit, each contender gets a server of its own, all up at once; client
processes scale with the count (``--client-procs``), each connecting from its own loopback
address so that ephemeral ports never run out.

The hub via Redis gets a stream per server (``bench_broadcast:<pid>-<random>:<n>``, deleted
after); Redis comes from ``SQLA_NOTIFY_REDIS_URL``; unreachable, that contender is skipped with the
reason. ``results/broadcast.md`` (the notes above its tables) and ``benchmarks/README.md``
describe the method in full.

    python benchmarks/bench_broadcast.py              # about 28 minutes
    python benchmarks/bench_broadcast.py --quick      # about 5–6 minutes, noisier
    python benchmarks/bench_broadcast.py --quick --clients 1000 100   # about 3.5 minutes
    python benchmarks/bench_broadcast.py --quick --contenders notify redis   # with the bare loop
    python benchmarks/bench_broadcast.py --only single --contenders notify    # one-notification latency, ~4 min
    python benchmarks/bench_broadcast.py --clients 10000 --only throughput memory single --idle 10000 \
        --contenders notify --out broadcast-10k                             # issue 14's scale, ~15 min
    python benchmarks/bench_broadcast.py --clients 10000 --only workers --workers 2   # via Redis, ~3 min

Writes ``benchmarks/results/broadcast.json`` and ``broadcast.md``, and with matplotlib
``broadcast-throughput.png`` and ``broadcast-one-broadcast.png`` (``plots.py``).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contenders import FILTERED, ORDER as CONTENDERS
from harness import RESULTS, Server as _Server, base_meta, git_state, log as _log, presets, raise_nofile, write
from harness import Redis, rotation as _rotation
from broadcast_report import LABELS, filtered_markdown, filtered_render, filtered_summary, markdown, render, summarize
from loadgen import HUBS, Clients

SERVER_LOG = Path(f"/tmp/bench_broadcast-{os.getpid()}.log")  # the servers' stderr
BURST_TIMEOUT = 120.0  # s: a throughput burst not finished by then counts as not finished
SCENARIOS = ("throughput", "stalled", "single", "memory", "workers")  # --only; "workers" only when named
QUICK = {"rounds": 1, "messages": 100, "stall_timeout": 5.0, "single_rounds": 1, "stall_rounds": 1,
         "memory_rounds": 1, "single_timeout": 3.0, "unwatched": 50_000}
FULL = {"rounds": 7, "messages": 200, "stall_timeout": 15.0, "single_rounds": 3, "stall_rounds": 3,
        "memory_rounds": 3, "single_timeout": 5.0, "unwatched": 200_000}


class RedisUnavailable(RuntimeError):
    """A server's Redis hub did not connect: the Redis contender cannot run there."""


#: Set by main() when the Redis contender runs (a global, like BENCH_DEFLATE for the clients).
REDIS: Redis | None = None


class Server(_Server):
    """A uvicorn process serving broadcast_server:app, with every contender.

    ``redis``: also serve the Redis contender, on a stream of its own (see
    :class:`harness.Redis`), or on ``stream`` (``--workers``: shared by several servers); the
    server is ready once its broker has connected. It must have got the driver's
    file-descriptor limit (``/info``), or it stops.

    :raises RedisUnavailable: if the Redis hub did not connect.
    """

    def __init__(self, redis: bool = False, stream: str | None = None) -> None:
        env: dict[str, str] = {}
        self.counts: dict[str, int] | None = None
        self.stream: str | None = None
        if redis:
            if REDIS is None:
                raise RedisUnavailable("no Redis for this run")
            self.stream = stream or REDIS.new_stream()
            env.update(BENCH_REDIS_URL=REDIS.url, BENCH_REDIS_STREAM=self.stream)
        # cwd inherited: PYTHONPATH may pick the sqla_notify checkout to measure.
        super().__init__("broadcast_server:app", SERVER_LOG, env=env, cwd=None,
                         deflate=os.environ.get("BENCH_DEFLATE") == "1")
        if self.info["pid"] != self.proc.pid:
            self.stop()
            raise RuntimeError(f"expected the server's pid {self.proc.pid} at port {self.port}, got {self.info['pid']}")
        if self.info["nofile"] < _fd_limit():
            self.stop()
            raise RuntimeError(f"the server got a file-descriptor limit of {self.info['nofile']}, expected "
                               f"the driver's {_fd_limit()}")
        if redis and self.info["redis"]["broker"] != "connected":
            self.stop()
            raise RedisUnavailable(
                f"the server's Redis broker did not connect to {env['BENCH_REDIS_URL']} within 10 s "
                f"(state: {self.info['redis']['broker']})"
            )

    def stop(self) -> dict[str, int]:
        """Stop the server; count the errors it logged and, with the Redis contender, its
        broker's failed calls and gaps; delete its stream. Again: the same counts."""
        if self.counts is not None:
            return self.counts
        broker: dict[str, int] = {}
        if self.stream is not None and self.info is not None and self.proc.poll() is None:
            try:
                s = self.get("/stats?contender=redis")
                broker = {"redis_errors": int(s["broker_errors"]), "redis_gaps": int(s["gaps"])}
            except (OSError, RuntimeError, KeyError) as exc:
                _log(f"  could not read the Redis hub's counters: {exc!r}")
        counts = super().stop()
        if self.stream is not None and REDIS is not None:
            REDIS.drop(self.stream)
            self.stream = None
        self.counts = {**counts, **broker}
        return self.counts



def _fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def client_procs(n: int, forced: int | None = None) -> int:
    """Load-generating processes for ``n`` clients (``forced``: ``--client-procs``): one up to
    2,000, two up to 5,000, then one per 2,500 (four at 10,000), so that no process's loop
    walks so many sockets that it, not the server, holds the last frame back."""
    if forced:
        return forced
    return 1 if n <= 2000 else 2 if n <= 5000 else -(-n // 2500)


def fd_need(n: int) -> int:
    """File descriptors a server needs for ``n`` clients of the bare loop and one other
    contender connected at once (so that :func:`_groups` pairs them in one server), with room
    to spare; ``n + 1000`` is the least (a server per contender)."""
    return 2 * n + 2000


def _groups(n: int, contenders: list[str]) -> list[list[str]]:
    """Contenders connected at once to one server: as many as its file descriptors allow.

    When all of them do not fit (5,000 clients each against a limit of 20,000), every group
    has the bare loop, so each contender's ratio to it is still paired within a server and round;
    the two hubs (in-process and through Redis) come first, so that they share a server too.
    When not even two fit (10,000 clients against 20,000), a group each: :func:`run_throughput`
    then runs a server per contender, all at once.
    """
    fit = (_fd_limit() - 1000) // n
    if fit >= len(contenders):
        return [list(contenders)]
    if fit < 1:
        raise SystemExit(f"{n} clients need RLIMIT_NOFILE >= {n + 1000} (have {_fd_limit()}): run as root, "
                         f"or raise the hard limit first (ulimit -Hn {fd_need(n)})")
    if fit == 1:
        return [[c] for c in contenders]
    others = sorted((c for c in contenders if c != "bare"), key=lambda c: c not in HUBS)  # stable
    return [["bare", *others[i:i + fit - 1]] for i in range(0, len(others), fit - 1)]


def _start(contender: str) -> Server | None:
    """A fresh server for one contender; ``None`` (logged) if it is the Redis contender and
    its hub cannot reach Redis: that round goes without it."""
    try:
        return Server(redis=contender == "redis")
    except RedisUnavailable as exc:
        _log(f"  {contender}: round skipped: {exc}")
        return None


# -- the four measurements ------------------------------------------------------------------


def run_throughput(
    clients: Clients, n: int, messages: int, rounds: int, paced: bool, contenders: tuple[str, ...],
    timeout: float = BURST_TIMEOUT,
) -> dict[str, Any]:
    """Bursts to ``n`` clients of each contender, all connected at once, rounds interleaved.

    A contender whose burst does not finish within ``timeout`` is recorded as such and not
    measured again at this client count; one that cannot connect ``n`` clients likewise, and
    the Redis contender if its hub cannot reach Redis. Each run records the bare loop's rate in
    the same round (and server, unless each contender has one of its own: see :func:`_groups`);
    the Redis hub's runs also the in-process hub's.
    """
    modes = ["burst", "paced"] if paced else ["burst"]
    groups = _groups(n, list(contenders))
    # Not even two contenders fit in one server's file descriptors (10,000 clients against a
    # hard limit of 20,000): a server each, all up at once with their clients, so that rounds
    # still interleave and the ratios pair by round, across two processes.
    apart = len(groups) > 1 and max(map(len, groups)) == 1
    batches = [groups] if apart else [[g] for g in groups]
    _log(
        f"throughput: {n} clients, bursts of {messages}, {rounds} rounds, {' and '.join(modes)}"
        + ("; a server per contender, all up at once" if apart else
           f"; {len(groups)} servers in turn: " + " | ".join(", ".join(g) for g in groups) if len(groups) > 1 else "")
    )
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {c: [] for c in contenders} for m in modes}
    failed: dict[str, str] = {}
    hub_stats: dict[str, Any] = {}
    info: dict[str, Any] = {}
    logs = []
    for batch in batches:
        lanes: list[tuple[Server, Clients, list[str]]] = []  # a server, its clients' processes, its contenders
        try:
            for members in batch:
                try:
                    server = Server(redis="redis" in members)
                except RedisUnavailable as exc:
                    failed["redis"] = str(exc)
                    _log(f"  redis: {exc}; not measured at {n} clients")
                    members = [c for c in members if c != "redis"]
                    if not members:
                        continue
                    server = Server()
                info = server.info
                lane_clients = clients if not lanes else Clients(clients.procs, clients.redis_cpu)
                lanes.append((server, lane_clients, members))
                lane_clients.start(server.port)
            lane = {c: (server, lane_clients) for server, lane_clients, members in lanes for c in members}
            live = []
            for c in lane:
                t = time.perf_counter()
                try:
                    lane[c][1].connect(c, n)
                    live.append(c)
                    _log(f"  connected {n} {c} clients in {time.perf_counter() - t:.1f} s")
                except RuntimeError as exc:
                    failed[c] = f"could not connect {n} clients: {exc}"
                    _log(f"  {c}: {failed[c]}")
            for c in live:  # warm-up
                lane[c][1].burst(lane[c][0], c, 20, timeout)
            for r in range(rounds):
                for mode in modes:
                    this_round: dict[str, dict[str, Any]] = {}
                    for c in _rotation(r, live):
                        if c in failed:
                            continue
                        time.sleep(0.2)
                        run = lane[c][1].burst(lane[c][0], c, messages, timeout, paced=mode == "paced")
                        if run["timed_out"]:
                            failed[c] = (
                                f"a burst of {messages} to {n} clients did not finish within {timeout:.0f} s "
                                f"({run['delivered_share']:.0%} delivered)"
                            )
                            _log(f"  {c}: {failed[c]}; not measured further at {n} clients")
                            continue
                        this_round[c] = run
                        runs[mode][c].append(run)
                    bare = this_round.get("bare")
                    for run in this_round.values():  # paired with the bare loop of the same round
                        run["bare_deliveries_per_s"] = bare["deliveries_per_s"] if bare else None
                    if "redis" in this_round:  # and the hub through Redis with the in-process hub
                        hub = this_round.get("notify")
                        this_round["redis"]["hub_deliveries_per_s"] = hub["deliveries_per_s"] if hub else None
                    _log(
                        f"  throughput, {n} clients, {mode}: round {r + 1}/{rounds}: "
                        + ", ".join(f"{c} {run['deliveries_per_s'] / 1e3:.0f}k/s" for c, run in this_round.items())
                    )
            for h in HUBS:
                if h in lane:
                    hub_stats[h] = lane[h][0].get(f"/stats?contender={h}")
            for c in lane:
                lane[c][1].close(c)
        finally:
            for server, lane_clients, _ in lanes:
                lane_clients.stop()
                logs.append(server.stop())
    return {
        "clients": n, "messages": messages, "rounds": rounds, "runs": runs, "hub_stats": hub_stats, "server": info,
        "server_log": logs, "groups": groups, "apart": apart, "failed": failed, "timeout_s": timeout,
    }


def _each_server(
    clients: Clients, rounds: int, contenders: tuple[str, ...], step: Callable[[int, str, Server], None],
) -> None:
    """Each round, each contender in turn (the order rotating): ``step(round, contender, server)``
    on a fresh server with the clients' processes started on it, both stopped after it."""
    for r in range(rounds):
        for c in _rotation(r, contenders):
            server = _start(c)
            if server is None:
                continue
            clients.start(server.port)
            try:
                step(r, c, server)
            finally:
                clients.stop()
                server.stop()


def _with_stalled(
    clients: Clients, server: Server, c: str, n: int, stalled: int, measure: Callable[[Any], Any],
) -> tuple[Any, dict[str, Any], Any]:
    """``measure(None)`` on ``n - stalled`` warmed-up clients, then ``measure(first result)`` with
    ``stalled`` more whose buffers were filled until sending to them blocks; and the prefill."""
    clients.connect(c, n - stalled)
    clients.burst(server, c, 20, 30)  # warm-up
    time.sleep(0.2)
    before = measure(None)
    clients.connect(c, 0, stalled)
    prefill = server.post(f"/prefill/{c}", 60)
    time.sleep(0.2)
    return before, prefill, measure(before)


def _finish(clients: Clients, server: Server, c: str) -> None:
    """Close ``c``'s clients, stop their processes and the server (its log counts: ``server.counts``)."""
    clients.close(c)
    clients.stop()
    server.stop()


def run_stalled(
    clients: Clients, n: int, stalled: int, messages: int, rounds: int, timeout: float, contenders: tuple[str, ...],
) -> dict[str, Any]:
    """One burst to ``n - stalled`` clients, then the same with ``stalled`` more whose buffers
    were filled until sending to them blocks; a fresh server per contender and round."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    info: dict[str, Any] = {}  # a server's /info (versions), for the results

    def step(r: int, c: str, server: Server) -> None:
        info.update(server.info)
        # Slow contenders get three times their unstalled time, if that is longer.
        before, prefill, during = _with_stalled(clients, server, c, n, stalled, lambda first: clients.burst(
            server, c, messages, 60 if first is None else max(timeout, 3 * first["completion_s"])))
        limit = max(timeout, 3 * before["completion_s"])
        hub_stats = server.get(f"/stats?contender={c}") if c in HUBS else None
        _finish(clients, server, c)
        runs[c].append({"unstalled": before, "stalled": during, "timeout_s": limit, "prefill": prefill,
                        "hub_stats": hub_stats, "server_log": server.counts})
        state = (f"timed out after {limit:.0f} s, {during['delivered_share']:.1%} delivered" if during["timed_out"]
                 else f"{during['completion_s'] * 1e3:.0f} ms")
        _log(f"  stalled clients: round {r + 1}/{rounds}: {c}: unstalled {before['completion_s'] * 1e3:.0f} ms, "
             f"with {stalled} stalled: {state} (prefill: {prefill['blocked']}/{prefill['stalled']} blocked)")

    _each_server(clients, rounds, contenders, step)
    return {"clients": n, "stalled": stalled, "messages": messages, "timeout_s": timeout, "runs": runs, "server": info}


def run_memory(clients: Clients, n: int, rounds: int, contenders: tuple[str, ...]) -> dict[str, Any]:
    """The server's RSS before and after ``n`` idle connections; a fresh server per contender
    and round (the Redis hub's reader and connections are in both measures)."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    info: dict[str, Any] = {}

    def step(r: int, c: str, server: Server) -> None:
        info.update(server.info)
        clients.connect(c, 20)  # first-connection allocations are not per-connection cost
        clients.close(c)
        time.sleep(0.5)
        before = server.get("/rss")
        for _ in range(50):  # python-socketio forgets a closed client a little later
            if before[c] == 0:
                break
            time.sleep(0.1)
            before = server.get("/rss")
        clients.connect(c, n)
        time.sleep(1.0)
        after = server.get("/rss")
        if after[c] != n or before[c] != 0:
            raise RuntimeError(f"{c}: expected 0 then {n} connections, got {before[c]}, {after[c]}")
        _finish(clients, server, c)
        per = (after["rss"] - before["rss"]) / n
        runs[c].append({"round": r, "rss_before": before["rss"], "rss_after": after["rss"], "per_connection": per,
                        "server_log": server.counts})
        _log(f"  memory: round {r + 1}/{rounds}: {c}: {per / 1024:.1f} KiB per connection")

    _each_server(clients, rounds, contenders, step)
    return {"connections": n, "runs": runs, "server": info}


def _unwatched(server: Server, count: int, paced: bool, timeout: float) -> dict[str, Any]:
    """``count`` posts to forums nobody watches: the server's CPU around the request, which
    returns once the hub has taken them all (no client receives anything to wait for)."""
    gc0 = server.get("/gc")
    cpu0, t0 = server.cpu(), time.perf_counter()
    response = server.post(f"/broadcast/unwatched?count={count}&timeout={timeout}&paced={str(paced).lower()}",
                           timeout + 5)
    cpu, elapsed = server.cpu() - cpu0, time.perf_counter() - t0
    gc1 = server.get("/gc")
    return {"contender": "unwatched", "paced": paced, "timed_out": not response["ok"], "frames": 0,
            "published": count, "server_cpu_s": cpu, "completion_s": elapsed,
            "server_gc_s": sum(gc1["seconds"]) - sum(gc0["seconds"]),
            "server_gc_cpu_s": sum(gc1["cpu_seconds"]) - sum(gc0["cpu_seconds"]),
            "server_gc_count": [b - a for a, b in zip(gc0["count"], gc1["count"])]}


GROUPS = ("whole", "split", "filtered")  # --filtered's contenders with clients of their own


def run_filtered(
    clients: Clients, n: int, messages: int, unwatched: int, rounds: int, timeout: float = BURST_TIMEOUT,
) -> dict[str, Any]:
    """``--filtered`` (issue 12): the server's CPU per delivered frame and per published post,
    ``n`` clients subscribed to ``posts`` whole, ``n`` each subscribed whole to a collection
    of its own (``split``) and ``n`` each subscribed to a forum of its own (``filtered``),
    and per post to forums nobody watches. One server, the three groups connected at once
    (to three hubs); each round runs the four in turn (rotating), back to back then paced.

    Every client gets ``messages`` frames either way: ``whole`` publishes ``messages`` posts,
    each to all ``n``; ``split`` and ``filtered`` publish ``messages × n``, each to one client
    (the same frames, one post each); ``unwatched`` publishes ``unwatched`` posts that reach
    nobody.
    """
    modes = ("burst", "paced")
    _log(f"filtered: {n} clients, {messages} frames each, {unwatched} unwatched posts, {rounds} rounds")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {c: [] for c in FILTERED} for m in modes}
    server = Server()
    clients.start(server.port)
    failed = ""
    try:
        for c in GROUPS:
            clients.connect(c, n)
            clients.burst(server, c, 10, timeout)  # warm-up
        _unwatched(server, 10 * n, False, timeout)
        for r in range(rounds):
            for mode in modes:
                paced = mode == "paced"
                for c in _rotation(r, FILTERED):
                    time.sleep(0.2)
                    if c == "unwatched":
                        run = _unwatched(server, unwatched, paced, timeout)
                    else:
                        run = clients.burst(server, c, messages, timeout, paced=paced)
                        run.update(frames=n * messages, published=messages if c == "whole" else n * messages)
                        if not run["timed_out"] and (run["delivered_share"] != 1.0 or run["extra_frames"]):
                            raise RuntimeError(f"{c}: expected {messages} frames per client, got "
                                               f"{run['delivered_share']:.0%} of them and {run['extra_frames']} more")
                    if run["timed_out"]:
                        failed = f"{c}, {mode}: not done within {timeout:.0f} s"
                        raise RuntimeError(failed)
                    runs[mode][c].append(run)
                last = {c: runs[mode][c][-1] for c in FILTERED}
                _log(f"  filtered, {n} clients, {mode}: round {r + 1}/{rounds}: µs of server CPU per frame: "
                     + ", ".join(f"{c} {last[c]['server_cpu_s'] * 1e6 / last[c]['frames']:.2f}" for c in GROUPS)
                     + f"; per unwatched post {last['unwatched']['server_cpu_s'] * 1e6 / unwatched:.2f}")
        hub_stats = {c: server.get(f"/stats?contender={c}") for c in GROUPS}
        for c in GROUPS:
            clients.close(c)
    except RuntimeError as exc:
        failed = failed or str(exc)
        _log(f"  filtered, {n} clients: stopped: {failed}")
        hub_stats = {}
    finally:
        clients.stop()
        log = server.stop()
    return {"clients": n, "messages": messages, "unwatched": unwatched, "rounds": rounds, "runs": runs,
            "hub_stats": hub_stats, "server": server.info, "server_log": log, "failed": failed}


def run_single(
    clients: Clients, n: int, stalled: int, repeats: int, rounds: int, timeout: float, contenders: tuple[str, ...],
) -> dict[str, Any]:
    """One notification at a time: from the server starting to publish it to the last client's
    receipt, ``repeats`` times, then the same with ``stalled`` of the ``n`` clients stalled
    (buffers filled as in ``run_stalled``). A fresh server per contender and round. A
    broadcast that does not reach every healthy client within ``timeout`` ends that series:
    the contender is blocked behind its stalled clients.
    """
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}

    def series(server: Server, c: str) -> dict[str, Any]:
        seconds: list[float] = []
        gc_s: list[float] = []  # the server's garbage collections around each broadcast
        for _ in range(repeats):
            time.sleep(0.05)
            run = clients.burst(server, c, 1, timeout)
            if run["timed_out"] or run["publish_to_last_s"] is None:
                return {"seconds": seconds, "gc_s": gc_s, "blocked": True, "delivered_share": run["delivered_share"]}
            seconds.append(run["publish_to_last_s"])
            gc_s.append(run["server_gc_s"])
        return {"seconds": seconds, "gc_s": gc_s, "blocked": False}

    def show(x: dict[str, Any]) -> str:
        v = x["seconds"]
        text = f"p50 {statistics.median(v) * 1e3:.1f} ms, max {max(v) * 1e3:.1f} ms" if v else ""
        return text + (f"{'; ' if v else ''}blocked after {len(v)}" if x["blocked"] else "")

    info: dict[str, Any] = {}

    def step(r: int, c: str, server: Server) -> None:
        info.update(server.info)
        healthy, prefill, with_stalled = _with_stalled(clients, server, c, n, stalled, lambda _: series(server, c))
        _finish(clients, server, c)
        runs[c].append({"unstalled": healthy, "stalled": with_stalled, "prefill": prefill, "server_log": server.counts})
        _log(f"  one broadcast to {n - stalled}: round {r + 1}/{rounds}: {c}: {show(healthy)}; "
             f"with {stalled} stalled: {show(with_stalled)}")

    _each_server(clients, rounds, contenders, step)
    return {"clients": n, "stalled": stalled, "repeats": repeats, "timeout_s": timeout, "runs": runs, "server": info}


def run_workers(
    n: int, workers: int, messages: int, rounds: int, procs: int, timeout: float = BURST_TIMEOUT,
) -> dict[str, Any]:
    """``--workers``: the hub through Redis served by ``workers`` uvicorn processes against one,
    the same ``n`` clients either way, in the same run.

    One server with all ``n`` clients on a Redis stream of its own; ``workers`` servers that
    share another stream, each on a port of its own with ``n / workers`` of the clients (as a
    load balancer spreading connections evenly would; one port shared by uvicorn's
    ``--workers`` would leave the split to the kernel's accept order, and the driver could not
    tell which process its request reached). Both sets are connected throughout (an idle
    connection costs no CPU); each round a burst on each in turn, the order rotating. A
    workers burst is published in one of them (each round the next) and reaches the others'
    clients through Redis; the time runs from the request to the last client's last frame,
    whichever server it is on. Separate load-generating processes per set, ``procs`` each
    (for the workers, a multiple of ``workers``, split evenly over the ports).
    """
    if REDIS is None:
        return {"clients": n, "workers": workers, "failed": "no Redis for this run", "runs": {"one": [], "workers": []}}
    _log(f"workers: {n} clients, one server against {workers} sharing a Redis stream, bursts of {messages}, "
         f"{rounds} rounds")
    runs: dict[str, list[dict[str, Any]]] = {"one": [], "workers": []}
    failed = ""
    servers: list[Server] = []
    sets: dict[str, Clients] = {}
    logs: list[dict[str, int]] = []
    try:
        one = Server(redis=True)
        servers.append(one)
        shared = REDIS.new_stream()
        pool = [Server(redis=True, stream=shared) for _ in range(workers)]
        servers += pool
        wprocs = -(-procs // workers) * workers
        sets = {"one": Clients(procs, REDIS.cpu), "workers": Clients(wprocs, REDIS.cpu)}
        sets["one"].start(one.port)
        sets["workers"].start([w.port for w in pool])
        for name, c in sets.items():
            t = time.perf_counter()
            c.connect("redis", n)
            _log(f"  connected {n} clients ({name}) in {time.perf_counter() - t:.1f} s")
        sets["one"].burst(one, "redis", 20, timeout)  # warm-up
        for w in pool:  # warm-up, each publishing once
            sets["workers"].burst(w, "redis", 20, timeout, others=[x for x in pool if x is not w])
        for r in range(rounds):
            for name in _rotation(r, ["one", "workers"]):
                time.sleep(0.2)
                if name == "one":
                    run = sets["one"].burst(one, "redis", messages, timeout)
                else:
                    publisher = pool[r % workers]
                    run = sets["workers"].burst(publisher, "redis", messages, timeout,
                                                others=[x for x in pool if x is not publisher])
                    run["publisher"] = r % workers
                if run["timed_out"] or run["delivered_share"] != 1.0:
                    failed = (f"{name}: a burst of {messages} to {n} clients did not finish within {timeout:.0f} s "
                              f"({run['delivered_share']:.0%} delivered)")
                    raise RuntimeError(failed)
                runs[name].append(run)
            _log(f"  workers, {n} clients: round {r + 1}/{rounds}: one server "
                 f"{runs['one'][-1]['deliveries_per_s'] / 1e3:.0f}k/s, {workers} servers "
                 f"{runs['workers'][-1]['deliveries_per_s'] / 1e3:.0f}k/s")
        hub_stats = [s.get("/stats?contender=redis") for s in servers]
    except RuntimeError as exc:
        failed = failed or str(exc)
        _log(f"  workers: stopped: {failed}")
        hub_stats = []
    finally:
        for c in sets.values():
            c.stop()
        logs = [s.stop() for s in servers]
    return {"clients": n, "workers": workers, "messages": messages, "rounds": rounds, "runs": runs,
            "procs": {k: c.procs for k, c in sets.items()}, "hub_stats": hub_stats, "server_log": logs,
            "servers": [s.info for s in servers], "failed": failed, "timeout_s": timeout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="fewer rounds, shorter bursts and stall timeout (~5–6 min)")
    add("--rounds", type=int, help="throughput rounds at --clients[0] (default 7, quick 1; --filtered: 5, quick 1); "
        "3× that for the others")
    add("--clients", type=int, nargs="+",
        help="throughput client counts (default 1000 100 5000; --filtered: 1000 100); the first also for "
        "paced bursts, stalls and one-broadcast latency")
    add("--messages", type=int, help="notifications per burst (default 200, quick 100); above 1,000 clients "
        "scaled down to keep clients × messages constant (at least 10)")
    add("--stalled", type=int, help="stalled clients (of the first --clients; default 1%% of them, 10 at 1,000)")
    add("--stall-timeout", type=float, help="seconds (default 15, quick 5)")
    add("--idle", type=int, default=1000, help="idle connections for the memory measure (10000: the 10k case)")
    add("--only", nargs="+", choices=SCENARIOS, metavar="SCENARIO",
        help=f"run only these scenarios, of {', '.join(SCENARIOS)} (default: all but workers); "
        "e.g. --only single for the one-notification latency alone")
    add("--workers", type=int, default=0, metavar="N",
        help="also the workers scenario: the hub via Redis served by N uvicorn processes (two ports, clients "
        "split evenly) against one, total deliveries/s, at the first --clients (needs Redis)")
    add("--client-procs", type=int,
        help="load-generating processes (default: 1 up to 2,000 clients, 2 up to 5,000, one per 2,500 above)")
    # 100: a p99 needs at least 100 values, or it is the maximum (nearest rank: one scheduling
    # hiccup of this two-core machine in 90 broadcasts was the "p99").
    add("--single-repeats", type=int, default=100,
        help="one-notification broadcasts per series (publish → last client; default 100: p99 needs 100)")
    add("--single-rounds", type=int, help="default 3, quick 1")
    add("--out", help="results/<out>.json, .md and -*.png (default broadcast, or broadcast-deflate; with --only or "
        "--workers, -<scenarios> appended, e.g. broadcast-single)")
    add("--pin", action="store_true",
        help="servers on the first CPU, client processes on the others (harness.pin): steadier tails")
    add("--deflate", action="store_true",
        help="per-message compression on (clients offer it, as browsers do); writes broadcast-deflate.*")
    add("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
        help="run only these (the bare loop always runs: every ratio is to it)")
    add("--filtered", action="store_true",
        help="only issue 12's scenario: server CPU per frame, clients each watching a forum of their own against "
        "clients each of a collection of their own and clients of the whole collection, and per post to forums "
        "nobody watches (~12 min, --quick ~3; writes broadcast-filtered.*)")
    add("--unwatched", type=int, help="--filtered: posts to forums nobody watches per round (default 200,000, quick 50,000)")
    args = parser.parse_args()
    if args.filtered and args.rounds is None:  # its rounds are long: 200,000 posts each way
        args.rounds = 1 if args.quick else 5
    presets(args, QUICK, FULL)
    args.clients = args.clients or ([1000, 100] if args.filtered else [1000, 100, 5000])
    if args.stalled is None:
        args.stalled = max(1, args.clients[0] // 100)  # 1%, as issue 14 asks
    args.only = args.only or [s for s in SCENARIOS if s != "workers" or args.workers]
    if "workers" in args.only and args.workers < 2:
        args.workers = 2
    # Every process (the servers, the clients' processes) inherits it: the hard limit, as ever
    # (5,000 clients: three contenders a server), and above it where the largest count needs it
    # and this process may (CAP_SYS_RESOURCE).
    most = max([*args.clients, *([args.idle] if "memory" in args.only else [])])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # RLIM_INFINITY is -1: then fd_need(most)
    if raise_nofile(max(fd_need(most), hard)) < most + 1000:
        raise SystemExit(f"{most} clients need RLIMIT_NOFILE >= {most + 1000} (have {_fd_limit()}): "
                         f"raise the hard limit first (ulimit -Hn {fd_need(most)}, as root)")
    for key in ("BENCH_REDIS_URL", "BENCH_REDIS_STREAM"):  # each server gets its own, or none
        os.environ.pop(key, None)
    if args.deflate:
        os.environ["BENCH_DEFLATE"] = "1"  # before the client processes start
    if args.pin:
        if len(os.sched_getaffinity(0)) < 2:
            raise SystemExit(f"--pin expected at least 2 CPUs to use, got {len(os.sched_getaffinity(0))}")
        os.environ["BENCH_PIN"] = "1"  # before any server or client process starts (harness.pin)
    if args.filtered:
        _measure_filtered(args, Clients(client_procs(max(args.clients), args.client_procs)))
        return
    contenders = tuple(c for c in CONTENDERS if c in args.contenders or c == "bare")
    skipped: dict[str, str] = {}
    global REDIS
    if "redis" in contenders or "workers" in args.only:
        target = Redis.connect("bench_broadcast")
        if isinstance(target, str):
            skipped["redis"] = target
            contenders = tuple(c for c in contenders if c != "redis")
            _log(f"{LABELS['redis']}: skipped: {target}")
        else:
            REDIS = target
    # A SIGTERM (run_all.py's time limit) unwinds like Ctrl-C: servers stopped, streams deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        _measure(args, contenders, skipped)
    finally:
        if REDIS is not None:
            REDIS.drop_all()


def _measure_filtered(args: argparse.Namespace, clients: Clients) -> None:
    """``--filtered``: :func:`run_filtered` at each client count, the table on stdout and
    results/<name>.json and .md (default ``broadcast-filtered``)."""
    started = time.monotonic()
    code = git_state()
    blocks = [run_filtered(clients, n, args.messages, args.unwatched, args.rounds) for n in args.clients]
    summary = filtered_summary(blocks)
    table = filtered_render(summary)
    print(table)
    server = blocks[0]["server"]
    meta = {
        **base_meta(code), **{k: server[k] for k in ("fastapi", "uvicorn", "websockets", "msgspec", "sqla_notify")},
        "server_loop": server["loop"], "deflate": args.deflate, "clients": args.clients, "messages": args.messages,
        "unwatched": args.unwatched, "rounds": args.rounds, "quick": args.quick,
        "duration_s": round(time.monotonic() - started),
    }
    name = args.out or "broadcast-filtered"
    write(name, {"meta": meta, "summary": summary, "runs": blocks}, filtered_markdown(meta, table), indent=2)
    _log(f"\nwrote {RESULTS / name}.json and {name}.md ({meta['duration_s']} s)")
    if summary["failed"]:
        raise SystemExit(f"not measured to the end: {summary['failed']}")


def _messages(messages: int, n: int) -> int:
    """Notifications per burst at ``n`` clients: above 1,000, as many deliveries as 1,000 would get (at least 10)."""
    return messages if n <= 1000 else max(10, messages * 1000 // n)


def _server_info(*parts: Any) -> dict[str, Any]:
    """A server's ``/info`` (versions, loop, limits) from whichever scenario ran; ``{}`` if none recorded one."""
    for part in parts:
        blocks = part if isinstance(part, list) else [part]
        for b in blocks:
            if not b:
                continue
            info = b.get("server") or (b.get("servers") or [None])[0]
            if info:
                return dict(info)
    return {}


def _measure(args: argparse.Namespace, contenders: tuple[str, ...], skipped: dict[str, str]) -> None:
    """The scenarios of ``--only``, then the table on stdout and results/<name>.json, .md and plots."""
    started = time.monotonic()
    code = git_state()  # before the run: what the servers import
    only = set(args.only)
    redis_cpu = None if REDIS is None else REDIS.cpu
    first = args.clients[0]
    procs = {n: client_procs(n, args.client_procs) for n in {*args.clients, args.idle}}
    throughput = []
    for i, n in enumerate(args.clients if "throughput" in only else []):
        # Smaller client counts make short, noisy bursts: more rounds (they are cheap); larger
        # ones long bursts and connections: fewer.
        block_rounds = args.rounds if n == first else 3 * args.rounds if n < first else max(1, (args.rounds + 1) // 2)
        messages = _messages(args.messages, n)
        throughput.append(run_throughput(Clients(procs[n], redis_cpu), n, messages, block_rounds, i == 0, contenders))
    clients = Clients(procs[first], redis_cpu)
    stalled = single = memory = workers = None
    if "stalled" in only:
        _log(f"stalled clients: {args.stalled} of {first}, {args.stall_rounds} rounds")
        stalled = run_stalled(clients, first, args.stalled, _messages(args.messages, first), args.stall_rounds,
                              args.stall_timeout, contenders)
    if "single" in only:
        _log(f"one broadcast: {args.single_repeats} notifications one at a time to {first - args.stalled} clients, "
             f"then with {args.stalled} more stalled, {args.single_rounds} rounds")
        single = run_single(clients, first, args.stalled, args.single_repeats, args.single_rounds, args.single_timeout,
                            contenders)
    if "memory" in only:
        _log(f"memory: {args.idle} idle connections, {args.memory_rounds} rounds")
        memory = run_memory(Clients(procs[args.idle], redis_cpu), args.idle, args.memory_rounds, contenders)
    if "workers" in only:
        workers = run_workers(first, args.workers, _messages(args.messages, first), args.rounds, procs[first])
        if workers["failed"]:
            skipped["workers"] = workers["failed"]

    summary = summarize(throughput, stalled, memory, single, skipped, workers)
    table = render(summary, stalled, memory, single, workers)
    print(table)

    server = _server_info(throughput, stalled, single, memory, workers)
    meta = {
        **base_meta(code),
        **{k: server.get(k) for k in (
            "fastapi", "starlette", "uvicorn", "websockets", "msgspec", "sqla_notify", "broadcaster",
            "python-socketio", "python-engineio",
        )},
        "server_loop": server.get("loop"), "pinned": args.pin,
        "uvicorn_settings": f"--ws-per-message-deflate {str(args.deflate).lower()} --log-level warning (ws: auto = websockets-sansio)",
        "scenarios": [s for s in SCENARIOS if s in only], "client_procs": {str(n): p for n, p in sorted(procs.items())},
        # The client processes' limit is checked against the driver's at every connect.
        "nofile": {"driver": _fd_limit(), "server": server.get("nofile")}, "messages": args.messages,
        "messages_per_clients": {b["clients"]: b["messages"] for b in throughput},
        "throughput_rounds": {b["clients"]: b["rounds"] for b in throughput},
        "single_repeats": args.single_repeats, "single_rounds": args.single_rounds,
        "single_timeout_s": args.single_timeout, "clients": args.clients, "rounds": args.rounds,
        "stall_rounds": args.stall_rounds, "memory_rounds": args.memory_rounds, "stalled": args.stalled,
        "stall_timeout_s": args.stall_timeout, "idle_connections": args.idle, "queue_size": server.get("queue_size"),
        "workers": args.workers if workers is not None else None,
        "contenders": list(contenders), "skipped": skipped,
        "redis": None if REDIS is None else {
            "url": REDIS.url, "server": REDIS.version, "redis-py": REDIS.redis_py, "streams": f"{REDIS.prefix}:<n>",
        },
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started),
    }
    name = args.out or ("broadcast-deflate" if args.deflate else "broadcast")
    if not args.out and only != set(SCENARIOS) - {"workers"}:  # a part: not over the full run's files
        name += "-" + "-".join(s for s in SCENARIOS if s in only)
    write(name, {"meta": meta, "summary": summary, "throughput": throughput, "stalled": stalled, "memory": memory,
                 "single": single, "workers": workers}, markdown(meta, throughput, table), indent=2)
    _log(f"\nwrote {RESULTS / name}.json and {name}.md ({meta['duration_s']} s)")
    try:
        import plots  # benchmarks/plots.py, next to this file
    except ImportError as exc:  # matplotlib missing
        _log(f"no plots: {exc}")
    else:
        for path in plots.plot_broadcast(RESULTS / f"{name}.json", RESULTS, name):
            _log(f"wrote {path}")


if __name__ == "__main__":
    main()
