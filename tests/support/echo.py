"""Endpoints of an application's own, for the echo suppression and snapshot tests: writes
that send ``X-Notify-Connection`` through ``notify_origin`` or ``notify_connection``, and
reads that return a snapshot with its cursor (``snapshot_cursor``). Mounted on an in-process
app (``tests/test_echo.py``, ``tests/test_snapshot.py``) and on the uvicorn one
(``tests/echo_app.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from sqla_notify import Hub, Notifier, set_origin
from sqla_notify.fastapi import notify_connection, notify_origin, notify_router, snapshot_cursor

from ..models import Forum


def echo_routes(
    hub: Hub, notifier: Notifier, sync_sessions: sessionmaker[Session], async_sessions: async_sessionmaker[AsyncSession]
) -> APIRouter:
    """The routes, under ``/echo``:

    - ``POST /echo/{kind}?name=...``: a forum, committed by the endpoint (``sync``: a ``def``
      endpoint and a ``Session``; ``async``: ``async def`` and an ``AsyncSession``), or by the
      session dependency on its way out (``sync-begin``, ``async-begin``), or in a session
      the endpoint opens itself (``inline``); ``&manual=1`` adds a ``notify(session=...)``
      of collection ``containers``.
    - ``GET /echo/{sync,async}``: every forum and the cursor (body and header).
    """
    router = APIRouter(prefix="/echo")

    def sync_session() -> Iterator[Session]:
        with sync_sessions() as session:
            yield session

    def sync_begin() -> Iterator[Session]:
        with sync_sessions.begin() as session:  # commits after the endpoint, and after notify_origin's exit
            yield session

    async def async_session() -> AsyncIterator[AsyncSession]:
        async with async_sessions() as session:
            yield session

    async def async_begin() -> AsyncIterator[AsyncSession]:
        async with async_sessions.begin() as session:
            yield session

    def add(session: Session | AsyncSession, name: str, manual: bool) -> Forum:
        forum = Forum(name=name)
        session.add(forum)
        if manual:
            notifier.notify("containers", "update", {"id": 0, "name": name}, session=session)
        return forum

    @router.post("/sync")
    def create_sync(name: str, manual: bool = False, session: Session = Depends(notify_origin(sync_session))) -> dict[str, int]:
        forum = add(session, name, manual)
        session.commit()
        return {"id": forum.id}  # a refresh: the session is in a (read) transaction again

    @router.post("/async")
    async def create_async(
        name: str, manual: bool = False, session: AsyncSession = Depends(notify_origin(async_session))
    ) -> dict[str, int]:
        forum = add(session, name, manual)
        await session.commit()
        await session.refresh(forum)
        return {"id": forum.id}

    @router.post("/sync-begin")
    def create_sync_begin(
        name: str, manual: bool = False, session: Session = Depends(notify_origin(sync_begin))
    ) -> dict[str, int]:
        forum = add(session, name, manual)
        session.flush()
        return {"id": forum.id}

    @router.post("/async-begin")
    async def create_async_begin(
        name: str, manual: bool = False, session: AsyncSession = Depends(notify_origin(async_begin))
    ) -> dict[str, int]:
        forum = add(session, name, manual)
        await session.flush()
        return {"id": forum.id}

    @router.post("/inline")
    def create_inline(name: str, manual: bool = False, connection: str | None = Depends(notify_connection)) -> dict[str, int]:
        with sync_sessions.begin() as session:
            set_origin(session, connection)
            forum = add(session, name, manual)
            session.flush()
            return {"id": forum.id}

    @router.get("/sync")
    def snapshot_sync(
        cursor: str = Depends(snapshot_cursor(hub)), session: Session = Depends(sync_session)
    ) -> dict[str, Any]:
        return {"cursor": cursor, "forums": [f.name for f in session.scalars(select(Forum).order_by(Forum.id))]}

    @router.get("/async")
    async def snapshot_async(
        cursor: str = Depends(snapshot_cursor(hub)), session: AsyncSession = Depends(async_session)
    ) -> dict[str, Any]:
        forums = (await session.scalars(select(Forum).order_by(Forum.id))).all()
        return {"cursor": cursor, "forums": [f.name for f in forums]}

    return router


def check_request_messages(got: list[dict[str, Any]], forum: int, name: str) -> None:
    """``got`` is what ``POST /echo/{kind}?name=<name>&manual=1`` sends, in any order: the
    forum it created and the ``containers`` notification it added."""
    assert sorted((m["collection"], m["data"]) for m in got) == [
        ("containers", {"id": 0, "name": name}), ("forums", {"id": forum}),
    ], got


class App:
    """An app served by ``TestClient``: the router under ``/notify`` (collections ``forums``
    and ``containers``) and :func:`echo_routes`, on ``engine``'s database (SQLite or
    PostgreSQL), sync and async sessions alike."""

    def __init__(self, engine: Engine) -> None:
        self.hub = Hub()
        notifier = Notifier(self.hub)
        self.sessions = notifier.attach(sessionmaker(engine))
        # NullPool: no connection outlives its session, none to dispose of on another loop.
        async_engine = create_async_engine(
            engine.url.set(drivername="sqlite+aiosqlite" if engine.dialect.name == "sqlite" else "postgresql+psycopg"),
            poolclass=NullPool,
        )
        self.async_sessions = notifier.attach(async_sessionmaker(async_engine))

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with self.hub:
                yield

        self.app = FastAPI(lifespan=lifespan)
        self.app.include_router(notify_router(self.hub, collections={"forums", "containers"}), prefix="/notify")
        self.app.include_router(echo_routes(self.hub, notifier, self.sessions, self.async_sessions))
        self.client = TestClient(self.app)
