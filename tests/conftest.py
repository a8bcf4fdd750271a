"""Fixtures shared by the test modules; the helpers they use are in ``tests/support/``.

SQLite is always there. PostgreSQL is read from ``--pg-url`` or ``SQLA_NOTIFY_PG_URL``
(default ``postgresql+psycopg://127.0.0.1/test``), Redis from ``SQLA_NOTIFY_REDIS_URL``; when
one cannot be reached its tests are skipped with the reason, except under ``CI=true``, where
that is a failure (``support/services.py``). A fixture used by one module only stays there.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from sqla_notify import Notifier

from .models import Base
from .support.recording import Recorder
from .support.services import PrivateRedis, pg_engine, redis_url_or_skip, require_service, sqlite_savepoint_recipe

if TYPE_CHECKING:
    from .support.echo import App
    from .support.servers import Server


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--pg-url``: the PostgreSQL test database (else ``SQLA_NOTIFY_PG_URL``, else the default)."""
    parser.addoption("--pg-url", default=None, help="SQLAlchemy URL of a PostgreSQL test database")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio only: the hub and SQLAlchemy's asyncio extension are
    asyncio objects (anyio's own fixture would also try trio where it is installed)."""
    return "asyncio"


# -- databases and the capture pipeline ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A sync engine with every test table created empty, on each backend."""
    if request.param == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path / 'test.db'}")
        sqlite_savepoint_recipe(eng)
    else:
        eng = pg_engine(request.config)
    try:
        Base.metadata.drop_all(eng)
        Base.metadata.create_all(eng)
        yield eng
        Base.metadata.drop_all(eng)
    finally:
        eng.dispose()  # also when setting up failed: no connection is left to the GC


@pytest.fixture
def sink() -> Recorder:
    """A :class:`Recorder`, the sink of ``notifier``."""
    return Recorder()


@pytest.fixture
def notifier(sink: Recorder) -> Notifier:
    """A notifier delivering to ``sink``."""
    return Notifier(sink)


@pytest.fixture
def factory(engine: Engine, notifier: Notifier) -> Iterator[sessionmaker[Session]]:
    """A sessionmaker attached to ``notifier``."""
    sm = notifier.attach(sessionmaker(engine))
    yield sm
    notifier.detach(sm)


@pytest.fixture
def admin(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The superuser on the test server, in autocommit (CREATE DATABASE, CREATE ROLE)."""
    engine = pg_engine(request.config)  # PostgreSQL or skip/fail
    yield engine.execution_options(isolation_level="AUTOCOMMIT")
    engine.dispose()


# -- Redis -----------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (``SQLA_NOTIFY_REDIS_URL``), or skip (fail under CI=true)."""
    return redis_url_or_skip()


@pytest.fixture
def stream(redis_url: str) -> Iterator[str]:
    """A stream of its own for each test, deleted afterwards."""
    import redis  # here, not at the top: the core tests run where the redis extra is not installed

    name = f"sqla_notify_test:{uuid.uuid4().hex}"
    yield name
    redis.Redis.from_url(redis_url).delete(name)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, not started yet; killed at the end."""
    if shutil.which("redis-server") is None:
        require_service("redis-server", "not on PATH (apt-get install redis-server)")
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


# -- the echo and snapshot endpoints, in-process ---------------------------------------------


@pytest.fixture
def app(engine: Engine) -> Iterator[App]:
    """The echo and snapshot endpoints (``support/echo.py``) in-process, on ``engine``'s
    database, with the client's lifespan entered."""
    from .support.echo import App  # here: it needs FastAPI, which the core tests do not

    a = App(engine)
    with a.client:
        yield a


# -- a real server ---------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """uvicorn serving tests/server_app.py, stopped at the end."""
    from .support.servers import Server  # here: it needs httpx, which the core tests do not

    s = Server(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def redis_servers(tmp_path: Path, redis_url: str) -> Iterator[tuple[Server, Server]]:
    """Two uvicorn processes serving tests/server_app.py, sharing a Redis stream of their own."""
    from .support.servers import two_redis_servers

    with two_redis_servers(tmp_path, redis_url) as servers:
        yield servers


@pytest.fixture
def pg_servers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Server, Server]]:
    """Two uvicorn processes serving tests/server_app.py, committing to PostgreSQL in a schema
    of their own and sharing through LISTEN/NOTIFY (skipped without PostgreSQL)."""
    from .support.servers import two_pg_servers

    with two_pg_servers(tmp_path, request.config) as servers:
        yield servers
