"""uvicorn serving a test app (``tests/server_app.py`` unless told otherwise) in a child
process: one, or a pair sharing notifications through Redis or PostgreSQL, and waits on
their ``/stats``. The fixtures ``redis_servers`` and ``pg_servers`` (``tests/conftest.py``)
are the pairs serving ``tests/server_app.py``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url, text

from .services import pg_engine, pg_url

ROOT = Path(__file__).parents[2]  # the checkout: uvicorn imports the app as tests.<module>


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn serving ``app`` (default: tests.server_app) in a child process."""

    def __init__(self, tmp_path: Path, app: str = "tests.server_app:app", **env: str) -> None:
        """``env``: for the app; ``UVICORN_ARGS``, more options for uvicorn (space-separated)."""
        #: what it serves and with which environment: enough to start a replacement
        self.app, self.env = app, dict(env)
        uvicorn_args = env.pop("UVICORN_ARGS", "").split()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/notify/ws"
        self.log = tmp_path / f"uvicorn-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", app, "--port", str(self.port),
                 "--ws-per-message-deflate", "false", "--log-level", "warning", *uvicorn_args],
                cwd=ROOT, env={**os.environ, "APP_DB": str(tmp_path / "server.db"), **env},
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:  # ready when it answers
            try:
                httpx.get(f"{self.base}/stats", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop it; fail if it logged an exception (a client's behaviour must never cause one)."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        log = self.log.read_text(errors="replace")
        assert "Traceback" not in log, f"the server logged an exception:\n{log}"


@contextmanager
def server_pair(tmp_path: Path, app: str = "tests.server_app:app", **env: str) -> Iterator[tuple[Server, Server]]:
    """Two uvicorn processes serving ``app`` with the same ``env``, both stopped at the end
    (the first also when the second fails to start)."""
    a = Server(tmp_path, app, **env)
    try:
        b = Server(tmp_path, app, **env)
    except Exception:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@contextmanager
def two_servers(tmp_path: Path, **env: str) -> Iterator[tuple[Server, Server]]:
    """Two uvicorn processes sharing one Redis stream (``APP_REDIS`` in ``env``: a test's own
    redis-server, which goes with its data); stopped (and resumed first, if the test left one
    stopped) at the end. On the machine's Redis: :func:`two_redis_servers`."""
    env = {"APP_STREAM": f"sqla_notify_test:{uuid.uuid4().hex}", **env}
    with server_pair(tmp_path, **env) as (a, b):
        try:
            yield a, b
        finally:
            for server in (a, b):
                os.kill(server.proc.pid, signal.SIGCONT)


@contextmanager
def two_redis_servers(
    tmp_path: Path, redis_url: str, app: str = "tests.server_app:app", **env: str
) -> Iterator[tuple[Server, Server]]:
    """Two uvicorn processes serving ``app``, sharing a stream of their own (deleted
    afterwards) on the Redis at ``redis_url``."""
    import redis  # here, not at the top: the core tests run where the redis extra is not installed

    stream = f"sqla_notify_test:{uuid.uuid4().hex}"
    try:
        with server_pair(tmp_path, app, APP_REDIS=redis_url, APP_STREAM=stream, **env) as servers:
            yield servers
    finally:
        redis.Redis.from_url(redis_url).delete(stream)


@contextmanager
def two_pg_servers(
    tmp_path: Path, config: pytest.Config, app: str = "tests.server_app:app", **env: str
) -> Iterator[tuple[Server, Server]]:
    """Two uvicorn processes serving ``app``, committing to PostgreSQL in a schema of their
    own (dropped afterwards) and sharing through LISTEN/NOTIFY on a channel named after it."""
    engine = pg_engine(config)  # PostgreSQL or skip/fail
    schema = f"sqla_mp_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(pg_url(config)).update_query_dict({"options": f"-csearch_path={schema}"})
    env = {"APP_PG": url.render_as_string(hide_password=False), "APP_CHANNEL": schema, **env}
    try:
        with server_pair(tmp_path, app, **env) as servers:
            yield servers
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


async def connected(*servers: Server) -> None:
    """Wait (bounded, for each in turn) until each server's broker reader is connected."""
    for server in servers:
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(base_url=server.base, timeout=5) as http:
            while (await http.get("/stats")).json()["broker"] != "connected":
                assert time.monotonic() < deadline, "the broker reader did not connect"
                await asyncio.sleep(0.02)


async def wait_stats(http: httpx.AsyncClient, field: str, value: int, timeout: float = 10) -> dict[str, Any]:
    """Poll the server's counters until ``field`` reaches ``value`` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        stats: dict[str, Any] = (await http.get("/stats")).json()
        if stats[field] >= value:
            return stats
        assert time.monotonic() < deadline, f"{field} stayed at {stats[field]}, expected {value}: {stats}"
        await asyncio.sleep(0.05)
