"""A FastAPI app around a hub, for in-process tests with ``TestClient``, and reading what
its WebSocket sends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.testclient import WebSocketTestSession

from sqla_notify import Hub
from sqla_notify.fastapi import ALL, notify_router


def make_app(hub: Hub, **router_options: Any) -> FastAPI:
    """An app that runs ``hub`` for its lifespan and serves its router under ``/notify``
    (``collections`` defaults to ``ALL``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hub:
            yield

    app = FastAPI(lifespan=lifespan)
    router_options.setdefault("collections", ALL)
    app.include_router(notify_router(hub, **router_options), prefix="/notify")
    return app


def receive(ws: WebSocketTestSession) -> dict[str, Any]:
    """The next message of a ``TestClient`` WebSocket, decoded."""
    return json.loads(ws.receive_text())  # type: ignore[no-any-return]
