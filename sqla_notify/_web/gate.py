"""What a connection must pass before ``authenticate`` runs: its Origin, and the limits.

One :class:`Gate` per router. Its :meth:`Gate.admit` is the first dependency of both
endpoints: FastAPI resolves it before any other, so a foreign Origin, or a connection over a
limit, is turned away before ``authenticate`` runs; connections inside ``authenticate``
count against the limits there. The place itself is taken by the endpoint
(:meth:`Gate.enter`, which checks the limits again, with no ``await`` between the check and
the count) and given back in its ``finally`` (:meth:`Gate.leave`); for SSE, when the response
ends.

Not a dependency with ``yield``, which would be the obvious way to hold a place: for one of
those, FastAPI keeps an ``AsyncExitStack``, an async context manager and an anyio cancel scope
alive for the whole connection, about 3 KB each, a tenth of what uvicorn itself holds for an
idle WebSocket.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import msgspec
from fastapi import HTTPException, WebSocket, WebSocketException
from starlette.requests import HTTPConnection

from .._hub import subscriber as _subscriber
from .._report import Throttle, fields
from .origin import OriginPolicy

__all__ = (
    "CLOSE_CREDENTIALS_EXPIRED", "CLOSE_POLICY_VIOLATION", "CLOSE_TRY_AGAIN_LATER", "PROTOCOL", "Gate",
    "RouterStats", "accept",
)

logger = logging.getLogger("sqla_notify")
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013
# An application code (4000-4999), after HTTP's 401 as graphql-ws uses it: the credentials
# expired; the client reconnects with fresh ones (unlike 1008, after which it gives up).
CLOSE_CREDENTIALS_EXPIRED = 4401

#: The WebSocket subprotocol of the browser client. A client that offers it is accepted with
#: it. A client may also offer ``PROTOCOL + ".bearer." + base64url(token)`` (unpadded): the
#: one header a browser lets a page set on a WebSocket handshake, and one that access logs
#: do not record. That one is never chosen, so the token is never echoed.
PROTOCOL = "sqla-notify"


async def accept(websocket: WebSocket) -> None:
    """Accept the handshake, choosing :data:`PROTOCOL` if the client offered it: a browser
    fails a handshake whose offer of subprotocols was answered with none."""
    offered = websocket.scope.get("subprotocols") or ()
    await websocket.accept(subprotocol=PROTOCOL if PROTOCOL in offered else None)


class RouterStats(msgspec.Struct, frozen=True):
    """Counters of one :func:`~sqla_notify.fastapi.notify_router` since it was built."""

    #: connections served now (WebSocket and SSE), from their admission (after
    #: ``authenticate``) until they end; this includes clients that the hub gave up on and
    #: whose socket is being closed
    connections: int
    #: connections refused for their ``Origin`` (403)
    refused_origin: int
    #: connections refused by ``max_connections`` or ``max_connections_per_client``
    refused_limit: int
    #: connections refused by ``authenticate`` (a false principal or an HTTPException)
    refused_authentication: int
    #: ``authenticate`` calls that outlasted ``handshake_timeout``
    authentication_timeouts: int
    #: connections refused because their :class:`~sqla_notify.fastapi.Credentials` had
    #: expired, or ended when they did (WebSocket 4401; SSE 401, or the ``expired`` message)
    expired: int
    #: exceptions raised by ``authenticate`` (other than ``HTTPException``): each refused its connection
    authenticate_errors: int
    #: exceptions raised by any ``authorize`` hook **in this process** (each denied its notification)
    authorize_errors: int
    #: connections inside ``authenticate`` now: they count against the limits, but not in
    #: :attr:`connections`
    authenticating: int = 0


class Gate:
    """Counts the connections of one router and turns away those it must."""

    def __init__(self, origins: OriginPolicy, max_connections: int | None, max_per_client: int | None) -> None:
        self.origins = origins
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.connections = 0
        self.per_client: dict[str, int] = {}
        # Connections inside ``authenticate`` (see :meth:`authenticating`): they count
        # against the limits in :meth:`admit`, so a full process, or a client that opens
        # handshakes it never finishes, does not get ``authenticate`` called again and again.
        self.pending = 0
        self.pending_per_client: dict[str, int] = {}
        self.refused_origin = self.refused_limit = 0
        self.refused_authentication = self.authentication_timeouts = self.expired = 0
        self._throttle = Throttle()

    async def admit(self, conn: HTTPConnection) -> None:
        """Refuse a foreign Origin (403), or a connection over a limit (WebSocket: accepted
        and closed with 1013; SSE: 503), before ``authenticate`` runs. Takes no place: see
        :meth:`enter`."""
        refused = self.origins.refuses(conn.scope)
        if refused is not None:
            self.refused_origin += 1
            self.note(
                "origin_refused", "refused a connection from Origin %.100r: neither this site's own origin "
                "(%s://%s) nor in allowed_origins", refused, conn.url.scheme, conn.headers.get("host", ""),
            )
            if isinstance(conn, WebSocket):  # closing before accepting: the server answers the handshake with 403
                raise WebSocketException(CLOSE_POLICY_VIOLATION, "origin not allowed")
            raise HTTPException(403, "origin not allowed")
        host = _host(conn)
        await self._check(conn, host, self.pending, self.pending_per_client.get(host, 0))

    @contextlib.contextmanager
    def authenticating(self, conn: HTTPConnection) -> Iterator[None]:
        """Count ``conn`` against the limits of :meth:`admit` while ``authenticate`` runs
        for it."""
        host = _host(conn)
        self.pending += 1
        self.pending_per_client[host] = self.pending_per_client.get(host, 0) + 1
        try:
            yield
        finally:
            self.pending -= 1
            _take(self.pending_per_client, host)

    async def enter(self, conn: HTTPConnection) -> str:
        """Take a place for an admitted connection, or refuse it as :meth:`admit` does if
        the limits were reached meanwhile (other connections got through ``authenticate``
        first). Returns the key to give back to :meth:`leave` when the connection ends."""
        host = _host(conn)
        await self._check(conn, host, 0, 0)
        # No await since the check: nothing else can have taken the place.
        self.connections += 1
        self.per_client[host] = self.per_client.get(host, 0) + 1
        return host

    def leave(self, host: str) -> None:
        """Give back the place that :meth:`enter` took."""
        self.connections -= 1
        _take(self.per_client, host)

    async def _check(self, conn: HTTPConnection, host: str, pending: int, pending_here: int) -> None:
        if self.max_connections is not None and self.connections + pending >= self.max_connections:
            over = f"max_connections={self.max_connections}"
        elif self.max_per_client is not None and self.per_client.get(host, 0) + pending_here >= self.max_per_client:
            over = f"max_connections_per_client={self.max_per_client}"
        else:
            return
        self.refused_limit += 1
        self.note("limit_refused", "refused a connection: %s reached", over, key=over)
        if isinstance(conn, WebSocket):  # 1013 tells the browser client to retry later
            await accept(conn)
            raise WebSocketException(CLOSE_TRY_AGAIN_LATER, "too many connections")
        raise HTTPException(503, "too many connections", headers={"Retry-After": "10"})

    def note(self, event: str, message: str, *args: object, key: str | None = None) -> None:
        """Log a warning with ``event`` (its ``extra`` field), at most once per ``key``
        (default: ``event``) per interval."""
        missed = self._throttle.due(key or event)
        if missed is not None:
            logger.warning(message + (f" ({missed} more since the last report)" if missed else ""), *args,
                           extra=fields(event))

    def stats(self, authenticate_errors: int) -> RouterStats:
        """The counters now."""
        return RouterStats(
            self.connections, self.refused_origin, self.refused_limit, self.refused_authentication,
            self.authentication_timeouts, self.expired, authenticate_errors, _subscriber.AUTHORIZE_ERRORS.count,
            self.pending,
        )


def _host(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client is not None else ""


def _take(counts: dict[str, int], host: str) -> None:
    left = counts[host] - 1
    if left:
        counts[host] = left
    else:
        del counts[host]
