"""tests/server_app.py, plus the application's own endpoints of tests/support/echo.py: writes
that send ``X-Notify-Connection`` and snapshots with their cursor, for the tests that run two
processes (tests/test_echo_processes.py)."""

from __future__ import annotations

from .server_app import AsyncSession, SyncSession, app, hub, notifier
from .support.echo import echo_routes

__all__ = ("app",)

app.include_router(echo_routes(hub, notifier, SyncSession, AsyncSession))
