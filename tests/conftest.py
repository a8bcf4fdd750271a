"""Fixtures: one database per backend, a recording sink, an attached session factory.

SQLite is always there. PostgreSQL is read from ``--pg-url`` or ``SQLA_NOTIFY_PG_URL``
(default ``postgresql+psycopg://127.0.0.1/test``); when it cannot be reached its tests are
skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from sqla_notify import Notification, Notifier

from .models import Base

DEFAULT_PG_URL = "postgresql+psycopg://127.0.0.1/test"
REDIS_URL = os.environ.get("SQLA_NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--pg-url", default=None, help="SQLAlchemy URL of a PostgreSQL test database")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio only: the hub and SQLAlchemy's asyncio extension are
    asyncio objects (anyio's own fixture would also try trio where it is installed)."""
    return "asyncio"


def pg_url(config: pytest.Config) -> str:
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


_pg_checked: dict[str, str | None] = {}


def _pg_engine(config: pytest.Config) -> Engine:
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


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A sync engine with every test table created empty, on each backend."""
    if request.param == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path / 'test.db'}")
        sqlite_savepoint_recipe(eng)
    else:
        eng = _pg_engine(request.config)
    try:
        Base.metadata.drop_all(eng)
        Base.metadata.create_all(eng)
        yield eng
        Base.metadata.drop_all(eng)
    finally:
        eng.dispose()  # also when setting up failed: no connection is left to the GC


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (``SQLA_NOTIFY_REDIS_URL``), or skip (fail under CI=true)."""
    import redis  # here, not at the top: the core tests run where the redis extra is not installed

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{REDIS_URL}: {exc}")
    return REDIS_URL


class Recorder:
    """A sink that keeps every batch it gets, safe to call from any thread."""

    def __init__(self) -> None:
        self.batches: list[list[Notification]] = []
        self.threads: list[int] = []  # the thread of each call
        self._lock = threading.Lock()

    def __call__(self, batch: list[Notification]) -> None:
        with self._lock:
            self.batches.append(batch)
            self.threads.append(threading.get_ident())

    def take(self) -> list[list[tuple[str, str, dict[str, Any] | None]]]:
        """The batches so far as plain tuples, emptying the record."""
        with self._lock:
            out = [[(n.collection, n.action, n.data) for n in b] for b in self.batches]
            self.batches.clear()
        return out


@pytest.fixture
def sink() -> Recorder:
    return Recorder()


@pytest.fixture
def notifier(sink: Recorder) -> Notifier:
    return Notifier(sink)


@pytest.fixture
def factory(engine: Engine, notifier: Notifier) -> Iterator[sessionmaker[Session]]:
    """A sessionmaker attached to ``notifier``."""
    sm = notifier.attach(sessionmaker(engine))
    yield sm
    notifier.detach(sm)
