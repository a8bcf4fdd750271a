"""Helpers for the tests, one module per concern. The fixtures built on them are in
``tests/conftest.py``, where pytest finds them without an import.

- ``services``: the PostgreSQL and Redis the tests run against (skipped without them,
  a failure under ``CI=true``), a private redis-server, SQLite set up for SAVEPOINT.
- ``pg``: a PostgreSQL database or role of a test's own, and the ``Note`` model.
- ``recording``: ``Recorder``, a sink that keeps every batch.
- ``hubs``: what a ``Hub`` queued for a ``Subscriber``, and bounded waits.
- ``servers``: uvicorn serving ``tests/server_app.py`` in a child process, alone or in pairs.
- ``ws``: real WebSocket clients of those servers.
- ``movers``: clients that move to the other server when theirs goes away, and a steady
  writer (the rolling-restart tests).
- ``apps``: a FastAPI app around a hub, for ``TestClient``, and ``receive`` from its WebSocket.
- ``echo``: endpoints that write with ``X-Notify-Connection`` and read snapshots with their
  cursor, the in-process app serving them, and what one write sends.

A test module imports helpers from here (or ``tests/models.py``, ``tests/rawws.py``), never
from ``conftest`` or another ``test_*`` module: ``tests/test_layout.py`` checks it.
"""
