"""One connected client, as the hub sees it: its subscription and its bounded queue of frames.

A :class:`Subscriber` owns its queue, like anyio's memory object streams: the hub offers
frames with :meth:`~Subscriber.send_nowait` (a whole hand-over with
:meth:`~Subscriber.send_batch_nowait`), which raise :class:`WouldBlock` when the queue is
full instead of letting the caller inspect it. A transport takes them by pull
(:meth:`~Subscriber.frames`, or :meth:`~Subscriber.receive_nowait`) or by push
(:meth:`~Subscriber.set_writer`). Everything here runs on the event loop and never blocks.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any, Callable, NoReturn, Union

import msgspec

from .._errors import WouldBlock
from .._notify.notification import Notification
from .._report import HookErrors
from ..types import Authorize
from .selection import Selection

__all__ = ("Entry", "Frame", "Subscriber")

#: exceptions raised by ``authorize`` hooks in this process; each denied its notification
AUTHORIZE_ERRORS = HookErrors("authorize", "authorize_error")


class _Record(msgspec.Struct, eq=False, gc=False):
    # Entry's constructor parameters, positional; Entry adds what it derives from them.

    #: the hub's ordering key for replay: it counts notifications; not the cursor
    seq: int
    #: the cursor a client resumes from (``last_id``; the SSE ``id:`` line)
    id: str
    #: the record the frame encodes
    notification: Notification
    #: the frame to send, encoded once (JSON)
    text: str
    #: when its transaction committed (``time.time()``; with a broker, when the broker got
    #: it, by the writing side's clock): where the commit→send latency starts; 0.0: unknown
    committed: float = 0.0


class Entry(_Record, kw_only=True, eq=False, gc=False):
    """One notification as the hub delivers it: its cursor, the record and its encoded frame.

    Built once per notification and shared by every client that receives it; read-only.

    :param seq: the hub's ordering key (see :attr:`seq`).
    :param id: the cursor (see :attr:`id`).
    :param notification: the record.
    :param text: the encoded ``notification`` message of the wire protocol.
    :param committed: see :attr:`committed`.

    A msgspec ``Struct`` that the garbage collector does not track (``gc=False``, as
    :class:`Notification`): a burst of posts keeps hundreds of thousands alive at once, and
    built in C it costs a fraction of a Python ``__init__``. Compared by identity.
    """

    #: the ASGI message (``websocket.send``) sending :attr:`text`, shared by every WebSocket
    #: that sends it: do not modify it. Always made from :attr:`text` (not a parameter)
    message: dict[str, str] = None  # type: ignore[assignment]  # set by __post_init__
    _variants: dict[str, Entry] | None = None

    def __post_init__(self) -> None:
        _force(self, "message", {"type": "websocket.send", "text": self.text})

    def variant(self, key: str, make: Callable[[], Entry]) -> Entry:
        """The same notification framed differently (``move``: ``"enter"``, ``"leave"``),
        made by ``make`` the first time and kept: encoded once, whoever receives it."""
        variants = self._variants
        if variants is None:
            variants = {}
            _force(self, "_variants", variants)
        entry = variants.get(key)
        if entry is None:
            entry = variants[key] = make()
        return entry

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Entry is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Entry is read-only: cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"Entry(seq={self.seq!r}, id={self.id!r}, notification={self.notification!r})"


_force = msgspec.structs.force_setattr  # the record is read-only: only it writes, once


#: What a transport sends: a notification (:class:`Entry`: send its ``text``, with its
#: ``id`` where the transport carries one), or an encoded control message (``welcome``,
#: ``resync``, ``subscribed``, ``error``), a JSON ``str``.
Frame = Union[Entry, str]

#: the default of :attr:`Subscriber.reply_budget`, in bytes
REPLY_BUDGET = 128 * 1024


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Subscriber:
    """One connected client: what it wants, and its bounded queue of frames to send.

    Created by :meth:`Hub.subscribe`, which queues the ``welcome`` first. Every method runs
    on the event loop and never blocks. Frames come out in the order they went in.

    **Offering** (the hub): :meth:`send_nowait` queues one frame, :meth:`send_batch_nowait`
    a whole hand-over (a transaction) or none of it. Both raise :class:`WouldBlock` when
    ``bound`` frames wait already; then :attr:`stalled` tells whether the client is not
    keeping up, and :meth:`replace_with` swaps what waits for one message.

    **Taking** (the transport), in one of two ways:

    * pull: ``async for batch in sub.frames()`` (SSE);
    * push: :meth:`set_writer` registers ``start``, called when frames wait and no writer
      runs; the writer takes with :meth:`receive_nowait` until it gets ``[]``, which ends
      it (WebSocket: an idle connection then costs no task).

    **Closing**: :meth:`close` (through :meth:`Hub.disconnect`) drops what waits; the
    transport sends what it already took, then closes with :attr:`close_code`.

    :param collections: what it receives: collection names, a :class:`Selection` (with
        filtered collections), or ``None``: everything.
    :param principal: who the client is, passed to ``authorize``.
    :param authorize: ``authorize(principal, notification) -> bool``, or ``None``.
    :param bound: the most frames that may wait, checked before each hand-over.
    :param schedule: runs a callable on the loop soon (the hub batches writer starts);
        ``None``: call it at once.
    :raises ValueError: for a ``bound`` that is not an int >= 1.
    """

    __slots__ = (
        "id", "selection", "principal", "authorize", "close_code", "close_reason", "on_close", "reply_budget",
        "_queue", "_bound", "_limit", "_waiter", "_start", "_send", "_schedule", "_writing", "_busy",
        "_overflowed", "_replies", "_replies_in", "_subscribed_at", "__weakref__",
    )

    def __init__(
        self,
        collections: Selection | Iterable[str] | None = None,
        principal: Any = None,
        authorize: Authorize | None = None,
        *,
        bound: int = 1000,
        schedule: Callable[[Callable[[], object]], object] | None = None,
    ) -> None:
        if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
            raise ValueError(f"Subscriber(bound=...) expected an int >= 1, got {bound!r}")
        #: this connection's id, random and unguessable: sent in its ``welcome`` only, it names
        #: the connection in ``X-Notify-Connection`` so that the changes its own requests
        #: cause are not sent back to it (``Notification.origin``)
        self.id = secrets.token_urlsafe(12)
        #: what it receives (collections whole, filtered ones); ``None``: everything. The hub
        #: indexes it: change it through :meth:`Hub.update`
        self.selection = Selection.of(collections)
        #: who the client is (what ``authenticate`` returned), passed to ``authorize``
        self.principal = principal
        #: ``authorize(principal, notification) -> bool``, applied to every notification
        self.authorize = authorize
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
        # A list, swapped for a new one when the transport takes it: smaller than a deque
        # (this object exists once per connection) and no copy per batch.
        self._queue: list[Frame] = []
        self._bound = bound
        # What the queue may hold before a hand-over: the bound, plus the welcome and a
        # replay until the transport first takes them (they must reach the client whole);
        # 0 once closed. One number, so that the hot path makes one comparison.
        self._limit = bound
        self._waiter: asyncio.Future[None] | None = None
        self._start: Callable[[], object] | None = None
        self._send: Callable[[Frame], bool] | None = None  # see set_writer
        self._schedule = schedule
        # ``start`` is scheduled or running, and ``writer_done`` not called yet: a burst
        # within one loop step starts one writer run, not one per frame.
        self._writing = False
        # The transport has taken frames and not yet come back for more: only then can a
        # full queue mean that the client is not keeping up (rather than that a burst
        # arrived before its writer even ran).
        self._busy = False
        self._overflowed = False
        # Replies to the client's own messages: their bytes, the queue list they are in (the
        # transport swaps the list when it takes it, which makes the count stale without
        # touching the send path), and where the latest ``subscribed`` waits in it (-1: none).
        self._replies = 0
        self._replies_in: list[Frame] | None = None
        self._subscribed_at = -1

    @property
    def collections(self) -> frozenset[str] | None:
        """The names of the collections it receives, whole or filtered; ``None``: all."""
        return None if self.selection is None else self.selection.names

    def wants(self, notification: Notification) -> bool:
        """Whether this client subscribed to, and may see, ``notification`` (its
        :attr:`selection`, then :meth:`allows`)."""
        if self.selection is not None and not self.selection.match(notification)[0]:
            return False
        return self.allows(notification)

    def allows(self, notification: Notification) -> bool:
        """Whether ``authorize`` lets this client see ``notification``.

        An ``authorize`` that raises denies (fail closed); it is counted and logged once per
        exception type per interval, without the principal or the notification.
        """
        if self.authorize is None:
            return True
        try:
            return bool(self.authorize(self.principal, notification))
        except Exception as exc:  # noqa: BLE001 - one broken check must not stop delivery to others
            # Never with the principal or the notification: either may carry a secret, and
            # one line per client and notification would stall the loop.
            AUTHORIZE_ERRORS.record(exc, "the notification was not sent to that client")
            return False

    # -- offering: the hub -----------------------------------------------------------------

    def send_nowait(self, frame: Frame, *, at_once: bool = True) -> None:
        """Queue one frame, after those waiting, and wake the transport; or, with
        ``at_once`` and nothing waiting, hand it to the transport's ``send`` (see
        :meth:`set_writer`). The hub passes ``at_once=False`` in a burst: one writer run per
        client then sends them all.

        Never blocks; on the loop only. After :meth:`close` the frame is discarded.

        :raises WouldBlock: ``bound`` frames (beyond the welcome and replay not yet taken)
            wait already; nothing was queued.
        """
        queue = self._queue
        if len(queue) >= self._limit:
            if self.close_code is not None:
                return  # given up on: only the close frame is still to go
            raise WouldBlock(f"Subscriber.send_nowait() expected fewer than {self._limit} frames waiting, got {len(queue)}")
        if at_once and not queue and not self._writing and self._send is not None:
            # Nothing waits and no writer runs: the transport sends it now (see set_writer).
            if not self._send(frame):
                self._writing = self._busy = True  # still sending it: a writer runs
            return
        queue.append(frame)
        # The transport's wake-up (``_wake``), inline: this runs once per client and notification.
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif not self._writing and self._start is not None:
            self._writing = True
            if self._schedule is None:
                self._start()
            else:
                self._schedule(self._start)

    def send_batch_nowait(self, frames: list[Frame]) -> None:
        """Queue a hand-over (one transaction, or what a broker read at once) whole, or none of it.

        The bound is checked before the hand-over, not within it: a client never sees part
        of a transaction. Never blocks; on the loop only. After :meth:`close` the frames are
        discarded.

        :raises WouldBlock: ``bound`` frames wait already, or ``frames`` alone are more than
            ``bound``; nothing was queued.
        """
        queue = self._queue
        if len(queue) >= self._limit or len(frames) > self._bound:
            if self.close_code is not None or not frames:
                return  # given up on, or nothing to hand over
            raise WouldBlock(
                f"Subscriber.send_batch_nowait() expected fewer than {self._limit} frames waiting and "
                f"a hand-over of at most {self._bound}, got {len(queue)} waiting and {len(frames)} offered"
            )
        queue.extend(frames)
        self._wake()

    def send_welcome(self, frames: list[Frame]) -> None:
        """Queue the first frames (the ``welcome``, then a replay) beyond the bound.

        They reach the client whole; until the transport first takes the queue, the bound
        applies on top of them. Called once by :meth:`Hub.subscribe`, before anything else.

        :raises RuntimeError: if frames were queued or taken already.
        """
        if self._queue or self._busy or self._limit != self._bound:
            raise RuntimeError("Subscriber.send_welcome() expected a new subscriber, got one that has frames already")
        self._queue.extend(frames)
        self._limit = self._bound + len(frames)
        self._wake()

    def send_reply_nowait(self, frame: str, *, subscribed: bool = False) -> bool:
        """Queue a reply to the client's own message, within :attr:`reply_budget`.

        A ``subscribed`` (``subscribed=True``) replaces one still waiting: it lists the whole
        set, so the older one says nothing the newer does not, and only what the transport
        has taken can pile up. One reply always fits, however large, so that a budget smaller
        than the largest ``subscribed`` cannot refuse every subscription.

        :returns: ``False`` if the replies waiting would exceed the budget: nothing was
            queued, and the client, which sends messages without reading the replies, should
            be closed (the hub closes it with 1008). ``True`` otherwise, and after :meth:`close`.
        :raises WouldBlock: as :meth:`send_nowait`.
        """
        if self.close_code is not None:
            return True
        queue = self._queue
        if self._replies_in is not queue:  # the transport took what waited: start afresh
            self._replies_in = queue
            self._replies = 0
            self._subscribed_at = -1
        if subscribed and self._subscribed_at >= 0:
            self._replies -= sys.getsizeof(queue.pop(self._subscribed_at))
            self._subscribed_at = -1
        size = sys.getsizeof(frame)
        if self._replies and self._replies + size > self.reply_budget:
            return False
        if len(queue) >= self._limit:
            raise WouldBlock(f"Subscriber.send_reply_nowait() expected fewer than {self._limit} frames waiting, got {len(queue)}")
        self._replies += size
        if subscribed:
            self._subscribed_at = len(queue)
        queue.append(frame)
        self._wake()
        return True

    @property
    def stalled(self) -> bool:
        """Whether the client is not keeping up: its transport took frames and has not come
        back for more while ``bound`` frames piled up (not merely a burst that arrived before
        its writer could start)."""
        return self._busy and len(self._queue) >= self._bound

    @property
    def overflowed(self) -> bool:
        """Whether :meth:`replace_with` ran while it was :attr:`stalled`, and its transport has
        not taken anything since: overflowing again means it is not reading at all."""
        return self._overflowed

    def replace_with(self, frame: str) -> int:
        """Drop what waits, except a ``welcome`` not yet taken (it always comes first), and
        queue ``frame`` (a ``resync``) instead, whatever the bound.

        :returns: how many frames were dropped (0 after :meth:`close`, which queues nothing).
        """
        if self.close_code is not None:
            return 0
        if self.stalled:
            self._overflowed = True
        queue = self._queue
        keep = 1 if self._limit > self._bound and queue else 0
        dropped = len(queue) - keep
        del queue[keep:]
        self._replies_in = None  # cut short in place: recount replies from empty
        queue.append(frame)
        self._wake()
        return dropped

    # -- taking: the transport -------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Whether the transport has sent everything: nothing waits, and it came back for
        more after what it took last (:meth:`Hub.shutdown` closes the client then)."""
        return not self._queue and not self._busy

    @property
    def pending(self) -> int:
        """How many frames wait to be taken."""
        return len(self._queue)

    def receive_nowait(self) -> list[Frame]:
        """Take every frame waiting, in order, leaving the queue empty. Never blocks.

        Taking frames marks the transport busy until it comes back for more. Getting ``[]``
        means it sent what it took and found nothing more: it is back, and a push writer
        is done, as with :meth:`writer_done` (the next frame starts a new one). The list is
        the transport's own.
        """
        batch = self._queue
        if not batch:
            self._busy = self._writing = False
            return []
        self._queue = []
        self._limit = self._bound
        self._overflowed = False
        self._busy = True
        return batch

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
            yield self.receive_nowait()

    def set_writer(self, start: Callable[[], object] | None, send: Callable[[Frame], bool] | None = None) -> None:
        """Drain by push: ``start()`` is called (on the loop) when frames arrive, or the
        subscriber is closed, and no writer runs. ``None`` removes the hook.

        ``start`` is called at the end of the loop step that queued the first frame (a
        burst then needs one writer run), or at once if frames wait already (the welcome).
        From then until :meth:`writer_done` a writer counts as running (:attr:`writing`),
        and ``start`` is not called again. The writer takes with :meth:`receive_nowait`
        until it gets ``[]``, which ends it (return with no ``await`` after it, or a frame
        queued meanwhile waits for the next one); a writer that stops for another reason
        (:attr:`close_code` is set, sending failed) calls :meth:`writer_done`. A ``start``
        that cannot write (its client went away) may just return: it is not called again.

        ``start`` may send at once, inside the hub's dispatch, and return a false value when
        it is done; a true value says the writer is left waiting (a task): the hub then
        starts the other clients' writers a few at a time (see :class:`Hub`).

        ``send`` (optional) sends one frame at once: :meth:`send_nowait` calls it, instead of
        queueing the frame, when nothing waits and no writer runs (a notification to an idle
        client, the usual case), as a bare ``for ws in clients: await ws.send(...)`` loop
        would. It returns ``True`` when it is done with the frame (sent, or dropped because
        the client is gone), ``False`` when it is still sending it: a writer then counts as
        running, and takes what was queued meanwhile once that frame is out, as a started
        writer does (until :meth:`receive_nowait` gives ``[]``, or :meth:`writer_done`).
        """
        self._start = start
        self._send = None if start is None else send
        if start is not None and not self._writing and (self._queue or self.close_code is not None):
            self._writing = True
            start()

    @property
    def writing(self) -> bool:
        """Whether a writer is due to start or running (see :meth:`set_writer`)."""
        return self._writing

    def writer_done(self) -> None:
        """The writer ended without getting ``[]`` from :meth:`receive_nowait` (the
        subscriber closed, or sending failed). The next frame calls ``start`` again.
        Idempotent."""
        self._writing = False
        self._busy = False

    # -- closing ---------------------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> int:
        """Give up on the client: drop what waits, set :attr:`close_code` and
        :attr:`close_reason`, wake the transport (it closes after the frame in flight) and
        call :attr:`on_close`. Idempotent: the first code stays.

        A transport ends a connection with :meth:`Hub.disconnect`, which also forgets it.

        :returns: how many frames were dropped.
        """
        if self.close_code is not None:
            return 0
        dropped = len(self._queue)
        self._queue.clear()
        self._limit = 0  # what is offered from now on is discarded
        self.close_code = code
        self.close_reason = reason
        self._wake()
        if self.on_close is not None:
            self.on_close()
        return dropped

    # -- private ---------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif not self._writing and self._start is not None:
            self._writing = True
            if self._schedule is None:
                self._start()
            else:
                self._schedule(self._start)
