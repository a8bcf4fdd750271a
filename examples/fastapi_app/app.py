"""The sqla_notify example: containers and forums that update live in every open browser,
and a forum page (``/forum?id=N``) that shows one forum's posts through a filtered
subscription: a post moved to another forum leaves it, and enters that one's page.

    bash scripts/example.sh          # uvicorn on http://127.0.0.1:8000, SQLite file ./example.db
    DATABASE_URL=postgresql+psycopg://127.0.0.1/test bash scripts/example.sh

Containers are served by sync ``def`` endpoints (a sync Session, in a worker thread); forums
by ``async def`` endpoints (an AsyncSession). One endpoint writes with raw SQL and announces it
with ``notify(..., session=...)``. Every commit reaches the page through the hub.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy import ForeignKey, String, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from sqla_notify import Hub, Notifier, NotifyOptions, filter_columns
from sqla_notify.fastapi import notify_origin, notify_router, snapshot_cursor
from sqla_notify.health import health_router
from sqla_notify.metrics import metrics_router

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///example.db")


class Base(DeclarativeBase):
    pass


class Container(Base):
    __tablename__ = "containers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    forums: Mapped[list[Forum]] = relationship(cascade="all, delete-orphan", passive_deletes=False)


class Forum(Base):
    __tablename__ = "forums"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    posts: Mapped[int] = mapped_column(default=0)
    container_id: Mapped[int] = mapped_column(ForeignKey("containers.id"))
    # Deleted with the forum by the ORM, so that each deletion is announced.
    post_rows: Mapped[list[Post]] = relationship(cascade="all, delete-orphan")


class Post(Base):
    """A post of a forum. Browsers may subscribe to one forum's posts (``filter_by``), and an
    update carries the previous values of what changed (``old``)."""

    __tablename__ = "posts"
    __sqla_notify__ = NotifyOptions(payload="row", filter_by={"forum_id"}, old=True)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    forum_id: Mapped[int] = mapped_column(ForeignKey("forums.id"), index=True)


def _async_url(url: str) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    driver = {"sqlite": "aiosqlite", "postgresql": "psycopg"}.get(backend)
    if driver is None:
        raise SystemExit(f"DATABASE_URL: expected a sqlite or postgresql URL, got {backend!r}")
    return parsed.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


engine = create_engine(DATABASE_URL)
async_engine = create_async_engine(_async_url(DATABASE_URL))
if engine.dialect.name == "sqlite":
    # WAL lets the sync and async engines read while the other writes.
    @event.listens_for(engine, "connect")
    def _wal(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

# Several worker processes (uvicorn --workers N) or hosts share notifications through Redis
# (REDIS_URL=redis://...) or, with BROKER=postgres, through the PostgreSQL DATABASE_URL.
if os.environ.get("BROKER") == "postgres":
    hub = Hub(broker=DATABASE_URL)
else:
    hub = Hub(broker=os.environ.get("REDIS_URL") or None)
notifier = Notifier(hub)
SyncSession = notifier.attach(sessionmaker(engine))
AsyncSessionLocal = notifier.attach(async_sessionmaker(async_engine, expire_on_commit=False))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # several workers start at once: one at a time
            conn.execute(text("SELECT pg_advisory_xact_lock(727171)"))
        Base.metadata.create_all(conn)
    async with hub:  # the hub runs on this event loop
        yield
    await async_engine.dispose()
    engine.dispose()


app = FastAPI(title="sqla_notify example", lifespan=lifespan)
notify = notify_router(hub, collections={"containers", "forums", "posts"}, filters=filter_columns(Base))
app.include_router(notify, prefix="/notify")
# For operators (docs/operations.md): Prometheus metrics, liveness and readiness. In
# production, serve /metrics where only Prometheus reaches it.
app.include_router(metrics_router(hub, router=notify, notifier=notifier))  # GET /metrics
app.include_router(health_router(hub))  # GET /livez, GET /readyz


def sync_session() -> Iterator[Session]:
    with SyncSession() as session:
        yield session


async def async_session() -> AsyncIterator[AsyncSession]:
    async with AsyncSessionLocal() as session:
        yield session


class ContainerIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class ForumIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    container_id: int


def _container(c: Container) -> dict[str, Any]:
    return {"id": c.id, "name": c.name}


def _forum(f: Forum) -> dict[str, Any]:
    return {"id": f.id, "name": f.name, "posts": f.posts, "container_id": f.container_id}


@app.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(Path(__file__).parent / "static" / "index.html")


@app.get("/forum", include_in_schema=False)
async def forum_page() -> FileResponse:
    return FileResponse(Path(__file__).parent / "static" / "forum.html")


@app.get("/api/snapshot")
async def snapshot(session: AsyncSession = Depends(async_session)) -> dict[str, Any]:
    """Everything on the page, and the cursor it is as of (read first: nothing falls between)."""
    cursor = hub.cursor
    containers = (await session.scalars(select(Container).order_by(Container.id))).all()
    forums = (await session.scalars(select(Forum).order_by(Forum.id))).all()
    return {"cursor": cursor, "containers": [_container(c) for c in containers], "forums": [_forum(f) for f in forums]}


# -- containers: sync endpoints, a sync Session in a worker thread -------------------------


@app.get("/api/containers")
def list_containers(session: Session = Depends(sync_session)) -> list[dict[str, Any]]:
    return [_container(c) for c in session.scalars(select(Container).order_by(Container.id))]


@app.post("/api/containers", status_code=201)
def create_container(body: ContainerIn, session: Session = Depends(sync_session)) -> dict[str, Any]:
    container = Container(name=body.name)
    session.add(container)
    session.commit()
    return _container(container)


@app.delete("/api/containers/{container_id}", status_code=204)
def delete_container(container_id: int, session: Session = Depends(sync_session)) -> None:
    container = session.get(Container, container_id)
    if container is None:
        raise HTTPException(404, f"no container {container_id}")
    session.delete(container)  # its forums go by cascade, and are announced too
    session.commit()


# -- forums: async endpoints, an AsyncSession ----------------------------------------------


@app.get("/api/forums")
async def list_forums(session: AsyncSession = Depends(async_session)) -> list[dict[str, Any]]:
    return [_forum(f) for f in (await session.scalars(select(Forum).order_by(Forum.id))).all()]


@app.post("/api/forums", status_code=201)
async def create_forum(body: ForumIn, session: AsyncSession = Depends(async_session)) -> dict[str, Any]:
    if await session.get(Container, body.container_id) is None:
        raise HTTPException(422, f"no container {body.container_id}")
    forum = Forum(name=body.name, container_id=body.container_id)
    session.add(forum)
    await session.commit()
    return _forum(forum)


@app.patch("/api/forums/{forum_id}")
async def rename_forum(forum_id: int, body: ContainerIn, session: AsyncSession = Depends(async_session)) -> dict[str, Any]:
    forum = await session.get(Forum, forum_id)
    if forum is None:
        raise HTTPException(404, f"no forum {forum_id}")
    forum.name = body.name
    await session.commit()
    return _forum(forum)


@app.delete("/api/forums/{forum_id}", status_code=204)
async def delete_forum(forum_id: int, session: AsyncSession = Depends(async_session)) -> None:
    forum = await session.get(Forum, forum_id)
    if forum is None:
        raise HTTPException(404, f"no forum {forum_id}")
    await session.delete(forum)
    await session.commit()


@app.post("/api/forums/{forum_id}/post")
async def add_post(forum_id: int, session: AsyncSession = Depends(async_session)) -> dict[str, int]:
    """Raw SQL the ORM does not see, announced with notify(session=...): sent on commit."""
    result = await session.execute(
        text("UPDATE forums SET posts = posts + 1 WHERE id = :id RETURNING posts"), {"id": forum_id}
    )
    posts = result.scalar_one_or_none()
    if posts is None:
        raise HTTPException(404, f"no forum {forum_id}")
    notifier.notify("forums", "update", {"id": forum_id}, session=session)
    await session.commit()
    return {"id": forum_id, "posts": posts}


# -- posts: one forum's page, a filtered subscription ---------------------------------------


class PostIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)


class PostMove(BaseModel):
    forum_id: int


def _post(p: Post) -> dict[str, Any]:
    return {"id": p.id, "title": p.title, "forum_id": p.forum_id}


@app.get("/api/forums/{forum_id}/posts")
async def list_posts(
    forum_id: int,
    cursor: str = Depends(snapshot_cursor(hub)),  # read before the query, sent as X-Notify-Cursor
    session: AsyncSession = Depends(async_session),
) -> dict[str, Any]:
    """One forum's posts, and the cursor they are as of: the page subscribes ``since`` it."""
    forum = await session.get(Forum, forum_id)
    if forum is None:
        raise HTTPException(404, f"no forum {forum_id}")
    posts = (await session.scalars(select(Post).where(Post.forum_id == forum_id).order_by(Post.id))).all()
    return {"cursor": cursor, "forum": _forum(forum), "posts": [_post(p) for p in posts]}


@app.post("/api/forums/{forum_id}/posts", status_code=201)
async def create_post(
    forum_id: int, body: PostIn, session: AsyncSession = Depends(notify_origin(async_session))
) -> dict[str, Any]:
    """The page that writes shows the post from this response; its own notification is
    not sent back to it (``notify_origin``), every other page gets it."""
    if await session.get(Forum, forum_id) is None:
        raise HTTPException(404, f"no forum {forum_id}")
    post = Post(title=body.title, forum_id=forum_id)
    session.add(post)
    await session.commit()
    return _post(post)


@app.patch("/api/posts/{post_id}")
def move_post(post_id: int, body: PostMove, session: Session = Depends(notify_origin(sync_session))) -> dict[str, Any]:
    """Move a post to another forum: it leaves the first forum's pages and enters the other's."""
    post = session.get(Post, post_id)
    if post is None:
        raise HTTPException(404, f"no post {post_id}")
    if session.get(Forum, body.forum_id) is None:
        raise HTTPException(422, f"no forum {body.forum_id}")
    post.forum_id = body.forum_id
    session.commit()
    return _post(post)
