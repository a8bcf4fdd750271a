"""One connected client, as the hub sees it: its subscription and its bounded queue."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any, Callable, Union

from ._notification import Notification
from ._report import HookErrors
from .types import Authorize

__all__ = ("Frame", "Subscriber")

#: exceptions raised by ``authorize`` hooks in this process; each denied its notification
AUTHORIZE_ERRORS = HookErrors("authorize")


class _Entry:
    """One notification as the hub keeps it: cursor, record and encoded frame."""

    __slots__ = ("seq", "id", "notification", "text", "message")

    def __init__(self, seq: int, id: str, notification: Notification, text: str) -> None:
        self.seq = seq
        self.id = id
        self.notification = notification
        self.text = text
        #: the ASGI message, built once and shared by every WebSocket that sends it
        self.message = {"type": "websocket.send", "text": text}


Frame = Union[_Entry, str]  # a notification, or an encoded control message


#: the default of :attr:`Subscriber.reply_budget`, in bytes
REPLY_BUDGET = 128 * 1024


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Subscriber:
    """One connected client: what it wants, and its bounded queue of frames to send.

    Created by :meth:`Hub.subscribe`. A transport drains it in one of two ways: it pulls with
    :meth:`frames` (SSE), or it sets ``_pump`` and is called when frames arrive and no writer
    of its (``_writer``) is running (WebSocket: an idle connection then costs no task).
    """

    __slots__ = (
        "collections", "principal", "authorize", "_queue", "_waiter", "_pump", "_writer", "_due", "_ready",
        "_overflowed", "_allowance", "_busy", "close_code", "close_reason", "on_close", "reply_budget",
        "_replies", "_replies_in", "_subscribed_at", "__weakref__",
    )

    def __init__(self, collections: frozenset[str] | None, principal: Any, authorize: Authorize | None) -> None:
        #: the collections it receives; ``None`` means all
        self.collections = collections
        self.principal = principal
        self.authorize = authorize
        # A list, swapped for a new one when a writer takes it: smaller than a deque (this
        # object exists once per connection) and no copy per batch.
        self._queue: list[Frame] = []
        self._waiter: asyncio.Future[None] | None = None
        self._pump: Callable[[], object] | None = None
        # Set by the hub: schedules ``_pump`` for the end of the current loop step, once, so
        # that a burst of notifications is sent by one writer run, not one run per frame.
        self._ready: Callable[[Subscriber], object] | None = None
        self._due = False
        self._writer: asyncio.Task[None] | None = None
        self._overflowed = False
        # Frames admitted beyond the hub's bound until the transport first takes the queue:
        # the welcome and a replay, which must reach the client whole (set by the hub).
        self._allowance = 0
        # The transport has taken frames and not yet come back for more: only then can a
        # full queue mean that the client is not keeping up (rather than that a burst
        # arrived before its writer even ran).
        self._busy = False
        #: set when the hub has given up on this client (1013: too slow, 1001: shutting
        #: down); :meth:`frames` then ends and the transport closes with this code
        self.close_code: int | None = None
        #: why, for the close frame ("" for the hub's own reasons: 1013 and 1001 say it all)
        self.close_reason = ""
        #: set by the transport: called when the hub gives up on the client, to tear the
        #: connection down even if its writer is stuck sending to a client that stopped reading
        self.on_close: Callable[[], object] | None = None
        #: the most memory, in bytes, that replies to the client's own messages (``subscribed``,
        #: ``error``) may take while they wait in its queue; set by the transport
        self.reply_budget = REPLY_BUDGET
        # Those replies: their bytes, the queue list they are in (the writer swaps the list
        # when it takes it, which makes the count stale without touching the send path), and
        # where the latest ``subscribed`` waits in it (-1: none).
        self._replies = 0
        self._replies_in: list[Frame] | None = None
        self._subscribed_at = -1

    def wants(self, notification: Notification) -> bool:
        """Whether this client subscribed to, and may see, ``notification``."""
        if self.collections is not None and notification.collection not in self.collections:
            return False
        if self.authorize is None:
            return True
        try:
            return bool(self.authorize(self.principal, notification))
        except Exception as exc:  # noqa: BLE001 - one broken check must not stop delivery to others
            # Fail closed. Logged once per exception type per interval, and never with the
            # principal or the notification: one line per client and notification stalls
            # the loop, and either may carry a secret.
            AUTHORIZE_ERRORS.record(exc, "the notification was not sent to that client")
            return False

    def _admit_reply(self, frame: str, *, subscribed: bool) -> bool:
        """Account for a reply about to be queued; ``False`` if it does not fit the budget.

        A ``subscribed`` replaces one still waiting (it lists the whole set, so the older one
        says nothing the newer does not): only what the transport has taken can pile up.
        One reply always fits, however large, so that a budget smaller than the largest
        ``subscribed`` cannot refuse every subscription.
        """
        queue = self._queue
        if self._replies_in is not queue:  # the writer took what waited: start afresh
            self._replies_in = queue
            self._replies = 0
            self._subscribed_at = -1
        if subscribed and self._subscribed_at >= 0:
            self._replies -= sys.getsizeof(queue.pop(self._subscribed_at))
            self._subscribed_at = -1
        size = sys.getsizeof(frame)
        if self._replies and self._replies + size > self.reply_budget:
            return False
        self._replies += size
        if subscribed:
            self._subscribed_at = len(queue)  # where ``_put`` will append it
        return True

    def _forget_replies(self) -> None:
        """The queue was cut short in place (the hub's overflow policy): recount from empty."""
        self._replies_in = None

    def _put(self, frame: Frame) -> None:
        self._queue.append(frame)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self._writer is None and self._pump is not None and not self._due:
            if self._ready is None:
                self._pump()
            else:
                self._due = True
                self._ready(self)

    def _take(self) -> list[Frame]:
        """Everything queued, leaving the queue empty: the client is reading again."""
        batch = self._queue
        self._queue = []
        self._overflowed = False
        self._allowance = 0
        self._busy = True
        return batch

    def _close(self, code: int, reason: str = "") -> None:
        self.close_code = code
        self.close_reason = reason
        self._wake()
        if self.on_close is not None:
            self.on_close()

    async def frames(self, keepalive: float | None = None) -> AsyncIterator[list[Frame]]:
        """Yield what is queued, as lists (so a transport can write them in one go).

        Ends when the hub gives up on the client (see :attr:`close_code`). With
        ``keepalive``, yields an empty list after that many idle seconds, for a transport
        that must send something to keep proxies from closing the connection.
        """
        loop = asyncio.get_running_loop()
        while self.close_code is None:
            self._busy = False  # back for more: what it took has been sent
            if not self._queue:
                waiter = self._waiter = loop.create_future()
                timer = None if keepalive is None else loop.call_later(keepalive, _release, waiter)
                try:
                    await waiter
                finally:
                    self._waiter = None
                    if timer is not None:
                        timer.cancel()
                if not self._queue and self.close_code is None:
                    yield []  # idle for ``keepalive`` seconds
                continue
            yield self._take()
