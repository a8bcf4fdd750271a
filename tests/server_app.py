"""An app for the tests that run a real uvicorn server (tests/test_server.py).

Configured by environment variables, since it runs in a child process:
``APP_DB`` (SQLite file), ``APP_QUEUE_SIZE``, ``APP_REPLAY``, ``APP_CLOSE_GRACE``,
``APP_SHUTDOWN_GRACE`` (seconds, or ``none``), ``APP_REDIS``,
``APP_STREAM`` and ``APP_MAXLEN`` (share notifications with other processes through a Redis
Stream that keeps ``APP_MAXLEN`` entries, default: the replay window), ``APP_PG`` and ``APP_CHANNEL``
(commit to PostgreSQL instead of SQLite, and share through LISTEN/NOTIFY), ``APP_PG_SECRET``
(authenticate its payloads with this secret).
Security: ``APP_COLLECTIONS`` (the public ones, comma-separated, or ``*`` for all; default
forums,containers),
``APP_ALLOWED_ORIGINS`` (comma-separated), ``APP_MAX_CONNECTIONS``,
``APP_MAX_PER_CLIENT``, ``APP_HANDSHAKE_TIMEOUT``, ``APP_MESSAGE_RATE``, ``APP_MESSAGE_BURST``,
``APP_REPLY_BYTES``, and ``APP_AUTH=depends`` (authenticate
with a FastAPI dependency reading the ``session`` cookie instead of a token).
Expiring credentials: ``POST /tokens?name=...&ttl=...`` issues a token that authenticates
``name`` until ``ttl`` seconds from now; ``GET /tokens/seen`` lists those authenticated, in order.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Cookie, Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker
from starlette.requests import HTTPConnection

from sqla_notify import Broker, Hub, Notification, Notifier
from sqla_notify.fastapi import ALL, Credentials, bearer_token, notify_router

from .models import Base, Forum

DB = os.environ["APP_DB"]
broker: Broker | None = None
if "APP_PG" in os.environ:
    from sqla_notify.postgres import PostgresBroker

    engine = create_engine(os.environ["APP_PG"])
    async_engine = create_async_engine(os.environ["APP_PG"])
    broker = PostgresBroker(os.environ["APP_PG"], channel=os.environ["APP_CHANNEL"])
    if "APP_PG_SECRET" in os.environ:
        broker = PostgresBroker(os.environ["APP_PG"], channel=os.environ["APP_CHANNEL"],
                                secret=os.environ["APP_PG_SECRET"])
else:
    engine = create_engine(f"sqlite:///{DB}", connect_args={"timeout": 30})
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{DB}", connect_args={"timeout": 30})
if "APP_REDIS" in os.environ:
    from sqla_notify.redis import RedisBroker

    maxlen = int(os.environ["APP_MAXLEN"]) if "APP_MAXLEN" in os.environ else None
    broker = RedisBroker(os.environ["APP_REDIS"], stream=os.environ["APP_STREAM"], maxlen=maxlen)
hub = Hub(
    queue_size=int(os.environ.get("APP_QUEUE_SIZE", "1000")),
    replay=int(os.environ.get("APP_REPLAY", "1000")),
    broker=broker,
)
notifier = Notifier(hub)
SyncSession = notifier.attach(sessionmaker(engine))
AsyncSession = notifier.attach(async_sessionmaker(async_engine))


RELEASE = threading.Event()  # set at shutdown: a "slow" authentication returns
TOKENS: dict[str, tuple[str, float]] = {}  # issued by POST /tokens: name, expiry
SEEN: list[str] = []  # the issued tokens that authenticated a connection, in order


def authenticate(conn: HTTPConnection) -> Any:
    """Token "secret-<name>" authenticates <name>; no token: anonymous (None is rejection).
    The token travels as the browser client sends it, in ``Authorization: Bearer``, or in
    the query (``?token=``: this app opts in). One issued by ``POST /tokens`` expires.

    Misbehaving hooks, by token: "false" and "empty" return ``False`` and ``""``; "slow"
    blocks its thread until shutdown; "raise-..." raises with the token in the message.
    """
    token = bearer_token(conn, query="token")
    if token is None:
        return "anonymous"
    if token in TOKENS:
        SEEN.append(token)
        name, expires_at = TOKENS[token]
        return Credentials(name, expires_at)
    if token in ("false", "empty"):
        return {"false": False, "empty": ""}[token]
    if token == "slow":
        RELEASE.wait(60)
        return "slow"
    if token.startswith("raise-"):
        raise ValueError(f"cannot decode token {token}")
    return token.removeprefix("secret-") if token.startswith("secret-") else None


def get_current_user(session: str | None = Cookie(None)) -> str | None:
    """An application's usual dependency: the user of the session cookie."""
    if session is None:
        raise HTTPException(401, "not logged in")
    return {"c00kie": "alice"}.get(session)


def authorize(principal: Any, n: Notification) -> bool:
    """Forums named "private-<name>" are for <name> only; "boom-..." makes it raise, quoting the row."""
    name = (n.data or {}).get("name", "")
    if name.startswith("boom"):
        raise RuntimeError(f"cannot decide for {principal!r} on {n.data!r}")
    return not name.startswith("private-") or name == f"private-{principal}"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    Base.metadata.create_all(engine)
    async with hub:
        yield
    RELEASE.set()


def _optional_int(name: str) -> int | None:
    return int(os.environ[name]) if name in os.environ else None


def _limits() -> dict[str, Any]:
    """The per-client message limits named in the environment (the router's defaults otherwise)."""
    names = {"APP_MESSAGE_RATE": "max_message_rate", "APP_MESSAGE_BURST": "max_message_burst",
             "APP_REPLY_BYTES": "max_reply_bytes"}
    return {option: float(os.environ[var]) if var == "APP_MESSAGE_RATE" else int(os.environ[var])
            for var, option in names.items() if var in os.environ}


PUBLIC = os.environ.get("APP_COLLECTIONS", "forums,containers")
app = FastAPI(lifespan=lifespan)
router = notify_router(
    hub, collections=ALL if PUBLIC == "*" else PUBLIC.split(","),
    authenticate=Depends(get_current_user) if os.environ.get("APP_AUTH") == "depends" else authenticate,
    authorize=authorize,
    close_grace=float(os.environ.get("APP_CLOSE_GRACE", "10")),
    shutdown_grace=None if os.environ.get("APP_SHUTDOWN_GRACE") == "none" else float(os.environ.get("APP_SHUTDOWN_GRACE", "5")),
    allowed_origins=[o for o in os.environ.get("APP_ALLOWED_ORIGINS", "").split(",") if o],
    max_connections=_optional_int("APP_MAX_CONNECTIONS"),
    max_connections_per_client=_optional_int("APP_MAX_PER_CLIENT"),
    handshake_timeout=float(os.environ.get("APP_HANDSHAKE_TIMEOUT", "10")),
    **_limits(),
)
app.include_router(router, prefix="/notify")
if os.environ.get("APP_METRICS"):  # here only: the core tests run where the extra is not installed
    from sqla_notify.metrics import metrics_router

    app.include_router(metrics_router(hub, router=router))


@app.post("/tokens")
def issue_token(name: str, ttl: float) -> dict[str, str]:
    """A token for ``name`` that expires ``ttl`` seconds from now (negative: already expired)."""
    token = f"tok-{secrets.token_urlsafe(12)}"
    TOKENS[token] = (name, time.time() + ttl)
    return {"token": token}


@app.get("/tokens/seen")
def seen_tokens() -> list[str]:
    return SEEN


@app.get("/page")
def page() -> HTMLResponse:
    """An empty page of this origin, for a browser to run the client in."""
    return HTMLResponse('<!doctype html><title>sqla_notify test</title><link rel="icon" href="data:,">')


@app.post("/forums/sync")
def create_sync(name: str) -> dict[str, int]:
    with SyncSession.begin() as s:
        forum = Forum(name=name)
        s.add(forum)
        s.flush()
        return {"id": forum.id}


@app.post("/forums/async")
async def create_async(name: str) -> dict[str, int]:
    async with AsyncSession.begin() as s:
        forum = Forum(name=name)
        s.add(forum)
        await s.flush()
        return {"id": forum.id}


@app.post("/forums/many")
async def create_many(count: int, name: str = "many") -> dict[str, list[int]]:
    """``count`` forums in one transaction: one batch of ``count`` notifications."""
    async with AsyncSession.begin() as s:
        forums = [Forum(name=f"{name}-{i}") for i in range(count)]
        s.add_all(forums)
        await s.flush()
        return {"ids": [forum.id for forum in forums]}


@app.post("/burst")
async def burst(count: int, size: int = 0, name: str = "burst", collection: str = "forums") -> dict[str, str]:
    """``count`` manual notifications of about ``size`` bytes each, one batch per call."""
    for i in range(count):
        notifier.notify(collection, "update", {"id": i, "name": name, "pad": "x" * size})
    return {"cursor": hub.cursor}


@app.get("/stats")
async def stats() -> dict[str, int | str]:
    """The hub's counters, and the router's prefixed with ``router_``; ``broker_rejected``:
    payloads a PostgreSQL broker dropped (forged or copied)."""
    hub_stats, router_stats = hub.stats(), router.stats()
    rejected = getattr(broker, "rejected", None)
    return {
        **{f: getattr(hub_stats, f) for f in hub_stats.__struct_fields__},
        **{f"router_{f}": getattr(router_stats, f) for f in router_stats.__struct_fields__},
        **({"broker_rejected": rejected} if isinstance(rejected, int) else {}),
    }
