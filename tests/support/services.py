"""The services the tests run against: PostgreSQL and Redis, a private redis-server that a
test may stop and start, and SQLite set up for SAVEPOINT.

PostgreSQL is read from ``--pg-url`` or ``SQLA_NOTIFY_PG_URL`` (default
``postgresql+psycopg://127.0.0.1/test``), Redis from ``SQLA_NOTIFY_REDIS_URL``. When one cannot
be reached its tests are skipped with the reason, except under ``CI=true``, where that is a
failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

DEFAULT_PG_URL = "postgresql+psycopg://127.0.0.1/test"
REDIS_URL = os.environ.get("SQLA_NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/0")


def pg_url(config: pytest.Config) -> str:
    """The URL of the PostgreSQL test database: ``--pg-url``, ``SQLA_NOTIFY_PG_URL`` or the default."""
    url: str | None = config.getoption("--pg-url") or os.environ.get("SQLA_NOTIFY_PG_URL")
    return url or DEFAULT_PG_URL


def require_service(name: str, reason: str) -> None:
    """Skip for lack of a service; under CI=true, fail instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is required under CI=true but unavailable: {reason}", pytrace=False)
    pytest.skip(f"{name} unavailable: {reason}")


def sqlite_savepoint_recipe(engine: Engine) -> None:
    """pysqlite's legacy transaction handling breaks SAVEPOINT; let SQLAlchemy emit BEGIN.

    The recipe from SQLAlchemy's docs, "Serializable isolation / Savepoints / Transactional
    DDL" for the sqlite3 driver.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


# Whether each URL answered (None) or why not: asked once per run, not once per test.
_pg_checked: dict[str, str | None] = {}


def pg_engine(config: pytest.Config) -> Engine:
    """An engine on the PostgreSQL test database; skip (fail under CI=true) when it cannot be reached."""
    url = pg_url(config)
    engine = create_engine(url)
    if url not in _pg_checked:
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            _pg_checked[url] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            _pg_checked[url] = f"{make_url(url).render_as_string()}: {exc}".splitlines()[0]
    reason = _pg_checked[url]
    if reason is not None:
        engine.dispose()
        require_service("PostgreSQL", reason)
    return engine


def redis_url_or_skip() -> str:
    """The machine's Redis (``SQLA_NOTIFY_REDIS_URL``) if it answers; skip (fail under CI=true) if not."""
    import redis  # here, not at the top: the core tests run where the redis extra is not installed

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{REDIS_URL}: {exc}")
    return REDIS_URL


def reachable(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (1 s timeout)."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class PrivateRedis:
    """A redis-server of our own on a free port, which tests may stop and restart."""

    def __init__(self, tmp_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.dir = tmp_path
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait (bounded) until it accepts connections."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", self.port):
            assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill it (no shutdown: as a crash would); nothing if it is not running."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
