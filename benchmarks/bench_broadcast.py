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

The hub via Redis gets a stream per server (``bench_broadcast:<pid>-<random>:<n>``, deleted
after); Redis comes from ``--redis-url``; unreachable, that contender is skipped with the
reason. ``results/broadcast.md`` (the notes above its tables) and ``benchmarks/README.md``
describe the method in full.

    python benchmarks/bench_broadcast.py              # about 28 minutes
    python benchmarks/bench_broadcast.py --quick      # about 5–6 minutes, noisier
    python benchmarks/bench_broadcast.py --quick --clients 1000 100   # about 3.5 minutes
    python benchmarks/bench_broadcast.py --quick --contenders notify redis   # with the bare loop
    python benchmarks/bench_broadcast.py --profile /tmp/prof   # cProfile one burst per contender

Writes ``benchmarks/results/broadcast.json`` and ``broadcast.md``, and with matplotlib
``broadcast-throughput.png`` and ``broadcast-one-broadcast.png`` (``plots.py``).
"""

from __future__ import annotations

import argparse
import os
import pstats
import resource
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from contenders import ORDER as CONTENDERS
from harness import RESULTS, base_meta, git_state, log as _log, percentile, raise_nofile, rotation as _rotation
from harness import Server as _Server, spread as _spread, write
from loadgen import HUBS, Clients

MODES = {"burst": "back to back", "paced": "paced"}
LABELS = {
    "bare": "bare `await ws.send_text` loop",
    "manager": "FastAPI docs' ConnectionManager",
    "notify": "sqla_notify Hub + notify_router",
    "redis": "sqla_notify Hub via Redis + notify_router",
    "broadcaster": "broadcaster `memory://` (its README's endpoint)",
    "socketio": "python-socketio `sio.emit` to all",
}
SERVER_LOG = Path(f"/tmp/bench_broadcast-{os.getpid()}.log")  # the servers' stderr


class RedisUnavailable(RuntimeError):
    """A server's Redis hub did not connect: the Redis contender cannot run there."""


class RedisTarget:
    """The Redis server behind the ``redis`` contender, seen from the driver.

    Every benchmark server that serves the Redis contender gets a stream of its own,
    ``bench_broadcast:<this run>:<n>``, deleted when the server stops (and any left over at
    the end of the run): each server starts from an empty stream, as the in-process hub starts
    from an empty window, and nothing else sharing this Redis (tests, another run) reads or
    writes it. :meth:`cpu` is Redis's own CPU time, for the share it takes of the burst.

    :raises ImportError: without redis-py; :raises redis.RedisError, OSError: if unreachable.
    """

    def __init__(self, url: str) -> None:
        import redis  # the bench extra; without it the contender is skipped

        self.url = url
        self.error = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.client.ping()
        self.version = str(self.client.info("server")["redis_version"])
        self.redis_py = redis.__version__
        self.prefix = f"bench_broadcast:{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.streams: set[str] = set()
        self._count = 0

    def new_stream(self) -> str:
        self._count += 1
        stream = f"{self.prefix}:{self._count}"
        self.streams.add(stream)
        return stream

    def drop(self, stream: str) -> None:
        """Delete ``stream``; a failure is logged, and the stream retried at :meth:`drop_all`."""
        try:
            self.client.delete(stream)
            self.streams.discard(stream)
        except self.error as exc:
            _log(f"  could not delete Redis stream {stream}: {type(exc).__name__}: {exc}")

    def drop_all(self) -> None:
        for stream in sorted(self.streams):
            self.drop(stream)

    def cpu(self) -> float | None:
        """Redis's CPU seconds so far (user + system, all its threads); ``None`` if it does not answer."""
        try:
            info = self.client.info("cpu")
        except self.error:
            return None
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


#: Set by main() when the Redis contender runs (a global, like BENCH_DEFLATE for the clients).
REDIS: RedisTarget | None = None


def _connect_redis(url: str) -> RedisTarget | str:
    """The Redis target, or why the Redis contender cannot run."""
    try:
        return RedisTarget(url)
    except ImportError as exc:
        return f'redis-py is not installed ({exc}): pip install "sqla_notify[redis]"'
    except Exception as exc:  # noqa: BLE001 - redis.RedisError or OSError: unreachable, refused...
        return f"Redis unreachable at {url}: {type(exc).__name__}: {exc}"



class Server(_Server):
    """A uvicorn process serving broadcast_server:app, with every contender.

    ``redis``: also serve the Redis contender, on a stream of its own (see
    :class:`RedisTarget`); the server is ready once its broker has connected.

    :raises RedisUnavailable: if the Redis hub did not connect.
    """

    def __init__(self, queue_size: int, redis: bool = False) -> None:
        env = {"BENCH_QUEUE_SIZE": str(queue_size)}
        self.stream: str | None = None
        if redis:
            if REDIS is None:
                raise RedisUnavailable("no Redis for this run")
            self.stream = REDIS.new_stream()
            env.update(BENCH_REDIS_URL=REDIS.url, BENCH_REDIS_STREAM=self.stream)
        # cwd inherited: PYTHONPATH may pick the sqla_notify checkout to measure.
        super().__init__("broadcast_server:app", SERVER_LOG, env=env, cwd=None,
                         deflate=os.environ.get("BENCH_DEFLATE") == "1")
        if self.info["pid"] != self.proc.pid:
            self.stop()
            raise RuntimeError(f"expected the server's pid {self.proc.pid} at port {self.port}, got {self.info['pid']}")
        if redis and self.info["redis"]["broker"] != "connected":
            self.stop()
            raise RedisUnavailable(
                f"the server's Redis broker did not connect to {env['BENCH_REDIS_URL']} within 10 s "
                f"(state: {self.info['redis']['broker']})"
            )

    def stop(self) -> dict[str, int]:
        """Stop the server; count the errors it logged and, with the Redis contender, its
        broker's failed calls and gaps; delete its stream."""
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
        return {**counts, **broker}


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
buffers are filled until sending to them blocks before the measured burst, which then has
`--stall-timeout` or three times its unstalled time, whichever is longer. The manager does
the same work as the bare loop: its ratio to it shows how noisy the machine was.
*broadcaster*: `Broadcast("memory://")` behind the endpoint of its README (per connection a
task group, an unbounded queue and a sender task; `await broadcast.publish(channel, text)` per
notification). *python-socketio*: `AsyncServer(async_mode="asgi")` with default settings,
`await sio.emit("n", message)` per notification (one task per client per emit, an unbounded
queue and a writer task per client); its clients speak Engine.IO v4 (join with `40`, answer
pings) and only its `42[...]` event frames are counted. For these two, *server hand-off* ends
when every healthy client's queue is empty. *Hub via Redis*: a second hub in the same
server, `Hub(broker=RedisBroker(url, stream=...))` behind the same `notify_router`, a stream
per server (empty at its start, deleted after); `publish` queues each notification for the
broker, which writes it to the stream (pipelined `XADD`s) and delivers it to this
process's clients only when the hub's `XREAD` has read it back, so every figure includes
that round trip; its *server hand-off* ends when all of them were read back and are in
every healthy client's transport; *+ Redis* is Redis's own CPU over the burst (same two
CPUs). Paced makes less difference through Redis: the broker writes what was queued while
its last write was in flight in one go, and the reader delivers what one `XREAD` returns in
one loop step, so the writers see batches again. Its ratio to the in-process hub (targets
table) is paired within one server and round, like the ratios to the bare loop. *Not
measured*: a contender whose burst did not finish within the bound, or that could not
connect every client, at that client count. Above the file-descriptor limit (20,000) the
contenders are connected in turns of three, each turn with the bare loop (the two hubs in
the same turn), so ratios stay paired within one server and round.
*One notification*: from the server starting to publish it to the last healthy client's
receipt (all processes read CLOCK_MONOTONIC), one notification at a time, 50 ms apart; a
fresh server per contender and round; "with stalled": the stalled clients' buffers are full
first, as above. p99 pools every round; per-round figures
show the spread (with 30 to 90 samples, p99 is the largest or next to it)."""



def _fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _groups(n: int, contenders: list[str]) -> list[list[str]]:
    """Contenders connected at once to one server: as many as its file descriptors allow.

    When all of them do not fit (5,000 clients each against a limit of 20,000), every group
    has the bare loop, so each contender's ratio to it is still paired within a server and round;
    the two hubs (in-process and through Redis) come first, so that they share a server too.
    """
    fit = (_fd_limit() - 1000) // n
    if fit >= len(contenders):
        return [list(contenders)]
    if fit < 2:
        raise SystemExit(f"{n} clients need RLIMIT_NOFILE > {2 * n + 1000} (have {_fd_limit()})")
    others = sorted((c for c in contenders if c != "bare"), key=lambda c: c not in HUBS)  # stable
    return [["bare", *others[i:i + fit - 1]] for i in range(0, len(others), fit - 1)]



def _start(queue_size: int, contender: str) -> Server | None:
    """A fresh server for one contender; ``None`` (logged) if it is the Redis contender and
    its hub cannot reach Redis: that round goes without it."""
    try:
        return Server(queue_size, redis=contender == "redis")
    except RedisUnavailable as exc:
        _log(f"  {contender}: round skipped: {exc}")
        return None


# -- the four measurements ------------------------------------------------------------------


def run_throughput(
    clients: Clients, n: int, messages: int, rounds: int, queue_size: int, paced: bool,
    timeout: float = 120.0, contenders: tuple[str, ...] = CONTENDERS,
) -> dict[str, Any]:
    """Bursts to ``n`` clients of each contender, all connected at once, rounds interleaved.

    A contender whose burst does not finish within ``timeout`` is recorded as such and not
    measured again at this client count; one that cannot connect ``n`` clients likewise, and
    the Redis contender if its hub cannot reach Redis. Each run records the bare loop's rate in
    the same server and round; the Redis hub's runs also the in-process hub's.
    """
    modes = ["burst", "paced"] if paced else ["burst"]
    groups = _groups(n, list(contenders))
    _log(
        f"throughput: {n} clients, bursts of {messages}, {rounds} rounds, {' and '.join(modes)}"
        + (f"; {len(groups)} servers in turn: " + " | ".join(", ".join(g) for g in groups) if len(groups) > 1 else "")
    )
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {c: [] for c in contenders} for m in modes}
    failed: dict[str, str] = {}
    hub_stats: dict[str, Any] = {}
    info: dict[str, Any] = {}
    logs = []
    for group in groups:
        try:
            server = Server(queue_size, redis="redis" in group)
        except RedisUnavailable as exc:
            failed["redis"] = str(exc)
            _log(f"  redis: {exc}; not measured at {n} clients")
            group = [c for c in group if c != "redis"]
            server = Server(queue_size)
        info = server.info
        clients.start(server.port)
        try:
            live = []
            for c in group:
                t = time.perf_counter()
                try:
                    clients.connect(c, n)
                    live.append(c)
                    _log(f"  connected {n} {c} clients in {time.perf_counter() - t:.1f} s")
                except RuntimeError as exc:
                    failed[c] = f"could not connect {n} clients: {exc}"
                    _log(f"  {c}: {failed[c]}")
            for c in live:  # warm-up
                clients.burst(server, c, 20, timeout)
            for r in range(rounds):
                for mode in modes:
                    this_round: dict[str, dict[str, Any]] = {}
                    for c in _rotation(r, live):
                        if c in failed:
                            continue
                        time.sleep(0.2)
                        run = clients.burst(server, c, messages, timeout, paced=mode == "paced")
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
                    for run in this_round.values():  # paired with the bare loop of the same server and round
                        run["bare_deliveries_per_s"] = bare["deliveries_per_s"] if bare else None
                    if "redis" in this_round:  # and the hub through Redis with the in-process hub
                        hub = this_round.get("notify")
                        this_round["redis"]["hub_deliveries_per_s"] = hub["deliveries_per_s"] if hub else None
                    _log(
                        f"  throughput, {n} clients, {mode}: round {r + 1}/{rounds}: "
                        + ", ".join(f"{c} {run['deliveries_per_s'] / 1e3:.0f}k/s" for c, run in this_round.items())
                    )
            for h in HUBS:
                if h in group:
                    hub_stats[h] = server.get(f"/stats?contender={h}")
            for c in group:
                clients.close(c)
        finally:
            clients.stop()
            logs.append(server.stop())
    return {
        "clients": n, "messages": messages, "rounds": rounds, "runs": runs, "hub_stats": hub_stats, "server": info,
        "server_log": logs, "groups": groups, "failed": failed, "timeout_s": timeout,
    }


def run_stalled(
    clients: Clients, n: int, stalled: int, messages: int, rounds: int, timeout: float, queue_size: int,
    contenders: tuple[str, ...] = CONTENDERS,
) -> dict[str, Any]:
    """One burst to ``n - stalled`` clients, then the same with ``stalled`` more whose buffers
    were filled until sending to them blocks; a fresh server per contender and round."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    info: dict[str, Any] = {}
    for r in range(rounds):
        for c in _rotation(r, contenders):
            server = _start(queue_size, c)
            if server is None:
                continue
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
                # Slow contenders get three times their unstalled time, if that is longer.
                limit = max(timeout, 3 * before["completion_s"])
                during = clients.burst(server, c, messages, limit)
                hub_stats = server.get(f"/stats?contender={c}") if c in HUBS else None
                clients.close(c)
            finally:
                clients.stop()
                log = server.stop()
            runs[c].append({
                "unstalled": before, "stalled": during, "timeout_s": limit, "prefill": prefill, "hub_stats": hub_stats,
                "server_log": log,
            })
            state = (
                f"timed out after {limit:.0f} s, "
                f"{during['delivered_share']:.1%} delivered" if during["timed_out"]
                else f"{during['completion_s'] * 1e3:.0f} ms"
            )
            _log(
                f"  stalled clients: round {r + 1}/{rounds}: {c}: unstalled "
                f"{before['completion_s'] * 1e3:.0f} ms, with {stalled} stalled: {state} "
                f"(prefill: {prefill['blocked']}/{prefill['stalled']} blocked)"
            )
    return {"clients": n, "stalled": stalled, "messages": messages, "timeout_s": timeout, "runs": runs, "server": info}


def run_memory(
    clients: Clients, n: int, rounds: int, queue_size: int, contenders: tuple[str, ...] = CONTENDERS,
) -> dict[str, Any]:
    """The server's RSS before and after ``n`` idle connections; a fresh server per contender
    and round (the Redis hub's reader and connections are in both measures)."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for r in range(rounds):
        for c in _rotation(r, contenders):
            server = _start(queue_size, c)
            if server is None:
                continue
            clients.start(server.port)
            try:
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
                clients.close(c)
            finally:
                clients.stop()
                log = server.stop()
            per = (after["rss"] - before["rss"]) / n
            runs[c].append({
                "round": r, "rss_before": before["rss"], "rss_after": after["rss"], "per_connection": per,
                "server_log": log,
            })
            _log(f"  memory: round {r + 1}/{rounds}: {c}: {per / 1024:.1f} KiB per connection")
    return {"connections": n, "runs": runs}


def run_single(
    clients: Clients, n: int, stalled: int, repeats: int, rounds: int, timeout: float, queue_size: int,
    contenders: tuple[str, ...] = CONTENDERS,
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

    for r in range(rounds):
        for c in _rotation(r, contenders):
            server = _start(queue_size, c)
            if server is None:
                continue
            clients.start(server.port)
            try:
                clients.connect(c, n - stalled)
                clients.burst(server, c, 20, 30)  # warm-up
                time.sleep(0.2)
                healthy = series(server, c)
                clients.connect(c, 0, stalled)
                prefill = server.post(f"/prefill/{c}", 60)
                time.sleep(0.2)
                with_stalled = series(server, c)
                clients.close(c)
            finally:
                clients.stop()
                log = server.stop()
            runs[c].append({"unstalled": healthy, "stalled": with_stalled, "prefill": prefill, "server_log": log})

            def show(x: dict[str, Any]) -> str:
                v = x["seconds"]
                text = f"p50 {statistics.median(v) * 1e3:.1f} ms, max {max(v) * 1e3:.1f} ms" if v else ""
                return text + (f"{'; ' if v else ''}blocked after {len(v)}" if x["blocked"] else "")

            _log(
                f"  one broadcast to {n - stalled}: round {r + 1}/{rounds}: {c}: {show(healthy)}; "
                f"with {stalled} stalled: {show(with_stalled)}"
            )
    return {"clients": n, "stalled": stalled, "repeats": repeats, "timeout_s": timeout, "runs": runs}


def run_profile(
    clients: Clients, n: int, messages: int, out: Path, queue_size: int, contenders: tuple[str, ...] = CONTENDERS,
) -> None:
    """cProfile of the server's loop thread during one burst per contender and mode (to stderr)."""
    out.mkdir(parents=True, exist_ok=True)
    server = Server(queue_size, redis="redis" in contenders)
    clients.start(server.port)
    try:
        for c in contenders:
            clients.connect(c, n)
            clients.burst(server, c, 20, 30)
        for mode, label in MODES.items():
            for c in contenders:
                path = out / f"broadcast-{c}-{mode}.prof"
                server.post("/profile/start")
                run = clients.burst(server, c, messages, 120, paced=mode == "paced")
                server.post(f"/profile/stop?path={path}")
                _log(f"\n== {c}, {label}: {run['completion_s'] * 1e3:.0f} ms under cProfile; {path}")
                stats = pstats.Stats(str(path), stream=sys.stderr)
                stats.strip_dirs().sort_stats("tottime").print_stats(25)
        for c in contenders:
            clients.close(c)
    finally:
        clients.stop()
        server.stop()


# -- report ---------------------------------------------------------------------------------


def _ms(s: float) -> str:
    return f"{s * 1e3:.0f}"


def _throughput_rows(block: dict[str, Any], mode: str, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for c in (c for c in CONTENDERS if c in runs):
        if not runs[c]:
            rows.append({
                "clients": block["clients"], "messages": block["messages"], "mode": mode, "contender": c,
                "failed": block.get("failed", {}).get(c, "not measured"),
            })
            continue
        rate = [r["deliveries_per_s"] for r in runs[c]]
        # Paired: the bare loop's burst of the same server and round, a few seconds apart.
        ratio = [r["deliveries_per_s"] / r["bare_deliveries_per_s"] for r in runs[c] if r.get("bare_deliveries_per_s")]
        # The hub through Redis against the in-process hub, paired likewise.
        to_hub = [r["deliveries_per_s"] / r["hub_deliveries_per_s"] for r in runs[c] if r.get("hub_deliveries_per_s")]
        handoff = [r["server_handoff_s"] for r in runs[c] if r["server_handoff_s"] is not None]
        redis_cpu = [r["redis_cpu_s"] / r["completion_s"] for r in runs[c] if r.get("redis_cpu_s") is not None]
        rows.append({
            "clients": block["clients"], "messages": block["messages"], "mode": mode, "contender": c,
            "rounds": len(runs[c]),
            "deliveries_per_s": _spread(rate), "ratio_to_bare": _spread(ratio) if ratio else None,
            "ratio_to_hub": _spread(to_hub) if to_hub else None,
            "completion_s": _spread([r["completion_s"] for r in runs[c]]),
            "server_handoff_s": statistics.median(handoff) if handoff else None,
            "server_cpu_share": statistics.median(r["server_cpu_s"] / r["completion_s"] for r in runs[c]),
            "redis_cpu_share": statistics.median(redis_cpu) if redis_cpu else None,
            "server_gc_s": statistics.median(r["server_gc_s"] for r in runs[c]),
            "busiest_client_cpu_share": statistics.median(
                max(r["client_cpu_s"]) / r["completion_s"] for r in runs[c]
            ),
            "failed": block.get("failed", {}).get(c),  # measured, then a later burst timed out
        })
    return rows


def _single_rows(single: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for c in (c for c in CONTENDERS if single["runs"].get(c)):
        row: dict[str, Any] = {"contender": c}
        for kind in ("unstalled", "stalled"):
            series = [r[kind] for r in single["runs"][c]]
            pooled = [x for s in series for x in s["seconds"]]
            complete = [s["seconds"] for s in series if s["seconds"] and not s["blocked"]]
            row[kind] = {
                "broadcasts": len(pooled),
                "p50_s": statistics.median(pooled) if pooled else None,
                "p99_s": percentile(pooled, 0.99) if pooled else None,
                "round_p50_s": _spread([statistics.median(v) for v in complete]) if complete else None,
                "round_p99_s": _spread([percentile(v, 0.99) for v in complete]) if complete else None,
                "blocked_rounds": sum(1 for s in series if s["blocked"]),
                "rounds": len(series),
                "seconds": pooled,
            }
        rows.append(row)
    return rows


def _redis_health(
    throughput: list[dict[str, Any]], stalled: dict[str, Any], memory: dict[str, Any], single: dict[str, Any] | None,
) -> dict[str, int]:
    """Failed Redis calls and gaps (``resync`` for every client) of the Redis hubs, all servers."""
    logs = [log for block in throughput for log in block["server_log"]]
    for part in (stalled, memory, single or {"runs": {}}):
        logs += [r["server_log"] for r in part["runs"].get("redis", [])]
    logs = [log for log in logs if "redis_errors" in log]
    return {
        "servers": len(logs),
        "errors": sum(log["redis_errors"] for log in logs),
        "gaps": sum(log["redis_gaps"] for log in logs),
    }


def summarize(
    throughput: list[dict[str, Any]], stalled: dict[str, Any], memory: dict[str, Any], single: dict[str, Any] | None,
    skipped: dict[str, str] | None = None,
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "throughput": [], "stalled": [], "memory": [], "single": [], "skipped": dict(skipped or {}),
    }
    for block in throughput:
        for mode, runs in block["runs"].items():
            summary["throughput"] += _throughput_rows(block, mode, runs)
    for c in (c for c in CONTENDERS if stalled["runs"].get(c)):
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
            "timeout_s": max(r["timeout_s"] for r in runs),
            "rounds": len(runs),
            "delivered_share_when_timed_out": [
                r["stalled"]["delivered_share"] for r in runs if r["stalled"]["timed_out"]
            ],
            "prefill": [r["prefill"] for r in runs],
            "server_asgi_exceptions": sum(r["server_log"]["asgi_exceptions"] for r in runs),
        })
    bare = {m["round"]: m for m in memory["runs"]["bare"]}
    for c in (c for c in CONTENDERS if memory["runs"].get(c)):
        per = [r["per_connection"] for r in memory["runs"][c]]
        # Paired with the bare loop's server of the same round.
        ratio = [m["per_connection"] / bare[m["round"]]["per_connection"] for m in memory["runs"][c] if m["round"] in bare]
        summary["memory"].append({
            "contender": c, "per_connection": _spread(per), "ratio_to_bare": _spread(ratio) if ratio else None,
        })
    if single is not None:
        summary["single"] = _single_rows(single)
    if "redis" in stalled["runs"]:  # the contender was in this run
        summary["redis"] = _redis_health(throughput, stalled, memory, single)
    return summary


def _range(spread: tuple[float, float, float] | None, scale: float = 1e3, fmt: str = ".1f") -> str:
    if spread is None:
        return "–"
    return f"{spread[0] * scale:{fmt}} ({spread[1] * scale:{fmt}}–{spread[2] * scale:{fmt}})"


def _find(rows: list[dict[str, Any]], **keys: Any) -> dict[str, Any] | None:
    return next((t for t in rows if all(t.get(k) == v for k, v in keys.items())), None)


def render(
    summary: dict[str, Any], stalled: dict[str, Any], memory: dict[str, Any], single: dict[str, Any] | None = None,
) -> str:
    lines = [
        f"**Not measured: {LABELS[c]}**: {reason.rstrip('.')}." for c, reason in summary.get("skipped", {}).items()
    ]
    if lines:
        lines.append("")
    lines += [
        (
            "| clients | burst | contender | deliveries/s (median, min–max) | **vs bare** (median, min–max) "
            "| last frame in (ms) | server hand-off (ms) | server GC (ms) | server CPU | busiest client CPU |"
        ),
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in summary["throughput"]:
        if "deliveries_per_s" not in t:
            lines.append(
                f"| {t['clients']:,} | {MODES[t['mode']]} | {LABELS[t['contender']]} | **not measured**: {t['failed']} "
                "| – | – | – | – | – | – |"
            )
            continue
        med, lo, hi = t["deliveries_per_s"]
        ratio = "–" if t["ratio_to_bare"] is None else (
            f"**{t['ratio_to_bare'][0]:.2f}** ({t['ratio_to_bare'][1]:.2f}–{t['ratio_to_bare'][2]:.2f})"
        )
        handoff = "–" if t["server_handoff_s"] is None else _ms(t["server_handoff_s"])
        note = f" (then: {t['failed']})" if t.get("failed") else ""
        redis_cpu = "" if t.get("redis_cpu_share") is None else f" + Redis {t['redis_cpu_share']:.0%}"
        lines.append(
            f"| {t['clients']:,} | {MODES[t['mode']]} | {LABELS[t['contender']]} | {med / 1e3:.0f}k ({lo / 1e3:.0f}k–{hi / 1e3:.0f}k){note} "
            f"| {ratio} | {_ms(t['completion_s'][0])} | {handoff} "
            f"| {_ms(t['server_gc_s'])} "
            f"| {t['server_cpu_share']:.0%}{redis_cpu} | {t['busiest_client_cpu_share']:.0%} |"
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
                f"{s['timeout_s']:.0f} s, {max(shares):.1%} delivered)"
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
    if single is not None:
        healthy = single["clients"] - single["stalled"]
        lines += [
            "",
            (
                f"| one notification to {healthy:,} clients: publish → last client (ms) | p50 | p99 "
                f"| per-round p50 (median, min–max) | per-round p99 (median, min–max) "
                f"| **with {single['stalled']} more stalled**: p50 | p99 | per-round p50 | per-round p99 |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in summary["single"]:
            cells = []
            for kind in ("unstalled", "stalled"):
                k = row[kind]
                if k["blocked_rounds"]:
                    cells.append(
                        f"**blocked** in {k['blocked_rounds']}/{k['rounds']} rounds: no broadcast reached every "
                        f"healthy client within {single['timeout_s']:g} s | – | – | –"
                    )
                    continue
                cells.append(
                    f"{k['p50_s'] * 1e3:.1f} | **{k['p99_s'] * 1e3:.1f}** | {_range(k['round_p50_s'])} "
                    f"| {_range(k['round_p99_s'])}"
                )
            lines.append(f"| {LABELS[row['contender']]} | {cells[0]} | {cells[1]} |")
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
        ratio = "–" if m["ratio_to_bare"] is None else "**{:.2f}** ({:.2f}–{:.2f})".format(*m["ratio_to_bare"])
        lines.append(f"| {LABELS[m['contender']]} | {med / 1024:.1f} ({lo / 1024:.1f}–{hi / 1024:.1f}) | {ratio} |")
    health = summary.get("redis")
    if health is not None:
        lines += ["", (
            f"Redis during this run ({health['servers']} servers with a Redis hub, a stream each): "
            + ("no failed Redis call, no gap." if not (health["errors"] or health["gaps"]) else
               f"**{health['errors']} failed Redis call(s), {health['gaps']} gap(s)** (every client told to "
               "resync): the Redis hub's figures are suspect; the server log has the broker's warnings.")
        )]
    lines += ["", _targets(summary, stalled)]
    return "\n".join(lines)


def _targets(summary: dict[str, Any], stalled: dict[str, Any]) -> str:
    """The project's targets (issues 3 and 5), what Redis costs the hub (no target), and the
    ratios measured elsewhere."""
    rows = summary["throughput"]
    first = rows[0]["clients"] if rows else 1000
    lines = ["| target | measured | verdict |", "|---|---|---|"]

    def ratio_line(label: str, t: dict[str, Any] | None, verdict: Any, key: str = "ratio_to_bare") -> None:
        if t is None:
            return
        if t.get(key) is None:
            lines.append(f"| {label} | not measured ({t.get('failed')}) | – |")
            return
        r, lo, hi = t[key]
        lines.append(f"| {label} | {r:.0%} (per-round {lo:.0%}–{hi:.0%}) | {verdict(r)} |")

    def met(r: float) -> str:
        return "met" if r >= 0.8 else "missed"

    ratio_line(f"hub ≥ 80% of the bare loop's deliveries/s at {first:,} clients",
               _find(rows, contender="notify", clients=first, mode="burst"), met)
    ratio_line("the same, paced (one notification per loop iteration)",
               _find(rows, contender="notify", clients=first, mode="paced"), met)
    for n in sorted({t["clients"] for t in rows} - {first}):
        ratio_line(f"the same at {n:,} clients (back to back)", _find(rows, contender="notify", clients=n, mode="burst"), met)
    stalls = {s["contender"]: s for s in summary["stalled"]}
    if "notify" in stalls:
        hub_stall = stalls["notify"]
        if hub_stall["ratio"] is not None and not hub_stall["timed_out_rounds"]:
            r = hub_stall["ratio"][0]
            lines.append(
                f"| {stalled['stalled']} stalled clients: healthy completion within 10% of unstalled | {r - 1:+.0%} "
                f"(per-round {hub_stall['ratio'][1] - 1:+.0%} to {hub_stall['ratio'][2] - 1:+.0%}) "
                f"| {'met' if r <= 1.1 else 'missed'} |"
            )
        else:
            lines.append(f"| {stalled['stalled']} stalled clients: within 10% | hub timed out | missed |")
    single = {r["contender"]: r for r in summary.get("single", [])}
    if "notify" in single:
        k = single["notify"]
        if not k["stalled"]["blocked_rounds"] and k["unstalled"]["p99_s"] and k["stalled"]["p99_s"]:
            r = k["stalled"]["p99_s"] / k["unstalled"]["p99_s"]
            lines.append(
                f"| one broadcast with 1% stalled: hub p99 isolated from them (not a set target) | "
                f"{k['unstalled']['p99_s'] * 1e3:.1f} → {k['stalled']['p99_s'] * 1e3:.1f} ms ({r:.2f}×) | "
                f"{'isolated' if r <= 1.5 else 'affected'} |"
            )
    memory = {m["contender"]: m for m in summary["memory"]}
    if "notify" in memory and memory["notify"]["ratio_to_bare"] is not None:
        r = memory["notify"]["ratio_to_bare"][0]
        lines.append(
            f"| memory per idle connection ≤ bare + 10% | {r - 1:+.0%} "
            f"({memory['notify']['per_connection'][0] / 1024:.1f} KiB vs "
            f"{memory['bare']['per_connection'][0] / 1024:.1f} KiB) | {'met' if r <= 1.1 else 'missed'} |"
        )
    # The hub through Redis: what the round trip costs it, against the in-process hub.
    for mode in MODES:
        ratio_line(
            f"{LABELS['redis']} vs the in-process hub at {first:,} clients, {MODES[mode]} (paired; no target)",
            _find(rows, contender="redis", clients=first, mode=mode), lambda r: "–", key="ratio_to_hub",
        )
    redis_stall = stalls.get("redis")
    if redis_stall is not None:
        if redis_stall["ratio"] is not None and not redis_stall["timed_out_rounds"]:
            r, lo, hi = redis_stall["ratio"]
            lines.append(
                f"| {LABELS['redis']}: {stalled['stalled']} stalled clients, healthy completion vs unstalled "
                f"(no target) | {r - 1:+.0%} (per-round {lo - 1:+.0%} to {hi - 1:+.0%}) "
                f"| {'within 10%' if r <= 1.1 else 'over 10%'} |"
            )
        else:
            lines.append(f"| {LABELS['redis']}: {stalled['stalled']} stalled clients (no target) | timed out | – |")
    if "redis" in single and "notify" in single:
        k, h = single["redis"]["unstalled"], single["notify"]["unstalled"]
        if k["p50_s"] is not None and h["p50_s"] is not None:
            lines.append(
                f"| {LABELS['redis']}: one broadcast, p50 / p99 over the in-process hub's (no target) | "
                f"{(k['p50_s'] - h['p50_s']) * 1e3:+.1f} / {(k['p99_s'] - h['p99_s']) * 1e3:+.1f} ms "
                f"({k['p50_s'] * 1e3:.1f} / {k['p99_s'] * 1e3:.1f} ms) | – |"
            )
    for c, elsewhere in (("broadcaster", 0.45), ("socketio", 0.2)):
        ratio_line(
            f"{LABELS[c]} vs bare at {first:,} clients (measured elsewhere: ≈{elsewhere:g}×; no target)",
            _find(rows, contender=c, clients=first, mode="burst"),
            lambda r, e=elsewhere: f"{r / e:.1f}× the figure from elsewhere",
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter bursts and stall timeout (~5–6 min)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="throughput rounds at --clients[0] (default 7, quick 1); 3× that for the others")
    parser.add_argument("--stall-rounds", type=int, default=None, help="default 3, quick 1")
    parser.add_argument("--memory-rounds", type=int, default=None, help="default 3, quick 1")
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 100, 5000],
                        help="throughput client counts; the first also for paced bursts, stalls and one-broadcast latency")
    parser.add_argument("--messages", type=int, default=None,
                        help="notifications per burst (default 200, quick 100); above 1,000 clients scaled down "
                             "to keep clients × messages constant (at least 10)")
    parser.add_argument("--burst-timeout", type=float, default=120.0,
                        help="seconds after which a throughput burst counts as not finished")
    parser.add_argument("--stalled", type=int, default=10, help="stalled clients (of the first --clients)")
    parser.add_argument("--stall-timeout", type=float, default=None, help="seconds (default 15, quick 5)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections for the memory measure")
    parser.add_argument("--client-procs", type=int, default=1, help="load-generating processes")
    parser.add_argument("--big-client-procs", type=int, default=2,
                        help="load-generating processes above 2,000 clients")
    parser.add_argument("--single-repeats", type=int, default=30,
                        help="one-notification broadcasts per series (publish → last client)")
    parser.add_argument("--single-rounds", type=int, default=None, help="default 3, quick 1")
    parser.add_argument("--single-timeout", type=float, default=None,
                        help="seconds for one notification to reach every healthy client (default 5, quick 3)")
    parser.add_argument("--no-single", action="store_true", help="skip the one-broadcast latency")
    parser.add_argument("--out", default=None,
                        help="results/<out>.json, .md and -*.png (default broadcast, or broadcast-deflate)")
    parser.add_argument("--no-paced", action="store_true",
                        help="skip the paced bursts (one notification per event-loop iteration)")
    parser.add_argument("--queue-size", type=int, default=1000, help="the hub's queue_size")
    parser.add_argument("--deflate", action="store_true",
                        help="per-message compression on (clients offer it, as browsers do); writes broadcast-deflate.*")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="only profile one burst per contender, writing .prof files to DIR")
    parser.add_argument("--redis-url", default=os.environ.get("SQLA_NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/0"),
                        help="Redis for the hub-via-Redis contender (default: $SQLA_NOTIFY_REDIS_URL or "
                             "redis://127.0.0.1:6379/0); unreachable, that contender is skipped")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
                        help="run only these (the bare loop always runs: every ratio is to it)")
    args = parser.parse_args()
    args.messages = args.messages or (100 if args.quick else 200)
    raise_nofile()
    for key in ("BENCH_REDIS_URL", "BENCH_REDIS_STREAM"):  # each server gets its own, or none
        os.environ.pop(key, None)
    if args.deflate:
        os.environ["BENCH_DEFLATE"] = "1"  # before the client processes start
    name = args.out or ("broadcast-deflate" if args.deflate else "broadcast")
    deflate = "on" if args.deflate else "off"
    contenders = tuple(c for c in CONTENDERS if c in args.contenders or c == "bare")
    skipped: dict[str, str] = {}
    global REDIS
    if "redis" in contenders:
        target = _connect_redis(args.redis_url)
        if isinstance(target, str):
            skipped["redis"] = target
            contenders = tuple(c for c in contenders if c != "redis")
            _log(f"{LABELS['redis']}: skipped: {target}")
        else:
            REDIS = target
    # A SIGTERM (run_all.py's time limit) unwinds like Ctrl-C: servers stopped, streams deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    clients = Clients(args.client_procs, None if REDIS is None else REDIS.cpu)
    try:
        if args.profile is not None:
            run_profile(clients, args.clients[0], args.messages, args.profile, args.queue_size, contenders)
            return
        _measure(args, contenders, skipped, clients, name, deflate)
    finally:
        if REDIS is not None:
            REDIS.drop_all()


def _measure(
    args: argparse.Namespace, contenders: tuple[str, ...], skipped: dict[str, str], clients: Clients, name: str,
    deflate: str,
) -> None:
    """Every measurement, then the table on stdout and results/<name>.json, .md and plots."""
    rounds = args.rounds or (1 if args.quick else 7)
    stall_rounds = args.stall_rounds or (1 if args.quick else 3)
    memory_rounds = args.memory_rounds or (1 if args.quick else 3)
    stall_timeout = args.stall_timeout or (5.0 if args.quick else 15.0)
    single_rounds = args.single_rounds or (1 if args.quick else 3)
    single_timeout = args.single_timeout or (3.0 if args.quick else 5.0)
    started = time.monotonic()
    code = git_state()  # before the run: what the servers import
    throughput = []
    first = args.clients[0]
    for i, n in enumerate(args.clients):
        paced = i == 0 and not args.no_paced  # the first client count only
        # Smaller client counts make short, noisy bursts: more rounds (they are cheap); larger
        # ones long bursts and connections: fewer.
        block_rounds = rounds if n == first else 3 * rounds if n < first else max(1, (rounds + 1) // 2)
        messages = args.messages if n <= 1000 else max(10, args.messages * 1000 // n)
        block_clients = clients if n <= 2000 else Clients(max(args.client_procs, args.big_client_procs), clients.redis_cpu)
        throughput.append(run_throughput(
            block_clients, n, messages, block_rounds, args.queue_size, paced, args.burst_timeout, contenders,
        ))
    _log(f"stalled clients: {args.stalled} of {args.clients[0]}, {stall_rounds} rounds")
    stalled = run_stalled(
        clients, args.clients[0], args.stalled, args.messages, stall_rounds, stall_timeout, args.queue_size,
        contenders,
    )
    single = None
    if not args.no_single:
        _log(
            f"one broadcast: {args.single_repeats} notifications one at a time to {first - args.stalled} clients, "
            f"then with {args.stalled} more stalled, {single_rounds} rounds"
        )
        single = run_single(
            clients, first, args.stalled, args.single_repeats, single_rounds, single_timeout, args.queue_size,
            contenders,
        )
    _log(f"memory: {args.idle} idle connections, {memory_rounds} rounds")
    memory = run_memory(clients, args.idle, memory_rounds, args.queue_size, contenders)

    summary = summarize(throughput, stalled, memory, single, skipped)
    table = render(summary, stalled, memory, single)
    print(table)

    server = throughput[0]["server"]
    meta = {
        **base_meta(code),
        **{k: server[k] for k in (
            "fastapi", "starlette", "uvicorn", "websockets", "msgspec", "sqla_notify", "broadcaster",
            "python-socketio", "python-engineio",
        )},
        "server_loop": server["loop"],
        "uvicorn_settings": f"--ws-per-message-deflate {str(args.deflate).lower()} --log-level warning (ws: auto = websockets-sansio)",
        "client_procs": args.client_procs,
        "big_client_procs": args.big_client_procs,
        "messages": args.messages,
        "messages_per_clients": {b["clients"]: b["messages"] for b in throughput},
        "throughput_rounds": {b["clients"]: b["rounds"] for b in throughput},
        "single_repeats": args.single_repeats,
        "single_rounds": single_rounds,
        "single_timeout_s": single_timeout,
        "clients": args.clients,
        "rounds": rounds,
        "stall_rounds": stall_rounds,
        "memory_rounds": memory_rounds,
        "stalled": args.stalled,
        "stall_timeout_s": stall_timeout,
        "idle_connections": args.idle,
        "queue_size": args.queue_size,
        "contenders": list(contenders),
        "skipped": skipped,
        "redis": None if REDIS is None else {
            "url": REDIS.url, "server": REDIS.version, "redis-py": REDIS.redis_py, "streams": f"{REDIS.prefix}:<n>",
        },
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started),
    }
    write(
        name,
        {"meta": meta, "summary": summary, "throughput": throughput, "stalled": stalled, "memory": memory,
         "single": single},
        f"# bench_broadcast ({meta['when']})\n\n"
        f"Python {meta['python']}, FastAPI {meta['fastapi']}, uvicorn {meta['uvicorn']} "
        f"(websockets {meta['websockets']}, loop {meta['server_loop']}, per-message deflate {deflate}), "
        f"{meta['cpus']} CPUs, broadcaster {meta['broadcaster']}, python-socketio {meta['python-socketio']} "
        f"(python-engineio {meta['python-engineio']})"
        + ("" if REDIS is None else f", Redis {REDIS.version} (redis-py {REDIS.redis_py})")
        + "; notifications of about 100 bytes. Throughput: "
        + "; ".join(
            f"{b['clients']:,} clients: bursts of {b['messages']}, {meta['throughput_rounds'][b['clients']]} rounds, "
            f"{args.client_procs if b['clients'] <= 2000 else max(args.client_procs, args.big_client_procs)} client process(es)"
            + (f", {len(b['groups'])} servers in turn ({' | '.join(', '.join(g) for g in b['groups'])})"
               if len(b["groups"]) > 1 else "")
            for b in throughput
        )
        + f". Stalled: {stall_rounds} rounds; one broadcast: {single_rounds} rounds of {args.single_repeats}; "
        f"memory: {memory_rounds} rounds; spread = min–max over rounds. "
        f"Server/client CPU = CPU seconds over the burst's duration. {meta['duration_s']} s in all.\n\n"
        f"{NOTES}\n\n{table}\n",
        indent=2,
    )
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
