"""AsyncSession: aiosqlite, asyncpg and psycopg's async driver."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from sqla_notify import Notifier

from .models import Base, Container, User
from .support.recording import Recorder
from .support.services import pg_url, require_service, sqlite_savepoint_recipe

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["aiosqlite", "asyncpg", "psycopg"])
async def async_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "aiosqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        sqlite_savepoint_recipe(engine.sync_engine)
    else:
        url = pg_url(request.config).replace("+psycopg", "").replace("postgresql:", f"postgresql+{request.param}:")
        engine = create_async_engine(url)
        try:
            async with engine.connect():
                pass
        except Exception as exc:  # noqa: BLE001
            await engine.dispose()
            require_service("PostgreSQL", str(exc).splitlines()[0])
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    yield engine
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
    await engine.dispose()


@pytest.fixture
def async_factory(async_engine: AsyncEngine, notifier: Notifier) -> async_sessionmaker[AsyncSession]:
    return notifier.attach(async_sessionmaker(async_engine))  # expire_on_commit=True


async def test_commit_publishes_on_the_loop_thread(
    async_factory: async_sessionmaker[AsyncSession], sink: Recorder
) -> None:
    async with async_factory() as s:
        s.add(User(id=1, name="ann"))
        await s.commit()
    assert sink.take() == [[("people", "insert", {"id": 1, "name": "ann", "email": ""})]]
    assert sink.threads == [threading.get_ident()]


async def test_rollback_and_savepoints(async_factory: async_sessionmaker[AsyncSession], sink: Recorder) -> None:
    async with async_factory() as s:
        s.add(Container(id=1, name="rolled back"))
        await s.flush()
        await s.rollback()
        s.add(Container(id=2, name="kept"))
        sp = await s.begin_nested()
        s.add(Container(id=3, name="savepoint rolled back"))
        await s.flush()
        await sp.rollback()
        async with s.begin_nested():
            s.add(Container(id=4, name="savepoint released"))
        await s.commit()
    assert sink.take() == [[("containers", "insert", {"id": 2}), ("containers", "insert", {"id": 4})]]


async def test_update_after_expire_on_commit(async_factory: async_sessionmaker[AsyncSession], sink: Recorder) -> None:
    # Everything capture needs is copied during the flush: nothing touches the expired
    # instances after the commit, which in an AsyncSession would raise MissingGreenlet.
    async with async_factory() as s:
        u = User(id=1, name="ann")
        s.add(u)
        await s.commit()
        fresh = await s.get(User, 1)
        assert fresh is not None
        fresh.email = "ann@x"
        await s.commit()
        await s.delete(fresh)
        await s.commit()
    assert sink.take() == [
        [("people", "insert", {"id": 1, "name": "ann", "email": ""})],
        [("people", "update", {"id": 1, "email": "ann@x"})],
        [("people", "delete", {"id": 1})],
    ]


async def test_bulk_and_notify_with_async_session(
    async_factory: async_sessionmaker[AsyncSession], notifier: Notifier, sink: Recorder
) -> None:
    async with async_factory.begin() as s:
        s.add_all([Container(id=1, name="a"), Container(id=2, name="b")])
    sink.take()
    async with async_factory() as s:
        await s.execute(update(Container).where(Container.id == 2).values(name="B"))
        notifier.notify("containers", "touched", {"by": "raw sql"}, session=s)
        await s.commit()
    assert sink.take() == [[("containers", "update", {"id": 2}), ("containers", "touched", {"by": "raw sql"})]]
