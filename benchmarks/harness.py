"""What every benchmark script shares: servers, clocks, statistics, flags and results files.

A scenario script (``bench_*.py``) decides what to measure and how to show it; this module
does the rest the same way for all of them:

* :class:`Server`: a uvicorn child process on a free loopback port (its stderr to a log
  file), ready when an HTTP path answers, stopped with SIGINT and then SIGKILL, its logged
  errors counted;
* clocks: CPU seconds of a process (:func:`process_cpu`), of processes by name
  (:func:`named_cpu`), of this one (:func:`own_cpu`) and of the machine (:func:`machine_cpu`),
  from ``/proc``;
* the benchmark's own event loop (:func:`new_loop`) and PostgreSQL, when reachable (:func:`postgres`);
* statistics: :func:`percentile` (nearest rank), :func:`tail` (p50, p90, p99, max),
  :func:`spread` (median, min, max) and the
  round-robin order of contenders (:func:`rotation`), so that pairing and alternation are
  the same everywhere;
* :class:`Redis`: a stream per server or run, deleted after, and Redis's CPU time;
* flags: :func:`presets` fills in the ``--quick`` or full defaults of the flags left unset;
* results: :func:`base_meta` (machine, Python, the commit measured) and :func:`write`
  (``results/<name>.json`` and ``.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.metadata
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS") or HERE / "results")  # tests write elsewhere
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


def log(message: str) -> None:
    """Progress goes to stderr, tables to stdout."""
    print(message, file=sys.stderr, flush=True)


# == statistics ==============================================================================


def percentile(values: list[float], q: float) -> float:
    """The value below which a share ``q`` of ``values`` lies (nearest rank, no interpolation)."""
    return quantiles(values, [q])[0]


def quantiles(values: list[float], qs: list[float]) -> list[float]:
    """:func:`percentile` at each of ``qs``, sorting once; empty if ``values`` is."""
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs] if ordered else []


def tail(values: list[float]) -> dict[str, float | None]:
    """``p50_ms``, ``p90_ms``, ``p99_ms`` and ``max_ms`` of latencies in ms (``None`` each if there are none)."""
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    p90, p99 = quantiles(values, [0.90, 0.99])
    return {"p50_ms": statistics.median(values), "p90_ms": p90, "p99_ms": p99, "max_ms": max(values)}


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    """Median, min and max: how every figure is reported over rounds."""
    values = list(values)
    return statistics.median(values), min(values), max(values)


def rotation(r: int, items: Sequence[T]) -> list[T]:
    """``items`` rotated by ``r`` places: round ``r``'s order, so that none always goes first."""
    k = r % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


# == clocks ==================================================================================


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process so far, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[float, float, float, float]:
    """The machine's CPU seconds since boot: (busy, of which in interrupts, stolen, total)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    busy = user + nice + system + irq + softirq
    return busy / CLK_TCK, (irq + softirq) / CLK_TCK, steal / CLK_TCK, (busy + idle + iowait + steal) / CLK_TCK


def named_cpu(name: str) -> float | None:
    """CPU seconds of every local process named ``name`` (``postgres``: the whole server); ``None`` if none."""
    total, found = 0.0, False
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/comm") as f:
                    if f.read().strip() != name:
                        continue
                total += process_cpu(int(entry.name))
                found = True
            except OSError:
                continue  # gone meanwhile
    return total if found else None


def own_cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    t = os.times()
    return t.user + t.system


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def split_name(forum: int) -> str:
    """The collection a ``split`` client watching ``forum`` subscribes to whole (``--filtered``,
    ``bench_framecost.py``, ``bench_postcost.py``): as long as ``posts`` for forums below
    10,000, so that its frames are the size of the others."""
    return f"p{forum:04d}"


def pin(pid: int, role: str) -> None:
    """With ``BENCH_PIN=1`` (``bench_broadcast.py --pin``): a ``"server"`` on the first CPU this
    process may use, anything else (the load generator) on the others, so that the scheduler
    never puts a server and its clients on one CPU for a while, a placement that changes from
    one fresh process to the next and moves tail latencies round to round."""
    if os.environ.get("BENCH_PIN") != "1":
        return
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(pid, {cpus[0]} if role == "server" else set(cpus[1:]))


def raise_nofile(want: int | None = None) -> int:
    """Raise the soft file-descriptor limit to ``want`` (default: the hard limit), and the hard
    limit too where this process may (root, up to ``fs.nr_open``); children inherit both.

    :returns: the soft limit now in force (less than ``want`` if the hard limit could not be raised).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want is not None and hard != resource.RLIM_INFINITY and want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):  # unprivileged, or above fs.nr_open: the hard limit it is
            pass
    target = want or (hard if hard != resource.RLIM_INFINITY else 65536)
    target = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def new_loop() -> asyncio.AbstractEventLoop:
    """An event loop for the benchmark's own clients: uvloop's (cheaper) when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def postgres(url_text: str) -> tuple[Any, str | None, str | None]:
    """``url_text`` with the psycopg driver (a SQLAlchemy ``URL``), the server's version, and
    why it cannot be used (``None`` if it can)."""
    import sqlalchemy

    url = sqlalchemy.make_url(url_text).set(drivername="postgresql+psycopg")
    try:
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as conn:
                version = str(conn.execute(sqlalchemy.text("SHOW server_version")).scalar())
        finally:
            engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return None, None, f"cannot connect to {url.render_as_string()}: {reason}"
    return url, version, None


# == servers =================================================================================


class Server:
    """A uvicorn process serving ``app`` on a free loopback port, per-message deflate off
    unless ``deflate``, its output appended to ``log``.

    ``ready``: a GET path polled (up to 30 s) until it answers 200; its JSON is :attr:`info`.
    ``cwd`` decides which ``sqla_notify`` the child imports (``python -m`` puts it first on
    ``sys.path``); ``None`` inherits this process's, so that ``PYTHONPATH`` can pick a checkout.

    :raises RuntimeError: if the process exits or does not answer in time (it is stopped).
    """

    def __init__(
        self, app: str, log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = ROOT,
        deflate: bool = False, ready: str | None = "/info", app_dir: Path | None = HERE,
    ) -> None:
        self.app = app
        self.port = free_port()
        self.log = log.open("ab")
        self.log_start = self.log.tell()
        self.info: Any = None
        argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
                "--ws-per-message-deflate", "true" if deflate else "false", "--log-level", "warning"]
        if app_dir is not None:
            argv[4:4] = ["--app-dir", str(app_dir)]
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env={**os.environ, **(env or {})}, start_new_session=True,  # inherits RLIMIT_NOFILE
            stdout=self.log, stderr=self.log,
        )
        pin(self.proc.pid, "server")
        if ready is not None:
            self.wait(ready)

    def wait(self, path: str, until: Callable[[Any], bool] = lambda _: True, seconds: float = 30) -> Any:
        """Poll ``GET path`` until it answers and ``until(reply)``; stop the server on failure."""
        deadline = time.monotonic() + seconds
        try:  # whatever interrupts the start (Ctrl-C, SIGTERM too) stops the process
            while True:
                try:
                    reply = self.get(path, timeout=2)
                    if until(reply):
                        self.info = reply if path == "/info" else self.info
                        return reply
                except (OSError, RuntimeError):
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the server {self.app} was not ready in time (exit code {self.proc.poll()}); "
                        f"its log: {self.log.name}"
                    )
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def request(self, method: str, path: str, timeout: float = 30) -> Any:
        """One HTTP request; the JSON reply. :raises RuntimeError: on a status other than 200."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: expected 200, got {response.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def get(self, path: str, timeout: float = 30) -> Any:
        """``GET path``."""
        return self.request("GET", path, timeout)

    def post(self, path: str, timeout: float = 30) -> Any:
        """``POST path``."""
        return self.request("POST", path, timeout)

    def cpu(self) -> float:
        """User + system CPU seconds of the server process so far."""
        return process_cpu(self.proc.pid)

    def stop(self) -> dict[str, int]:
        """Stop the server (SIGINT, SIGKILL after 5 s); count the errors it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()
        with open(self.log.name, "rb") as f:
            f.seek(self.log_start)
            text = f.read()
        return {
            "asgi_exceptions": text.count(b"Exception in ASGI application"),
            "error_lines": text.count(b"ERROR:"),
            "warning_lines": text.count(b"WARNING:"),
        }


# == Redis =====================================================================================


class Redis:
    """The Redis server that a benchmark's brokers use, seen from the driver.

    Each server (or run) gets a stream of its own, ``<prefix>:<this run>:<n>``
    (:meth:`new_stream`), deleted when done (:meth:`drop`; any left over: :meth:`drop_all`):
    it starts empty, as an in-process hub's window does, and nothing else sharing this Redis
    (tests, another run) reads or writes it. :meth:`cpu` is Redis's own CPU time.

    :raises ImportError: without redis-py; :raises redis.RedisError, OSError: if unreachable.
    """

    def __init__(self, url: str, prefix: str) -> None:
        import redis  # the bench extra; without it the contender is skipped

        self.url = url
        self.error = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.client.ping()
        self.version = str(self.client.info("server")["redis_version"])
        self.redis_py = redis.__version__
        self.prefix = f"{prefix}:{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.streams: set[str] = set()
        self._count = 0

    def new_stream(self) -> str:
        """A stream name not used before; :meth:`drop_all` deletes it."""
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
            log(f"  could not delete Redis stream {stream}: {type(exc).__name__}: {exc}")

    def drop_all(self) -> None:
        """Delete every stream not deleted yet."""
        for stream in sorted(self.streams):
            self.drop(stream)

    def cpu(self) -> float | None:
        """Redis's CPU seconds so far (user + system, all its threads); ``None`` if it does not answer."""
        try:
            info = self.client.info("cpu")
        except self.error:
            return None
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    @classmethod
    def connect(cls, prefix: str, url: str | None = None) -> Redis | str:
        """A :class:`Redis` at ``url`` (default ``$SQLA_NOTIFY_REDIS_URL``), or why there is none."""
        url = url or os.environ.get("SQLA_NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/0")
        try:
            return cls(url, prefix)
        except ImportError as exc:
            return f'redis-py is not installed ({exc}): pip install "sqla_notify[redis]"'
        except Exception as exc:  # noqa: BLE001 - redis.RedisError or OSError: unreachable, refused...
            return f"Redis unreachable at {url}: {type(exc).__name__}: {exc}"


# == flags and results =======================================================================


def presets(args: argparse.Namespace, quick: dict[str, Any], full: dict[str, Any]) -> None:
    """Fill each flag left unset (``None``), or absent, from ``quick`` when ``args.quick``, else ``full``."""
    for name, value in (quick if getattr(args, "quick", False) else full).items():
        if getattr(args, name, None) is None:  # a preset need not be a flag
            setattr(args, name, value)


def git_state() -> dict[str, object]:
    """The commit measured, and the package's files that differed from it (work in progress).

    Call it before the run starts: it is what the benchmark's server processes import.
    """
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_package_files": git("status", "--porcelain", "--", "sqla_notify").splitlines()}


def versions(*names: str) -> dict[str, str]:
    """The installed version of each distribution in ``names`` that is installed."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def base_meta(code: dict[str, object]) -> dict[str, Any]:
    """What every results file records: when, the machine, Python and the code (:func:`git_state`)."""
    return {"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": sys.version.split()[0],
            "platform": platform.platform(), "cpus": os.cpu_count(), "git": code}


def write(name: str, data: dict[str, Any], markdown: str, indent: int = 1) -> list[str]:
    """``results/<name>.json`` (``data``) and ``results/<name>.md`` (``markdown``); their names."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=indent) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    return [f"{name}.json", f"{name}.md"]
