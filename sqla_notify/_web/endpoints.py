"""Dependencies for the application's own endpoints: echo suppression and snapshot cursors.

The wire protocol's sections "Echo suppression" and "Snapshot, then changes"
(``docs/protocol.md``) are the contract; these are its server side for a FastAPI app.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Callable

from fastapi import Depends, Header, HTTPException, Response

from .._capture.origin import release_origin, set_origin
from .._hub.hub import Hub

__all__ = ("CONNECTION_HEADER", "CURSOR_HEADER", "notify_connection", "notify_origin", "snapshot_cursor")

#: the request header that names the client connection a request comes from
CONNECTION_HEADER = "X-Notify-Connection"
#: the response header that carries the cursor a snapshot is as of
CURSOR_HEADER = "X-Notify-Cursor"
# What the hub gives a connection: secrets.token_urlsafe(12), 16 characters of the URL-safe
# base64 alphabet (Subscriber.id; tests/test_echo.py checks a real welcome against this).
_CONNECTION_ID = re.compile(r"[A-Za-z0-9_-]{16}")


async def notify_connection(
    connection: str | None = Header(
        None, alias=CONNECTION_HEADER,
        description="this tab's notification connection id (its welcome's `connection`): "
        "the changes this request commits are not sent back to that connection",
    ),
) -> str | None:
    """A FastAPI dependency: the connection id in the request's ``X-Notify-Connection``
    header, or ``None`` when there is none (or it is empty: a client not connected yet).

    For endpoints that open their sessions themselves; pass the result to
    :func:`sqla_notify.set_origin`. With a session from a dependency, use
    :func:`notify_origin` instead.

    :raises HTTPException: 400 when the header is not a connection id (16 characters:
        letters, digits, ``-`` and ``_``).
    """
    if not connection:
        return None
    if _CONNECTION_ID.fullmatch(connection) is None:
        shown = connection if len(connection) <= 40 else connection[:40] + "..."
        raise HTTPException(
            400,
            f"{CONNECTION_HEADER} expected the connection id of the notification stream's welcome "
            f"message (16 characters: letters, digits, '-' and '_'), got {shown!r} "
            f"({len(connection)} characters)",
        )
    return connection


def notify_origin(dependency: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    """Wrap the dependency that gives an endpoint its session, so that what the request
    commits is not sent back to the connection named in its ``X-Notify-Connection`` header.

    .. code-block:: python

        def get_session() -> Iterator[Session]:
            with SessionLocal() as session:
                yield session

        @app.post("/forums")
        def create_forum(name: str, session: Session = Depends(notify_origin(get_session))):
            session.add(Forum(name=name))
            session.commit()  # not sent to the tab that asked; sent to every other

    The session (``Session`` or ``AsyncSession``, for ``def`` and ``async def`` endpoints
    alike) is marked with :func:`sqla_notify.set_origin` before the endpoint runs. The mark
    lives on the session, not in a context variable, so it reaches the worker thread a sync
    endpoint runs in. When the endpoint is done with it the mark goes, except for a
    transaction still open then: ``dependency`` may commit that one on its way out (FastAPI
    runs its exit after this wrapper's), and it keeps the mark. A request without the header
    gets the session unmarked; a malformed header is answered with 400 before the endpoint
    runs.

    :param dependency: what you would pass to ``Depends``: a function (plain, ``async``, or
        a generator of either kind) that gives a ``Session`` or ``AsyncSession``. Its own
        parameters and sub-dependencies resolve as usual, and it is cached per request as
        usual: another dependency of the request that asks for it gets the same session.
    :returns: a dependency for ``Depends(...)`` that gives the same session.
    :raises TypeError: if ``dependency`` is not callable (pass the function, not
        ``Depends(function)``).
    """
    if not callable(dependency):
        raise TypeError(
            f"notify_origin() expected the session dependency itself, e.g. "
            f"notify_origin(get_session), got {type(dependency).__name__}: {dependency!r}"
        )

    async def session_with_origin(
        session: Any = Depends(dependency), connection: str | None = Depends(notify_connection)
    ) -> AsyncIterator[Any]:
        # async: FastAPI runs it on the event loop, no worker thread needed. The endpoint
        # uses the session after this returns, so whatever thread it runs in sees the mark.
        if connection is None:
            yield session
            return
        set_origin(session, connection)
        try:
            yield session
        finally:
            release_origin(session, connection)

    session_with_origin.__qualname__ = f"notify_origin({getattr(dependency, '__qualname__', dependency)!s})"
    return session_with_origin


def snapshot_cursor(hub: Hub) -> Callable[[Response], Awaitable[str]]:
    """A dependency that gives a snapshot endpoint the cursor to resume from, and sets it in
    the response's ``X-Notify-Cursor`` header.

    .. code-block:: python

        @app.get("/forums")
        def list_forums(cursor: str = Depends(snapshot_cursor(hub)), session: Session = Depends(get_session)):
            return {"cursor": cursor, "forums": [...]}  # the header carries it too

    The client then connects with ``last_id=<cursor>`` (``connect(url, {lastId: cursor})``),
    or, already connected, subscribes with ``"since": cursor``: every change committed after
    the endpoint read its data arrives; one committed just before may arrive as well, although
    the data has it already (an insert seen twice, an update of a row already up to date).
    See ``docs/protocol.md``, "Snapshot, then changes".

    The cursor is read before the endpoint runs, so before its queries. The header is set on
    the response FastAPI builds from what the endpoint returns; an endpoint that returns a
    ``Response`` of its own must set the header itself. Behind CORS, list
    ``X-Notify-Cursor`` in ``expose_headers`` for browsers to show it to scripts.

    :param hub: the hub whose router the client connects to.
    :raises TypeError: if ``hub`` is not a :class:`~sqla_notify.Hub`.
    """
    if not isinstance(hub, Hub):
        raise TypeError(f"snapshot_cursor() expected a Hub, got {type(hub).__name__}: {hub!r}")

    async def cursor(response: Response) -> str:
        # Why nothing committed after the data was read can be missed: the hub's cursor only
        # moves forward, and only once a notification has reached the hub, which is after its
        # transaction committed (after the broker delivered it, with one). So a transaction
        # that commits after this read (hence after the query that follows it) reaches the
        # hub after it too, with an id later than this cursor: a client resuming from the
        # cursor receives it. What this read cannot tell apart is a transaction committed
        # just before the query whose notification had not reached the hub yet: it is in the
        # data and arrives again. A cursor older than it could be is only ever safe.
        #
        # Threads: this dependency is async, so FastAPI runs it on the event loop, the hub's
        # own thread, even for a sync endpoint; reading ``hub.cursor`` from a worker thread
        # (as a sync endpoint may do itself) would be safe as well: the hub replaces the
        # attribute with a new immutable string, and reading an attribute is atomic, so a
        # reader sees the value before or after a notification, never a mixture.
        value = hub.cursor
        response.headers[CURSOR_HEADER] = value
        return value

    return cursor
