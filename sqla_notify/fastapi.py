"""FastAPI integration: serve a :class:`~sqla_notify.Hub` over WebSocket and Server-Sent Events.

.. code-block:: python

    hub = Hub()
    notifier = Notifier(hub)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with hub:
            yield

    app = FastAPI(lifespan=lifespan)
    router = notify_router(
        hub, collections={"forums"}, authenticate=Depends(get_current_user), authorize=may_see,
    )
    app.include_router(router, prefix="/notify")

Routes (relative to the prefix): ``GET /ws`` (WebSocket), ``GET /events`` (the same stream as
Server-Sent Events), ``GET /sqla-notify.js`` (the browser client) and ``/sqla-notify.d.ts``.
The wire protocol is described once, in the docs (``docs/protocol.md``); what keeps it safe,
in ``docs/security.md``.

Every connection passes, in order: the ``Origin`` check (a page of another site is refused
with 403), the connection limits, then ``authenticate``. Only the ``collections`` named
reach browsers. **Without** ``authenticate`` **and** ``authorize`` **those are open**:
anyone who can reach the route sees every notification of them. Credentials that expire
(:class:`Credentials`) end the connection when they do (4401).

For the application's own endpoints: :func:`notify_origin` keeps a request's changes from
being sent back to the tab that made it (echo suppression), and :func:`snapshot_cursor`
gives a snapshot the cursor to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from pathlib import Path
from typing import Any, Literal

try:
    from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect, params
    from fastapi.responses import FileResponse, StreamingResponse
    from starlette.requests import HTTPConnection
    from starlette.types import Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f'sqla_notify.fastapi needs FastAPI ({exc.name} is missing): pip install "sqla_notify[fastapi]"'
    ) from exc

from ._hub.hub import Hub
from ._hub.protocol import Subscribe, clip, decode_client_message
from ._hub.subscriber import REPLY_BUDGET, Entry, Frame, Subscriber
from ._report import HookErrors, fields
from . import _timing
from ._web import eager
from ._web.catalog import Catalog, check_filters
from ._web.auth import Admission, Credentials, authentication, bearer_token
from ._web.endpoints import notify_connection, notify_origin, snapshot_cursor
from ._web.gate import CLOSE_CREDENTIALS_EXPIRED, CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER, Gate, RouterStats, accept
from ._web.origin import OriginPolicy
from ._web.shutdown import ShutdownHook
from .types import Authenticate, Authorize

__all__ = (
    "ALL", "Authenticate", "Credentials", "NotifyRouter", "RouterStats", "bearer_token", "notify_connection",
    "notify_origin", "notify_router", "snapshot_cursor",
)

logger = logging.getLogger("sqla_notify")


def _client_folder() -> Path:
    """Where the browser client's two files are: ``sqla_notify/static/`` in a wheel (hatch's
    ``force-include`` copies them there), else ``clients/js/`` of the source checkout that an
    editable install imports from. The one source is ``clients/js/``, the npm package."""
    packaged = Path(__file__).parent / "static"
    return packaged if (packaged / "sqla-notify.js").is_file() else Path(__file__).parent.parent / "clients" / "js"


STATIC = _client_folder()
CLOSE_INTERNAL_ERROR = 1011
# How a refusal by ``authenticate`` ends a WebSocket (accepted, then closed, so that the
# browser client sees the code) and an SSE request.
_WS_REFUSAL = {
    "unauthenticated": (CLOSE_POLICY_VIOLATION, "not authenticated"),  # the client does not retry
    "expired": (CLOSE_CREDENTIALS_EXPIRED, "credentials expired"),  # it retries, with fresh ones
    "error": (CLOSE_INTERNAL_ERROR, "authentication failed"),
    "timeout": (CLOSE_TRY_AGAIN_LATER, "authentication timed out"),
}
_HTTP_REFUSAL = {
    "unauthenticated": (403, "not authenticated"),
    "expired": (401, "credentials expired"),
    "error": (500, "authentication failed"),
    "timeout": (503, "authentication timed out"),
}
_HTTP_REFUSAL_HEADERS = {
    503: {"Retry-After": "10"},
    401: {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="credentials expired"'},
}
# The last message of an SSE stream whose credentials expired (WebSocket: close code 4401).
_SSE_EXPIRED = 'data: {"type":"expired"}\n\n'
# ... and of one the server let go of, shutting down (WebSocket: close code 1001).
_SSE_GOAWAY = 'data: {"type":"goaway"}\n\n'
CLOSE_GOING_AWAY = 1001


def _expire(hub: Hub, sub: Subscriber, gate: Gate) -> None:
    """The connection's credentials expired: end it (a ``call_later`` callback)."""
    if sub.close_code is None:
        gate.expired += 1
        hub.disconnect(sub, CLOSE_CREDENTIALS_EXPIRED)


def _expiry_timer(hub: Hub, sub: Subscriber, gate: Gate, expires_at: float | None) -> asyncio.TimerHandle | None:
    """One timer handle per connection whose credentials expire; cancel it when the connection ends."""
    if expires_at is None:
        return None
    return asyncio.get_running_loop().call_later(max(0.0, expires_at - time.time()), _expire, hub, sub, gate)


class NotifyRouter(APIRouter):
    """What :func:`notify_router` returns: an ``APIRouter`` that also keeps counters."""

    _gate: Gate
    _authenticate_errors: HookErrors

    def stats(self) -> RouterStats:
        """Counters since the router was built: connections served now, and refusals."""
        return self._gate.stats(self._authenticate_errors.count)


def _check_positive(
    name: str, value: object, *, optional: bool = False, integer: bool = False, unit: str = "seconds"
) -> None:
    if optional and value is None:
        return
    kind: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:  # type: ignore[operator]
        expected = ("an int >= 1" if integer else f"{unit} > 0") + (" or None" if optional else "")
        raise ValueError(f"notify_router({name}=...) expected {expected}, got {value!r}")


#: ``notify_router(hub, collections=ALL)``: publish every collection (a prototype's choice).
ALL: Literal["*"] = "*"


def _public(collections: Collection[str] | Literal["*"] | None) -> frozenset[str] | None:
    """The public collections (``None``: all of them), or a clear error."""
    if collections is None:
        raise TypeError(
            "notify_router() needs collections=: the names of the collections browsers may "
            "receive, e.g. collections={'forums', 'posts'} (nothing else reaches them), or "
            "collections=ALL to publish every collection, primary keys included (a prototype)"
        )
    if collections == ALL:
        return None
    if isinstance(collections, str) or not all(isinstance(c, str) and c for c in collections):
        raise TypeError(
            f"notify_router(collections=...) expected a collection of non-empty names or ALL, "
            f"got {collections!r}"
        )
    return frozenset(collections)


def notify_router(
    hub: Hub,
    *,
    authenticate: Authenticate | params.Depends | None = None,
    authorize: Authorize | None = None,
    collections: Collection[str] | Literal["*"] | None = None,
    filters: Mapping[str, Collection[str]] | None = None,
    allowed_origins: Collection[str] = (),
    max_connections: int | None = None,
    max_connections_per_client: int | None = None,
    handshake_timeout: float = 10.0,
    max_message_size: int = 4096,
    max_collections: int = 256,
    max_message_rate: float = 10.0,
    max_message_burst: int = 50,
    max_reply_bytes: int = REPLY_BUDGET,
    sse_keepalive: float = 15.0,
    close_grace: float = 10.0,
    shutdown_grace: float | None = 5.0,
) -> NotifyRouter:
    """Build the router that serves ``hub``.

    A connection is checked in this order; the first refusal ends it.

    1. ``Origin``: a browser request whose ``Origin`` is neither the request's own origin
       (the connection's scheme and ``Host`` header) nor in ``allowed_origins`` is refused
       with HTTP 403 (the WebSocket handshake too). Requests without ``Origin`` pass: they
       do not come from a browser page, so they carry no ambient cookies.
    2. The limits: the WebSocket is accepted and closed with 1013 (the browser client
       retries later); SSE is answered 503 with ``Retry-After``.
    3. ``authenticate``. Refusal closes the WebSocket with 1008 (the browser client does not
       retry) or answers SSE with 403; a hook that raises, 1011 or 500; one that outlasts
       ``handshake_timeout``, 1013 or 503. The exception's message is never logged.
       :class:`Credentials` that have expired close the WebSocket with 4401 (the browser
       client reconnects with fresh credentials) or answer SSE with 401.

    A connection admitted with :class:`Credentials` is ended when they expire: the
    WebSocket is closed with 4401, the SSE stream ends with ``{"type": "expired"}``.

    Where the credentials come from is up to ``authenticate``: a session cookie (browsers
    send it with the WebSocket handshake and with ``EventSource``), or a token found by
    :func:`bearer_token` (the browser client's ``auth`` option sends it in the
    ``Sec-WebSocket-Protocol`` header, which access logs do not record; other clients may
    send ``Authorization: Bearer``). The handshake of a client that offers the
    ``sqla-notify`` subprotocol is accepted with it, never with a token.

    :param authenticate: who the client is: ``None`` (everyone, as principal ``None``), a
        callable ``authenticate(conn) -> principal`` (sync or async; a sync one runs in a
        worker thread), or a FastAPI dependency, ``Depends(get_current_user)``, whose own
        parameters (``Cookie``, ``Header``, ``HTTPConnection``, sub-dependencies) FastAPI
        resolves as for any route. ``None``, ``False``, ``""`` (any false value) and an
        ``HTTPException`` refuse. Return ``Credentials(principal, expires_at)`` for
        credentials that expire; ``authorize`` then receives ``principal``.
    :param authorize: ``authorize(principal, notification) -> bool``, applied to every
        notification for every client, replays included. One that raises denies that
        notification; it is counted (:meth:`NotifyRouter.stats`) and logged once per
        exception type per minute, without the principal or the notification.
    :param collections: **required**: the collections browsers may receive; nothing else
        reaches them. A client that asks for no collection in particular receives all of
        these; one that asks for another name gets an ``error``. :data:`ALL` (``"*"``)
        publishes every collection the hub carries, for a prototype: every model of every
        attached session factory, primary keys included, goes to every client that passes
        ``authenticate`` and ``authorize``.
    :param filters: the columns clients may filter on, by collection, for subscriptions
        with ``where`` (``docs/protocol.md``, "Subscriptions"): pass
        :func:`sqla_notify.filter_columns` of your models, which lists each model's
        ``NotifyOptions(filter_by=...)``. ``None`` (default): no filtering; a ``where`` gets
        an ``error``.
    :param allowed_origins: browser origins allowed besides the request's own, exactly as
        browsers send them: ``{"https://app.example.com"}``. ``"null"`` allows sandboxed
        frames and ``file:`` pages. ``"*"`` turns the check off: **unsafe with cookie
        authentication** (any site could read the stream of a logged-in visitor). Behind a
        proxy that rewrites ``Host``, list the public origin here.
    :param max_connections: the most connections (WebSocket and SSE) this router serves at
        once, in this process, counting those inside ``authenticate``. A connection over
        it is refused before ``authenticate`` runs, or, if others took the last places
        while it ran, right after. ``None``: no limit.
    :param max_connections_per_client: the most at once from one client address
        (``conn.client.host``: behind a proxy, the proxy's, unless uvicorn runs with
        ``--forwarded-allow-ips`` naming it). ``None``: no limit.
    :param handshake_timeout: seconds ``authenticate`` may take. A sync one that times out
        cannot be stopped: its thread runs on, and its answer is ignored.
    :param max_message_size: the largest client message, in characters; larger ones get an
        ``error`` and are ignored.
    :param max_collections: the most subscriptions one client may hold (each name is 1 to
        200 characters): a collection counts one, a filter the product of its value lists'
        lengths (``{"forum_id": [1, 2], "status": ["a", "b"]}`` counts four).
    :param max_message_rate: client messages per second, sustained, on one WebSocket;
        ``max_message_burst`` may come at once. A client over the limit is closed with 1008
        (the browser client does not retry) and reason ``too many messages: ...``.
    :param max_message_burst: see ``max_message_rate``.
    :param max_reply_bytes: the most memory, in bytes, that replies to one client's own
        messages (``subscribed``, ``error``) may take while they wait to be sent. A client
        that sends messages and does not read the replies is closed with 1008 and reason
        ``too many replies waiting: ...``. A newer ``subscribed`` replaces one still waiting,
        and an ``error`` quotes at most a few names, each cut short, so one reply is small.
    :param sse_keepalive: seconds of silence after which SSE sends a comment, so that
        proxies keep the stream open. (WebSocket keep-alive is uvicorn's ping, every 20 s.)
    :param close_grace: seconds a client that the hub gave up on (it stopped reading) has
        to read again. If it does, it receives the rest of what it was being sent, then
        the end: the 1013 close frame, or the end of the SSE stream and of the connection.
        If not, the connection is cut (a WebSocket client sees 1006). Either way the client
        reconnects with its last id and is replayed what it missed, or told to ``resync``.
    :param shutdown_grace: under uvicorn, on SIGTERM or Ctrl+C: seconds the clients have to
        take what was queued for them before they are closed with 1001 "going away" (SSE:
        the stream ends with ``{"type": "goaway"}``), so that they reconnect at once, with
        their last id, to another process; uvicorn's own shutdown runs after that
        (:meth:`Hub.shutdown`, ``docs/hub.md``, "Serving"). ``None``: leave the signals
        alone (uvicorn closes WebSockets with 1012, dropping what was queued).
    :raises TypeError: if ``hub`` is not a :class:`Hub`, ``collections`` was not given (or
        is a single name), or ``authenticate`` is neither a callable nor ``Depends(...)``.
    :raises ValueError: for a limit, rate or timeout that is not positive, or an entry of
        ``allowed_origins`` that is not an origin.
    """
    if not isinstance(hub, Hub):
        raise TypeError(f"notify_router() expected a Hub, got {type(hub).__name__}: {hub!r}")
    _check_positive("close_grace", close_grace)
    _check_positive("shutdown_grace", shutdown_grace, optional=True)
    _check_positive("handshake_timeout", handshake_timeout)
    _check_positive("max_connections", max_connections, optional=True, integer=True)
    _check_positive("max_connections_per_client", max_connections_per_client, optional=True, integer=True)
    _check_positive("max_message_size", max_message_size, integer=True)
    _check_positive("max_collections", max_collections, integer=True)
    _check_positive("max_message_rate", max_message_rate, unit="messages per second")
    _check_positive("max_message_burst", max_message_burst, integer=True)
    _check_positive("max_reply_bytes", max_reply_bytes, integer=True)
    too_many = f"too many messages: over {max_message_burst} at once or {max_message_rate:g} per second"
    catalog = Catalog(_public(collections), check_filters(filters), max_collections)
    gate = Gate(OriginPolicy(allowed_origins), max_connections, max_connections_per_client)
    authenticate_errors = HookErrors("authenticate", "authenticate_error")
    admitted = authentication(authenticate, handshake_timeout, gate, authenticate_errors)
    router = NotifyRouter()
    router._gate = gate
    router._authenticate_errors = authenticate_errors
    # Put in place on the first connection: on the loop, once the server runs.
    hook = None if shutdown_grace is None else ShutdownHook(hub, shutdown_grace)

    @router.websocket("/ws")
    async def websocket_endpoint(
        websocket: WebSocket, _checked: None = Depends(gate.admit), admission: Admission = admitted
    ) -> None:
        if hook is not None:
            hook.install()
        if admission.refusal is not None:
            await accept(websocket)
            code, reason = _WS_REFUSAL[admission.refusal]
            await websocket.close(code=code, reason=reason)
            return
        place = await gate.enter(websocket)
        try:
            await accept(websocket)
            sub = _subscribe(websocket, websocket.query_params.get("last_id") or None, admission.principal)
            sub.reply_budget = max_reply_bytes
            writer = _Writer(websocket, sub, asyncio.current_task(), close_grace)
            sub.on_close = writer.close_soon
            expiry = _expiry_timer(hub, sub, gate, admission.expires_at)
            try:
                sub.set_writer(writer.start, writer.send_now)  # which starts it for the welcome (and replay)
                # The reader, here rather than in a coroutine of its own, which would cost
                # about 400 bytes more per connection. A token bucket: ``max_message_burst``
                # messages at once, refilled at ``max_message_rate`` per second. uvicorn
                # reads the next message only once this one is taken, so waiting here would
                # throttle, but a client that sends without reading would then wait too:
                # over the limit, it is closed instead.
                tokens, last = float(max_message_burst), time.monotonic()
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    if sub.close_code is not None:
                        continue  # closing: what it says no longer matters
                    now = time.monotonic()
                    tokens = min(max_message_burst, tokens + (now - last) * max_message_rate)
                    last = now
                    if tokens < 1:
                        hub.disconnect(sub, CLOSE_POLICY_VIOLATION, too_many)
                        continue
                    tokens -= 1
                    _handle(sub, message.get("text"))
            except asyncio.CancelledError:
                if not writer.reader_cancelled():
                    raise  # not ours: the server is shutting down, say
            finally:
                if expiry is not None:
                    expiry.cancel()
                writer.done()
                hub.unsubscribe(sub)
        finally:
            gate.leave(place)

    def _subscribe(conn: HTTPConnection, last_id: str | None, principal: Any) -> Subscriber:
        """Subscribe a connection to its ``collections=``, telling it what was wrong there.
        A function of its own so that nothing it made outlives it in the endpoint's frame."""
        wanted, errors = catalog.initial(conn.query_params.get("collections"))
        sub = hub.subscribe(wanted, last_id=last_id, principal=principal, authorize=authorize)
        for error in errors:
            hub.send_error(sub, error)
        return sub

    def _handle(sub: Subscriber, text: str | None) -> None:
        """Apply one message of the client's (within the rate limit)."""
        if text is None:
            hub.send_error(sub, "expected a text frame holding JSON, got a binary frame")
            return
        if len(text) > max_message_size:
            hub.send_error(sub, f"message of {len(text)} characters is over the limit of {max_message_size}")
            return
        try:
            request = decode_client_message(text)
        except ValueError as exc:
            hub.send_error(
                sub, f"invalid message: {clip(str(exc), 200)}; expected "
                f'{{"type": "subscribe" or "unsubscribe", "collections": [names or '
                f'{{"collection": name, "where": {{column: value or [values]}}}}]}}'
            )
            return
        selection, errors = catalog.parse(request.collections)
        for error in errors:
            hub.send_error(sub, error)
        if errors and not selection.names:
            return  # nothing valid to apply: the error says it all
        current = sub.selection
        if isinstance(request, Subscribe):
            if current is None:
                hub.update(sub, None)  # already receiving everything
                return
            updated = current | selection
            if len(updated) > max_collections:
                hub.send_error(sub, f"at most {max_collections} subscriptions per client, got {len(updated)}")
                return
            hub.update(sub, updated, since=request.since)
        elif current is None:
            hub.send_error(
                sub, "cannot unsubscribe from part of everything; connect with "
                "?collections=... or subscribe to a list first"
            )
        else:
            hub.update(sub, current - selection)

    @router.get("/events")
    async def events_endpoint(
        request: Request, _checked: None = Depends(gate.admit), admission: Admission = admitted
    ) -> StreamingResponse:
        if admission.refusal is not None:
            status, detail = _HTTP_REFUSAL[admission.refusal]
            raise HTTPException(status, detail, headers=_HTTP_REFUSAL_HEADERS.get(status))
        if hook is not None:
            hook.install()
        place = await gate.enter(request)  # given back when the stream ends (_EventStream)
        try:
            last_id = request.headers.get("last-event-id") or request.query_params.get("last_id") or None
            sub = _subscribe(request, last_id, admission.principal)
        except BaseException:
            gate.leave(place)  # no stream to give it back
            raise
        return _EventStream(hub, sub, sse_keepalive, close_grace, gate, place, admission.expires_at)

    @router.get("/sqla-notify.js")
    async def client_js() -> FileResponse:
        return FileResponse(STATIC / "sqla-notify.js", media_type="text/javascript")

    @router.get("/sqla-notify.d.ts")
    async def client_types() -> FileResponse:
        return FileResponse(STATIC / "sqla-notify.d.ts", media_type="application/typescript")

    return router


class _EventStream(StreamingResponse):
    """One SSE client's stream, which ends when the hub gives up on the client.

    ``Connection: close``: when the stream ends, so does the connection (``EventSource``
    reconnects with a new request anyway). A client that stopped reading cannot even take
    the end of the stream, so ``grace`` seconds after the give-up the response is cancelled:
    its task, subscriber and buffers are released, and uvicorn closes the socket (logging
    "ASGI callable returned without completing response").
    """

    def __init__(
        self, hub: Hub, sub: Subscriber, keepalive: float, grace: float, gate: Gate, place: str,
        expires_at: float | None,
    ) -> None:
        super().__init__(
            self._events(sub, keepalive), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "close"},
        )
        self.hub = hub
        self.sub = sub
        self.grace = grace
        self.task: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.cancelling = False
        self.gate = gate
        self.place = place
        self.expires_at = expires_at

    @staticmethod
    async def _events(sub: Subscriber, keepalive: float) -> Any:
        async for batch in sub.frames(keepalive=keepalive):
            if not batch:
                yield ": keep-alive\n\n"
                continue
            yield "".join(
                f"id: {f.id}\ndata: {f.text}\n\n" if isinstance(f, Entry) else f"data: {f}\n\n"
                for f in batch
            )
            if _timing.observing:  # resumed once the server took it: the commit→send latency
                _timing.sent(batch)
        if sub.close_code == CLOSE_CREDENTIALS_EXPIRED:
            yield _SSE_EXPIRED
        elif sub.close_code == CLOSE_GOING_AWAY:
            yield _SSE_GOAWAY

    def _close_soon(self) -> None:
        """The hub gave up on the client (``sub.on_close``)."""
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.grace, self._cancel)

    def _cancel(self) -> None:
        self.timer = None
        if self.task is not None:
            self.cancelling = True
            self.task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.task = asyncio.current_task()
        self.sub.on_close = self._close_soon
        expiry = _expiry_timer(self.hub, self.sub, self.gate, self.expires_at)
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            if not self.cancelling:
                raise  # not ours: the server is shutting down, say
            if sys.version_info >= (3, 11) and self.task is not None:
                self.task.uncancel()
        finally:
            self.task = None
            if expiry is not None:
                expiry.cancel()
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.hub.unsubscribe(self.sub)
            self.gate.leave(self.place)


class _Writer:
    """Sends one subscriber's frames to its WebSocket. A notification for a client with
    nothing queued is sent inside the hub's dispatch (:meth:`send_now`), and queued frames
    (a welcome, a transaction, replies) as soon as the loop is done with the current step
    (:meth:`start`), both with no task: a task exists only while a send has to wait (the
    client's socket buffer is full). An idle connection costs no task, and a client that
    stops reading blocks only its own task (the hub's overflow policy then bounds its queue).

    It also ends the connection when the hub gives up on the client: what is left of the
    queue is dropped, and once the frame being sent has gone (the client read again), the
    close frame follows. A client that stopped reading takes neither, so ``grace`` seconds
    later the reader (the endpoint's task) is cancelled, which cuts the connection. A timer
    and ``Task.cancel`` rather than a cancel scope: this object exists once per connection,
    and an anyio scope would cost about 3 KB more each.
    """

    __slots__ = ("asgi_send", "cancelling", "failed", "grace", "reader", "sub", "task", "timer", "websocket")

    def __init__(
        self, websocket: WebSocket, sub: Subscriber, reader: asyncio.Task[Any] | None, grace: float
    ) -> None:
        self.websocket = websocket
        # Frames go to the ASGI send itself, not through Starlette's ``WebSocket.send``,
        # whose checks of the connection's state cost about 340 ns a frame (a twentieth of
        # a frame's whole cost on loopback, once per client and notification). This writer
        # keeps the state that matters (``failed``; a send to a closed socket raises
        # ``OSError`` either way), and the close frame goes through Starlette.
        # tests/test_internals.py pins ``WebSocket._send``.
        self.asgi_send: Callable[[Message], Coroutine[Any, Any, None]] = getattr(websocket, "_send", websocket.send)
        self.grace = grace
        self.sub = sub
        self.failed = False
        self.reader = reader
        self.timer: asyncio.TimerHandle | None = None
        self.cancelling = False
        self.task: asyncio.Task[None] | None = None  # the writer task, while it waits to send

    def close_soon(self) -> None:
        """The hub gave up on the client (``sub.on_close``)."""
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.grace, self._cancel_reader)

    def _cancel_reader(self) -> None:
        self.timer = None
        if self.reader is not None:
            self.cancelling = True
            self.reader.cancel()

    def reader_cancelled(self) -> bool:
        """Whether a ``CancelledError`` in the reader is ours; if so, it is absorbed."""
        if not self.cancelling or self.reader is None:
            return False
        if sys.version_info >= (3, 11):
            self.reader.uncancel()
        return True

    def done(self) -> None:
        """The endpoint is ending: no more cancelling it, and no writer left behind."""
        self.reader = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()

    def start(self) -> bool:
        """Called (on the loop) when frames wait and no writer is running
        (:meth:`Subscriber.set_writer`). Sends at once, with no task per client and wake-up;
        only a writer that has to wait (the client's socket buffer is full) is left to a
        task. Whether it was."""
        if self.failed:
            return False  # the client is gone: not called again
        self.task = eager.start(self._run())
        return self.task is not None

    def send_now(self, frame: Frame) -> bool:
        """Send one frame at once, inside the hub's dispatch (:meth:`Subscriber.set_writer`):
        a notification to a client with nothing queued costs a send, as in a bare ``for ws
        in clients: await ws.send(...)`` loop, and no writer at all. ``False`` if the send has
        to wait (the client's socket buffer is full): a writer task finishes it, then sends
        what was queued meanwhile."""
        if self.failed:
            return True  # the client is gone: dropped, as the reader ends the connection
        coro = self.asgi_send(frame.message if isinstance(frame, Entry) else {"type": "websocket.send", "text": frame})
        try:
            awaited = coro.send(None)
        except StopIteration:
            if _timing.observing:  # the commit→send latency (sqla_notify.metrics)
                _timing.sent((frame,))
            return True
        except (WebSocketDisconnect, OSError):
            self.failed = True  # the client went away; the reader sees it too
            return True
        except Exception:
            self.failed = True
            logger.exception("sending to a WebSocket client failed", extra=fields("send_error", connection=self.sub.id))
            return True
        self.task = asyncio.get_running_loop().create_task(self._run((coro, awaited, frame)))
        return False

    async def _run(self, sending: tuple[Coroutine[Any, Any, None], Any, Frame] | None = None) -> None:
        """Send what waits, until nothing does. ``sending``: first finish the send that
        :meth:`send_now` began (its coroutine, what it awaits, and the frame). Driven from
        here, not wrapped beforehand: a task cancelled before its first step leaves no
        coroutine that was never awaited."""
        sub, send = self.sub, self.asgi_send
        drained = False
        try:
            if sending is not None:
                coro, awaited, frame = sending
                await eager.finish(coro, awaited)
                if _timing.observing:
                    _timing.sent((frame,))
            while sub.close_code is None:
                batch = sub.receive_nowait()
                if not batch:
                    drained = True  # which ends this writer for the subscriber too
                    return
                for frame in batch:
                    if sub.close_code is not None:
                        break  # given up on while we were sending: the close frame is next
                    await send(frame.message if isinstance(frame, Entry) else {"type": "websocket.send", "text": frame})
                if _timing.observing:  # one per wake-up: the commit→send latency (sqla_notify.metrics)
                    _timing.sent(batch)
            if sub.close_code is not None:
                self.failed = True  # nothing more to send
                # It goes out once the client reads again, within the grace (the reader is
                # cancelled after that, which ends this too).
                if asyncio.current_task() is None:
                    # Driven by hand (eager.start), outside any task: go on in one, since
                    # asyncio's timeouts need a task (Python 3.12+ raises without one).
                    await asyncio.sleep(0)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.websocket.close(sub.close_code, sub.close_reason), self.grace)
        except (WebSocketDisconnect, OSError):
            # The client went away; the reader sees it too and ends the connection.
            self.failed = True
        except Exception:
            self.failed = True
            logger.exception("sending to a WebSocket client failed", extra=fields("send_error", connection=sub.id))
        finally:
            self.task = None
            if not drained:
                sub.writer_done()
