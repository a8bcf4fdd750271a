"""The in-process hub: the default sink, fanning notifications out to connected clients.

Threads and the loop
====================

Commits happen on many threads: sync sessions in worker threads, ``AsyncSession`` on the
event loop. :meth:`Hub.publish` accepts a batch from any of them and hands it to the loop:
it joins a queue (a ``deque``, whose ``append`` and ``popleft`` are atomic) stamped with its
commit time, and the first batch since the last drain schedules one with
``call_soon_threadsafe`` (``call_soon`` when already on the loop thread). The drain delivers
what waits in order (each thread's batches in the order it committed them), one loop
callback for every batch handed over meanwhile (a burst of posts in one loop step: one), never
one per notification. Everything else runs on the loop thread, so the rest of the hub's
state needs no lock.

Fan-out
=======

On the loop, each notification gets the next cursor and is encoded once. The subscribers
that want it are found through an index (:class:`~sqla_notify._hub.index.Index`: those of
every collection, of its collection whole, and the filtered ones registered under its row's
filter values), so a notification costs what it reaches, not what is connected; a filtered
subscriber whose filter the row enters or leaves gets the frame marked ``move`` (encoded
once per mark). After ``authorize``, and but for the connection that caused the change
(``Notification.origin``), the encoded frame goes to the subscriber
(:meth:`Subscriber.send_nowait`). A WebSocket client with nothing queued gets it at once,
inside this dispatch, as a bare ``for ws in clients: await ws.send(...)`` loop would send it;
otherwise it waits in the subscriber's bounded queue (``send_nowait`` raises
:class:`WouldBlock` when that is full), which a writer drains into the socket. A client that
stops reading fills only its own queue: it never delays the others.

The bound applies between *hand-overs*: a committed transaction (or what a broker read in
one go) is queued whole or not at all, so a client never sees part of a transaction. When a
hand-over meets a full queue:

* if the client's writer took frames and has not come back for more, the client is not
  keeping up: the overflow policy applies (see :class:`Hub`);
* otherwise the burst simply came faster than its writer could start (a large transaction,
  a backlog after a broker outage): the queue is replaced by one ``resync`` ("backlog")
  whose cursor is the end of the hand-over, and the client is not counted as slow.

A hand-over larger than ``queue_size`` on its own is always replaced by that one ``resync``.

Cursors and replay
==================

A cursor is ``"<epoch>-<seq>"``: ``epoch`` names this hub instance (its start time), ``seq``
counts notifications. The hub keeps the last ``replay`` notifications. A client that
reconnects with its last id gets what it missed, in order, before any live message (the
replay is queued in the same loop step that registers it, so nothing falls between); an id
older than the window, or from another epoch (a restarted server), gets ``resync``. The
window and its rules are :class:`~sqla_notify._hub.replay.ReplayWindow`.

Several processes
=================

With a broker (:mod:`sqla_notify.redis`, :mod:`sqla_notify.postgres`, or any
:class:`~sqla_notify.Broker`) the hub hands each committed batch to the broker instead of
delivering it, and delivers what the broker reads back. The hub pulls: on ``async with hub``
one task runs ``async for event in broker.events()`` and applies each event, and a broker
knows nothing of the hub. A :class:`~sqla_notify.Batch` is numbered and delivered as one
hand-over; a :class:`~sqla_notify.Gap` tells every client to ``resync`` and refuses replays
across it; a :class:`~sqla_notify.Ready` whose ``stale`` is set tells the clients that
connected before the broker could read to ``resync``. An event that fails to apply is
logged and the task carries on. Every process sees every batch exactly once, in the
broker's order; a process never delivers its own batch twice. Redis numbers the batches
itself (``shared_cursors``: the hub orders notifications by
:meth:`~sqla_notify.Broker.parse_cursor` of their ids); PostgreSQL delivers to every listener
in commit order and each batch carries ids, so each hub numbers locally but names alike.
Either way cursors are the same everywhere and a client may resume on any process whose
window holds its last id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Literal

import msgspec

from .._brokers.base import Batch, Broker, Gap, Ready
from .._errors import WouldBlock
from .._notify.notification import Notification
from .._notify.sinks import Sink
from .._report import fields
from .._timing import BROKER_LAG
from ..types import Authorize
from .protocol import MAX_ERROR_LENGTH, Error, NotificationFrame, Resync, Subscribed, Welcome, clip, encode
from .protocol import encode_bytes as _encode
from .index import Index
from .replay import ReplayWindow
from .selection import Selection
from .subscriber import AUTHORIZE_ERRORS, Entry, Frame, Subscriber

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .._capture.buffer import Pending

__all__ = ("Hub", "HubStats")

logger = logging.getLogger("sqla_notify")

Overflow = Literal["resync", "close"]
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_POLICY_VIOLATION = 1008
# Writers left waiting per event-loop step. A writer that sends at once and finishes (its
# socket took the frames: the usual case) leaves nothing behind, and the hub starts up to
# _START_MAX of those in one step, as a bare ``for ws in clients: await ws.send(...)`` loop
# would. A writer that has to wait (a full socket buffer) becomes a pending task; thousands
# of those at once outlive the collector's young generation, pile up in the old ones and set
# off full collections (about 130 ms each with 1,000 connections, on Python 3.11), so after
# _START_CHUNK of them the rest start in the next step. benchmarks/README.md has figures.
_START_CHUNK = 32
_START_MAX = 1024
# What a cursor may look like, whoever made it: this hub ("<epoch>-<seq>") or a broker
# ("<entry id>:<index>", "<batch id>:<offset>"). ASCII digits only (str.isdigit() accepts
# "²", which int() refuses), bounded in length (int() refuses more than 4,300 digits), and
# never a character that could break an SSE "id:" line.
_CURSOR = re.compile(r"[0-9A-Za-z][0-9A-Za-z:_.\-]{0,99}", re.ASCII)


class _HandOver(msgspec.Struct, gc=False):
    """A batch waiting for the loop (see Hub._hand_over), stamped with its commit time.

    Not a tuple: a burst of posts published in one loop step keeps one of these per post
    until the drain, and the garbage collector neither counts nor walks these (``gc=False``;
    they hold no reference cycle: notifications, or a Pending). A tuple and a list per post
    would stay tracked until the drain, pass into the old generations and set off full
    collections, which walk every connection's objects too.
    """

    #: a list of notifications (one alone: the notification itself), or a Pending
    batch: Notification | list[Notification] | Pending
    committed: float


class HubStats(msgspec.Struct, frozen=True):
    """Counters of one :class:`Hub` since it was created."""

    #: clients connected now
    connections: int
    #: notifications the hub received (each counted once, whatever the number of clients)
    published: int
    #: frames queued for clients (notifications, replays and control messages)
    frames_sent: int
    #: frames discarded because a client's queue overflowed
    frames_dropped: int
    #: clients disconnected (code 1013) for not keeping up
    slow_disconnects: int
    #: reconnections served from the replay window
    replays: int
    #: batches dropped because the hub was not running (published before ``async with hub``)
    dropped_not_running: int
    #: the broker's state (``"connected"``, ``"connecting"``, ``"disconnected"``...);
    #: ``"none"`` for an in-process hub
    broker: str = "none"
    #: times the broker lost notifications (or could not tell what clients connected before
    #: it was ready had missed), so that every client was told to ``resync``
    gaps: int = 0
    #: the cause of the latest gap, as logged ("" if none)
    last_gap: str = ""
    #: ``resync`` messages queued for clients, for any cause: a gap, a backlog, too slow, or
    #: a replay that the window could not serve
    resyncs: int = 0
    #: notifications withheld from a client because its ``authorize`` hook raised (counted
    #: for the whole process: every hub's clients)
    authorize_errors: int = 0
    #: committed transactions whose notifications could not be built on the loop (logged
    #: with the traceback as ``capture_error``); none is expected
    build_errors: int = 0


class Hub(Sink):
    """The default sink: delivers notifications to connected clients, in-process.

    Run it on the application's event loop (``async with hub:`` in a FastAPI lifespan) and
    serve it with :func:`sqla_notify.fastapi.notify_router`. It is an asyncio object.

    :param replay: how many recent notifications are kept for clients that reconnect.
    :param queue_size: the most frames waiting for one client, checked before each
        transaction is queued (a transaction is queued whole). When a client falls that far
        behind, ``overflow`` decides; a transaction (or a broker's backlog) larger than this
        on its own reaches the client as one ``resync`` instead.
    :param overflow: ``"resync"`` (default): drop its queued frames and send it a ``resync``
        message (reload your data), then carry on; if it overflows again before reading that,
        it is not reading at all and is closed with code 1013. ``"close"``: close with 1013
        at once. Memory stays bounded either way.
    :param broker: share notifications with the hubs of other processes: a URL
        (``"redis://host:6379/0"``, see :class:`sqla_notify.redis.RedisBroker`;
        ``"postgresql://host/db"``, see :class:`sqla_notify.postgres.PostgresBroker`) or a
        broker object. ``None`` (default): this process only, no service needed.
    :raises ValueError: for a non-positive size, an unknown policy or broker URL.
    """

    def __init__(
        self,
        *,
        replay: int = 1000,
        queue_size: int = 1000,
        overflow: Overflow = "resync",
        broker: Broker | str | None = None,
    ) -> None:
        if not isinstance(replay, int) or replay < 0:
            raise ValueError(f"Hub(replay=...) expected an int >= 0, got {replay!r}")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"Hub(queue_size=...) expected an int >= 1, got {queue_size!r}")
        if overflow not in ("resync", "close"):
            raise ValueError(f"Hub(overflow=...) expected 'resync' or 'close', got {overflow!r}")
        self.queue_size = queue_size
        self.overflow = overflow
        self.replay = replay
        self._broker = _make_broker(broker)
        self._replay = ReplayWindow(replay)
        self._epoch = format(time.time_ns() // 1_000_000, "x")
        self._seq = 0  # the ordering key of the newest notification
        # The broker's cursors, shared by every process, or this hub's own.
        self._shared = self._broker is not None and self._broker.shared_cursors
        self._cursor = self._broker.initial_cursor if self._broker and self._shared else f"{self._epoch}-0"
        self._subscribers: set[Subscriber] = set()
        self._index = Index()  # the same subscribers, by what they receive
        self._by_id: dict[str, Subscriber] = {}  # by connection id, for echo suppression
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._published = self._frames = self._dropped = self._slow = self._replays = 0
        self._not_running = 0
        self._not_built = 0  # transactions whose notifications could not be built
        self._gaps = 0
        self._last_gap = ""
        self._resyncs = 0
        self._due: deque[Callable[[], object]] = deque()  # writer starts for the next step
        # Hand-overs (see _hand_over) waiting for the loop, in order, and whether a drain of
        # them is scheduled. A deque: append and popleft are atomic, from any thread.
        # Each a _HandOver whose batch is a list of notifications or one notification alone
        # (publish), or a Pending (_publish_pending).
        self._handed: deque[_HandOver] = deque()
        self._drain_due = False
        self._burst = False  # a drain of several hand-overs is running: see _drain
        self._puller: asyncio.Task[None] | None = None  # applies the broker's events
        self._closing = False  # :meth:`shutdown` began: no client is served any more
        self._leaving: set[Subscriber] = set()  # let go of by :meth:`shutdown`, transport still up

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        """Bind the hub to the running event loop; with a broker, start pulling its events
        and wait for it to start (see :meth:`Broker.start`)."""
        if self._loop is not None:
            raise RuntimeError("this Hub is already running; enter it once")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        # Left by a loop that ended before draining them (the hub was not running for them).
        self._not_running += len(self._handed)
        self._handed.clear()
        self._drain_due = False
        broker = self._broker
        if broker is not None:
            # The task first, so that the broker's first read attempt, which start() awaits,
            # has someone to pull it.
            self._puller = self._loop.create_task(self._pull(broker))
            try:
                await broker.start(self.replay)
            except BaseException:
                await self._stop_pulling()
                self._loop = None
                raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Unbind; connected clients are told to go away (1001)."""
        if self._broker is not None:
            await self._broker.stop()
            await self._stop_pulling()
        for sub in list(self._subscribers):
            self._forget(sub)
            sub.close(1001)  # going away
        self._loop = None

    async def shutdown(self, grace: float = 5.0) -> None:
        """Let go of every client without losing what it was sent: what waits in each
        client's queue is sent, within ``grace`` seconds, then its connection is closed with
        1001 ("going away"). It reconnects (to another process) with its last id and is
        replayed what came after.

        From the call on, no notification reaches a connected client any more (it gets them
        by replay), and a client that connects is closed with 1001 at once. A client still
        being sent its queue after ``grace`` (it stopped reading) is closed then, and what
        was left resumes from its last id too. Returns once every client's transport has
        ended (:meth:`unsubscribe`: its close frame went out), or ``grace`` has passed, so
        that a server stopping next finds nothing to close itself. Call on the loop;
        idempotent. Under uvicorn,
        :func:`sqla_notify.fastapi.notify_router` calls it on SIGTERM or Ctrl+C
        (``shutdown_grace``); with another server, call it when the server is told to stop,
        before it closes the connections itself.

        :param grace: seconds the clients have, together, to take what waits for them.
        """
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
            raise ValueError(f"Hub.shutdown(grace=...) expected seconds >= 0, got {grace!r}")
        self._closing = True
        clients = list(self._subscribers)
        self._leaving.update(clients)
        for sub in clients:
            self._forget(sub)  # nothing new is queued: what waits is all there is to send
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        try:
            while True:
                # Polled, not signalled: shutdown is rare, and polling keeps the send path bare.
                waiting = []
                for sub in clients:
                    if sub.close_code is None:
                        if sub.idle:
                            sub.close(1001)
                        else:
                            waiting.append(sub)
                clients = waiting
                if (not clients and not self._leaving) or loop.time() >= deadline:
                    break
                await asyncio.sleep(min(0.01, max(0.0, deadline - loop.time())))
        finally:  # the grace is over (or the wait was cancelled): nobody is left behind
            for sub in clients:
                self._dropped += sub.close(1001)  # not reading: it resumes from its last id
            self._leaving.clear()  # the server cuts what is left

    async def _pull(self, broker: Broker) -> None:
        """Apply what the broker reads, until it stops."""
        try:
            async with contextlib.aclosing(broker.events()) as events:
                async for event in events:
                    try:
                        self._apply(event)
                    except Exception:  # noqa: BLE001 - one bad event must not stop the delivery
                        logger.exception("sqla_notify could not apply %s from %r", type(event).__name__, broker,
                                         extra=fields("broker_event_error", broker=broker))
        except Exception:  # noqa: BLE001 - nobody awaits this task's result: say it here
            logger.exception("sqla_notify stopped reading %r", broker, extra=fields("broker_reader_error", broker=broker))

    async def _stop_pulling(self) -> None:
        task, self._puller = self._puller, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=5)  # the broker's stop() waited already

    def _apply(self, event: Batch | Gap | Ready) -> None:
        """One event from the broker, on the loop."""
        if isinstance(event, Batch):
            if event.ids is None and self._shared:
                raise ValueError(f"a Batch from a broker with shared_cursors expected ids, got None "
                                 f"(for {len(event.notifications)} notifications)")
            received = time.time()
            written = event.written_at
            if written is None:
                written = received  # the broker carries no time: from when it was read
            elif not event.history:
                BROKER_LAG.observe(max(received - written, 0.0))
            self._dispatch(event.notifications, event.ids, written, live=not event.history)
        elif isinstance(event, Gap):
            self._gap(event.reason, live=not event.history)
        elif isinstance(event, Ready):
            if event.stale:
                self._resync_all(event.stale)
        else:
            raise TypeError(f"Broker.events() expected Batch, Gap or Ready events, got a {type(event).__name__}")

    # -- the Sink side: any thread --------------------------------------------------------

    # Captured transactions arrive unbuilt (see Sink._deferred) and their notifications are
    # built on the loop: built on the committing thread, a large transaction's objects set
    # off a full garbage collection inside commit() (benchmarks/README.md, capture).
    _deferred = True

    def publish(self, notifications: list[Notification]) -> None:
        """Queue a committed batch for delivery; returns at once, from any thread."""
        if len(notifications) == 1 and isinstance(notifications[0], Notification):
            # One notification (a post) waits alone, not in its list, which the caller then
            # frees: a burst published in one loop step leaves nothing per post for the
            # collector to count or walk (a Notification is untracked, see _HandOver).
            self._hand_over(notifications[0])
        else:
            self._hand_over(notifications)

    def _publish_pending(self, batch: Pending) -> None:
        """Queue a committed transaction whose notifications are still to be built."""
        self._hand_over(batch)

    def _hand_over(self, batch: Notification | list[Notification] | Pending) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._not_running += 1
            return
        # The commit returned just now (the notifier calls this right after it, once per
        # batch): where the commit→send latency starts. With a broker, it starts from what
        # the broker reports instead (see _apply): the same clock for every process.
        self._handed.append(_HandOver(batch, time.time()))
        # One scheduled drain for every hand-over until it runs, not one loop callback per
        # batch: a burst of posts leaves one handle, not a handle and its arguments each.
        # Cleared by _drain before it looks: a hand-over that finds it set is drained then.
        if not self._drain_due:
            self._drain_due = True
            if threading.get_ident() == self._thread:
                loop.call_soon(self._drain)
            else:
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """Deliver what was handed over, in order (on the loop). What other threads hand
        over meanwhile waits for the drain they schedule: one drain does not run forever."""
        self._drain_due = False
        handed = self._handed
        left = len(handed)
        # Several hand-overs at once (a burst of commits): queued for each client, whose
        # writer then sends them in one run, client by client, rather than one pass over
        # every client per notification (at 10,000 clients that pass costs 18% more per
        # delivery: benchmarks/README.md). A lone one is sent at once.
        self._burst = left > 1
        while left:
            left -= 1
            handover = handed.popleft()
            batch, committed = handover.batch, handover.committed
            if isinstance(batch, Notification):  # one, unwrapped by publish
                batch = [batch]
            try:
                if not isinstance(batch, list):
                    self._deliver_pending(batch, committed)
                elif self._broker is None:  # the usual case, without a call of its own
                    self._dispatch(batch, None, committed)
                else:
                    self._deliver(batch, committed)
            except Exception as exc:  # noqa: BLE001 - as a loop callback of its own would be: reported, the rest go on
                context = {"message": "Exception in Hub._drain", "exception": exc}
                (self._loop or asyncio.get_running_loop()).call_exception_handler(context)
        self._burst = False

    def _deliver(self, notifications: list[Notification], committed: float) -> None:
        if self._broker is None:
            self._dispatch(notifications, None, committed)
        else:
            self._broker.publish(notifications)

    def _deliver_pending(self, batch: Pending, committed: float) -> None:
        try:
            notifications = batch.notifications()
        except Exception:  # noqa: BLE001 - nobody awaits this callback: say it here
            self._not_built += 1
            logger.exception("sqla_notify could not build a committed transaction's notifications",
                             extra=fields("capture_error", broker=self._broker))
            return
        self._deliver(notifications, committed)

    @property
    def transactional(self) -> bool:  # type: ignore[override]
        """Whether the broker announces batches inside their transactions (PostgreSQL)."""
        return self._broker is not None and self._broker.transactional

    def publish_in_transaction(self, connection: Connection, notifications: list[Notification]) -> bool:
        """Let a transactional broker announce the batch inside its transaction."""
        return self._broker is not None and self._broker.publish_in_transaction(connection, notifications)

    # -- the loop side --------------------------------------------------------------------

    @property
    def cursor(self) -> str:
        """The id of the latest notification: read it *before* querying for a snapshot, then
        resume from it, and nothing committed after the snapshot is missed."""
        return self._cursor

    def _dispatch(
        self, notifications: list[Notification], ids: list[str] | None = None, committed: float = 0.0, *,
        live: bool = True,
    ) -> None:
        """Number a committed batch and deliver it. ``ids``: what to call its notifications
        instead of this hub's ``"<epoch>-<seq>"`` (a broker's names, the same in every
        process); resuming from one of them is then looked up in the window, or, with a
        broker's ``shared_cursors``, ordered by its ``parse_cursor``. ``live=False``: history
        (see :meth:`_ingest`). ``committed``: when the batch was committed (``time.time()``),
        or 0.0."""
        entries = []
        seq = self._seq
        if ids is None:  # this hub's own names: the in-process hot path
            epoch = self._epoch
            for n in notifications:
                seq += 1
                ident = f"{epoch}-{seq}"
                # _frame(ident, n), inline: this runs once per post
                text = _encode(NotificationFrame(ident, n.collection, n.action, n.data, n.old)).decode()
                entries.append(Entry(seq, ident, n, text, committed))
            self._ingest(entries, live=live)
            return
        if len(ids) != len(notifications):
            self._gap(f"a broker delivered {len(ids)} ids for {len(notifications)} notifications; "
                      f"its batch was skipped", live=live)
            return
        shared = self._broker.parse_cursor if self._shared and self._broker is not None else None
        for ident, n in zip(ids, notifications):
            if not _CURSOR.fullmatch(ident):
                # A broker's channel is shared with whoever can write to it: an id that could
                # break a transport's framing (a newline in an SSE "id:" line) never goes out.
                self._gap(f"a broker delivered an invalid id ({len(ident)} characters); its batch was skipped",
                          live=live)
                return
            if shared is None:  # numbered here, named by the broker: looked up by name
                seq += 1
            else:  # ordered by the broker's own keys, the same in every process
                key = shared(ident)
                if key is None:
                    self._gap(f"a broker delivered an id that is not one of its cursors ({ident!r}); "
                              f"its batch was skipped", live=live)
                    return
                seq = key
            entries.append(Entry(seq, ident, n, _frame(ident, n), committed))
        if shared is None:
            self._replay.name(entries)
        self._ingest(entries, live=live)

    def _ingest(self, entries: list[Entry], *, live: bool = True) -> None:
        """Keep a numbered batch for replay and deliver it.

        ``live=False``: history (a broker priming the replay window), kept for replay but not
        sent to the clients connected now.
        """
        if not entries:
            return
        self._seq = entries[-1].seq
        self._cursor = entries[-1].id
        self._published += len(entries)
        self._replay.add(entries)
        if not live:
            return
        frames = 0
        if len(entries) == 1:  # the usual case, kept lean: no allocation per client
            # WouldBlock is the rare case (a full queue), and a ``try`` costs nothing
            # (Python 3.11+) or next to nothing (3.10) when nothing is raised.
            at_once = not self._burst
            entry = entries[0]
            n = entry.notification
            index = self._index
            if n.origin is None and not index.everything and n.collection not in index.whole:
                # Only filtered subscribers can want it (a post to one forum): delivered as
                # the index finds them, with none of _targets' groups. A filtered post
                # usually reaches one client, so what the post costs is what its frame costs.
                # The usual insert's receivers come as a list (never a move); anything else
                # with the move each one's filters decide. (Pairing the list with None, by
                # zip or a generator, costs about 1,500 instructions a post.)
                receivers: Iterable[Subscriber] | None = index.inserted(n)
                moves = None
                if receivers is None:
                    receivers = moves = index.tested(n)
                for sub in receivers:
                    if sub.authorize is None or sub.allows(n):
                        try:
                            sub.send_nowait(entry if moves is None or (move := moves[sub]) is None
                                            else _moved(entry, move), at_once=at_once)
                            frames += 1
                        except WouldBlock:
                            self._overflow(sub, 1)
                self._frames += frames
                return
            for subs, frame in self._targets(entry):
                for sub in subs:
                    try:
                        sub.send_nowait(frame, at_once=at_once)
                        frames += 1
                    except WouldBlock:
                        self._overflow(sub, 1)
        else:
            for sub, frames_of in self._batches(entries):
                if frames_of:
                    try:
                        sub.send_batch_nowait(frames_of)
                        frames += len(frames_of)
                    except WouldBlock:
                        self._overflow(sub, len(frames_of))
        self._frames += frames

    def _batches(self, entries: list[Entry]) -> Iterable[tuple[Subscriber, list[Frame]]]:
        """Who receives some of a hand-over, and which frames, in order."""
        index = self._index
        collections = {e.notification.collection for e in entries}
        if (len(collections) == 1 and collections.isdisjoint(index.filtered)
                and all(e.notification.origin is None for e in entries)):
            # The usual transaction: one collection that nobody filters, every subscriber
            # found receives all of it (but what its ``authorize`` denies).
            (collection,) = collections
            everyone: list[Frame] = list(entries)
            return [
                (sub, everyone if sub.authorize is None else [e for e in entries if sub.allows(e.notification)])
                for group in (index.everything, index.whole.get(collection)) if group
                for sub in tuple(group)
            ]
        wanted: dict[Subscriber, list[Frame]] = {}
        for entry in entries:
            for subs, frame in self._targets(entry):
                for sub in subs:
                    frames_of = wanted.get(sub)
                    if frames_of is None:
                        wanted[sub] = [frame]
                    else:
                        frames_of.append(frame)
        return wanted.items()

    def _targets(self, entry: Entry) -> list[tuple[list[Subscriber], Entry]]:
        """Who receives ``entry`` (each subscriber once, its ``authorize`` applied, the
        connection that caused it skipped), grouped by the frame they get: the delivery
        rule, for one notification and for a hand-over alike. The lists are snapshots: a
        client that overflows is removed from the index while the caller delivers."""
        n = entry.notification
        origin = n.origin
        skip = self._by_id.get(origin) if origin is not None else None  # echo suppression
        index = self._index
        out = []
        for group in (index.everything, index.whole.get(n.collection)):
            if group:
                out.append(([sub for sub in group if sub is not skip and (sub.authorize is None or sub.allows(n))],
                            entry))
        if n.collection in index.filtered:
            for sub, move in index.filtered_targets(n):
                if sub is not skip and (sub.authorize is None or sub.allows(n)):
                    out.append(([sub], entry if move is None else _moved(entry, move)))
        return out

    def _offer(self, sub: Subscriber, frame: str) -> None:
        """Queue one control message (``resync``) for ``sub``."""
        if sub.close_code is not None:
            return  # given up on: only the close frame is still to go
        try:
            sub.send_nowait(frame)
            self._frames += 1
        except WouldBlock:
            self._overflow(sub, 1)

    def _overflow(self, sub: Subscriber, refused: int) -> None:
        """``refused`` frames (one hand-over) do not fit ``sub``'s queue: decide who is to blame.

        Either way they are not queued, and neither is what waited: the client gets one
        ``resync`` at the current cursor, the end of this hand-over, so no transaction is
        split across it.
        """
        if sub.stalled:
            # Its writer took frames and has not come back while a queue's worth piled up.
            if self.overflow == "close" or sub.overflowed:
                self._dropped += refused
                self._give_up(sub)
                return
            self._replace(sub, refused, "too slow: messages were dropped")
        else:
            # A burst larger than the queue, before its writer had a chance to run.
            self._replace(sub, refused, f"backlog: more than {self.queue_size} messages at once; reload")

    def _replace(self, sub: Subscriber, refused: int, reason: str) -> None:
        """Drop what waits for ``sub`` (but a welcome it has not been sent: it always comes
        first), and queue one ``resync`` at the current cursor instead."""
        self._dropped += sub.replace_with(encode(Resync(self.cursor, reason))) + refused
        self._frames += 1
        self._resyncs += 1
        # A backlog reaches every client at once (a broker's after an outage): debug, not
        # one info line per client.
        logger.log(logging.DEBUG if reason.startswith("backlog") else logging.INFO, "told a client to resync: %s",
                   reason, extra=fields("resync", connection=sub.id, broker=self._broker))

    def _schedule(self, start: Callable[[], object]) -> None:
        """Start a subscriber's writer once the loop is done with what is ready now (often a
        burst of dispatches): one writer run then sends them all."""
        if self._loop is None:  # not running: nothing to wait for
            start()
            return
        if not self._due:
            self._loop.call_soon(self._start_writers)
        self._due.append(start)

    def _start_writers(self) -> None:
        due = self._due
        waiting = 0
        for _ in range(min(len(due), _START_MAX)):
            if due.popleft()():  # the writer waits (a task): see set_writer
                waiting += 1
                if waiting == _START_CHUNK:
                    break
        if due and self._loop is not None:  # the rest after these writers' first steps
            self._loop.call_soon(self._start_writers)

    def _give_up(self, sub: Subscriber) -> None:
        self._slow += 1
        self._forget(sub)
        self._dropped += sub.close(CLOSE_TRY_AGAIN_LATER)
        # Not the principal: a log line must not carry who it was (it may hold a token).
        logger.warning("giving up on a client that stopped reading (1013)",
                       extra=fields("slow_client", connection=sub.id, broker=self._broker))

    def subscribe(
        self,
        collections: Selection | Iterable[str] | None = None,
        *,
        last_id: str | None = None,
        principal: Any = None,
        authorize: Authorize | None = None,
    ) -> Subscriber:
        """Register a client; queue ``welcome`` and, with ``last_id``, what it missed.

        Call on the event loop. Pair with :meth:`unsubscribe` in a ``finally``.

        :param collections: what it receives: collection names, a :class:`Selection` (with
            filtered collections), or ``None``: everything.
        """
        sub = Subscriber(collections, principal, authorize, bound=self.queue_size, schedule=self._schedule)
        if self._closing:  # going away: the client is to connect elsewhere
            sub.close(1001)
            return sub
        first: list[Frame] = [encode(Welcome(self.cursor, sub.id))]
        if last_id is not None:
            missed = self._missed(last_id, sub.selection)
            if missed is None:
                first.append(encode(Resync(self.cursor, "cannot replay from that id; reload")))
                self._resyncs += 1
            else:
                self._replays += 1
                first.extend(self._replayed(sub, missed))
        # The welcome and the replay are admitted whole, beyond the bound: live frames that
        # arrive before the writer first runs are measured against the bound on top of them.
        sub.send_welcome(first)
        self._frames += len(first)
        self._subscribers.add(sub)
        self._by_id[sub.id] = sub
        self._index.add(sub, sub.selection)
        return sub

    def _forget(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            self._by_id.pop(sub.id, None)
            self._index.remove(sub, sub.selection)

    def _missed(self, last_id: str, selection: Selection | None) -> list[Entry] | None:
        """What a client receiving ``selection`` may have missed after ``last_id``; ``None``
        when some of it has left the window (see :class:`ReplayWindow`)."""
        seq = self._parse(last_id) if _CURSOR.fullmatch(last_id) else None
        if seq is None:
            return None  # another server instance's id (e.g. before a restart), or garbage
        return self._replay.since(seq, None if selection is None else selection.names)

    def _replayed(
        self, sub: Subscriber, entries: list[Entry], *, before: Selection | None = None, mark: bool = False,
    ) -> list[Frame]:
        """Of ``entries``, the frames ``sub`` receives, as live delivery would have framed
        them (its selection, ``authorize``, never its own changes). ``before``: a selection
        it had already, whose entries it received then (a catch-up sends only the others).
        ``mark``: framed with ``"replay": true`` (older than what the connection has)."""
        selection = sub.selection
        out: list[Frame] = []
        for entry in entries:
            n = entry.notification
            send, move = (True, None) if selection is None else selection.match(n)
            if not send or n.origin == sub.id or (before is not None and before.match(n)[0]):
                continue
            if not sub.allows(n):
                continue
            if mark:
                out.append(Entry(entry.seq, entry.id, n, _frame(entry.id, n, move, replay=True)))
            else:
                out.append(entry if move is None else _moved(entry, move))
        return out

    def _parse(self, cursor: str) -> int | None:
        if self._broker is not None and self._shared:
            return self._broker.parse_cursor(cursor)
        named = self._replay.lookup(cursor)
        if named is not None:
            return named
        epoch, _, seq_text = cursor.rpartition("-")
        return int(seq_text) if epoch == self._epoch and seq_text.isdigit() else None

    def _gap(self, reason: str, *, live: bool = True) -> None:
        """The broker lost notifications (a :class:`Gap`): every client must reload, and no
        replay may span the gap. ``live=False``: a gap in history (while priming): only no
        replay may span it."""
        self._replay.cut()
        if live:
            self._tell_all(reason)

    def _resync_all(self, reason: str) -> None:
        """Tell every connected client to ``resync`` at the current cursor, and count it as a
        gap, without refusing replays from the window (a :class:`Ready` with ``stale``).

        For clients that connected before the broker could tell them where they stand: its
        first read or ``LISTEN`` came after they connected, so what was committed meanwhile
        cannot be told apart from what they already had.
        """
        if self._subscribers:
            self._tell_all(reason)

    def _tell_all(self, reason: str) -> None:
        self._gaps += 1
        self._last_gap = reason
        frame = encode(Resync(self.cursor, reason))
        for sub in tuple(self._subscribers):
            self._offer(sub, frame)
        self._resyncs += len(self._subscribers)
        logger.warning("told %d client(s) to resync: %s", len(self._subscribers), reason,
                       extra=fields("resync_all", broker=self._broker))

    def update(self, sub: Subscriber, collections: Selection | Iterable[str] | None, *, since: str | None = None) -> None:
        """Change what ``sub`` receives from now on, and confirm with ``subscribed``.

        A ``subscribed`` still waiting to be sent is replaced by the new one (it lists the whole
        set), which goes to the end of the queue: what comes after it matches it.

        :param since: a cursor (a snapshot's): first send what the new selection receives
            after it that the old one did not, framed with ``"replay": true``; ``resync`` if
            the window no longer holds it. Ignored for a client that received everything.
        """
        if sub.close_code is not None or self._closing:
            return
        before, selection = sub.selection, Selection.of(collections)
        self._index.remove(sub, before)
        sub.selection = selection
        self._index.add(sub, selection)
        if since is not None and before is not None:  # (before None: it received everything)
            missed = self._missed(since, selection)
            if missed is None:
                self._offer(sub, encode(Resync(self.cursor, "cannot replay from that id; reload")))
                self._resyncs += 1
            else:
                catch_up = self._replayed(sub, missed, before=before, mark=True)
                if catch_up:
                    try:
                        sub.send_batch_nowait(catch_up)
                        self._frames += len(catch_up)
                    except WouldBlock:
                        self._overflow(sub, len(catch_up))
        self._reply(sub, encode(Subscribed(None if selection is None else selection.to_json())), subscribed=True)

    def send_error(self, sub: Subscriber, message: str) -> None:
        """Queue an ``error`` message for one client, cut to ``MAX_ERROR_LENGTH`` characters."""
        self._reply(sub, encode(Error(clip(message, MAX_ERROR_LENGTH))), subscribed=False)

    def _reply(self, sub: Subscriber, frame: str, *, subscribed: bool) -> None:
        """Queue a reply to the client's own message, within its ``reply_budget``: a client
        that sends messages and does not read the replies is closed with 1008."""
        if sub.close_code is not None:
            return
        try:
            fits = sub.send_reply_nowait(frame, subscribed=subscribed)
        except WouldBlock:
            self._overflow(sub, 1)
            return
        if fits:
            self._frames += 1
        else:
            self.disconnect(sub, CLOSE_POLICY_VIOLATION, "too many replies waiting: read them")

    def disconnect(self, sub: Subscriber, code: int, reason: str = "") -> None:
        """Stop serving ``sub``: drop what waits for it and have its transport close with
        ``code`` and ``reason`` (after the frame being sent, if the client reads it).
        Idempotent: the first code stays."""
        if sub.close_code is not None:
            return
        self._forget(sub)
        self._dropped += sub.close(code, reason)

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a client (idempotent): its transport has ended."""
        self._forget(sub)
        if self._leaving:
            self._leaving.discard(sub)

    @property
    def running(self) -> bool:
        """Whether the hub is bound to an event loop (``async with hub`` entered, not left)."""
        return self._loop is not None

    @property
    def closing(self) -> bool:
        """Whether :meth:`shutdown` has begun: clients are being let go, new ones refused."""
        return self._closing

    @property
    def broker(self) -> Broker | None:
        """The broker it shares notifications through (``None``: this process only)."""
        return self._broker

    def queue_depths(self) -> list[int]:
        """How many frames wait for each connected client now (one number per client, in no
        particular order): for a histogram, at scrape time. Best read on the loop; from
        another thread (a scrape served by ``prometheus_client``'s own server), a snapshot."""
        return [sub.pending for sub in tuple(self._subscribers)]  # tuple(): one step, under the GIL

    def stats(self) -> HubStats:
        """Counters since creation."""
        return HubStats(
            len(self._subscribers), self._published, self._frames, self._dropped,
            self._slow, self._replays, self._not_running,
            "none" if self._broker is None else self._broker.state, self._gaps,
            self._last_gap, self._resyncs, AUTHORIZE_ERRORS.count, self._not_built,
        )

    def __repr__(self) -> str:
        return f"Hub(connections={len(self._subscribers)}, cursor={self.cursor!r})"


def _frame(ident: str, n: Notification, move: str | None = None, *, replay: bool | None = None) -> str:
    return encode(NotificationFrame(ident, n.collection, n.action, n.data, n.old, move, replay))


def _moved(entry: Entry, move: str) -> Entry:
    """``entry`` framed with its ``move`` (``"enter"``, ``"leave"``), encoded once."""
    return entry.variant(move, lambda: Entry(
        entry.seq, entry.id, entry.notification, _frame(entry.id, entry.notification, move), entry.committed,
    ))


def _make_broker(broker: Broker | str | None) -> Broker | None:
    if broker is None or isinstance(broker, Broker):
        return broker
    if isinstance(broker, str) and broker.startswith(("redis://", "rediss://", "unix://")):
        from ..redis import RedisBroker  # noqa: PLC0415 - an optional dependency

        return RedisBroker(broker)
    if isinstance(broker, str) and broker.startswith(("postgresql://", "postgres://", "postgresql+")):
        from ..postgres import PostgresBroker  # noqa: PLC0415 - an optional dependency

        return PostgresBroker(broker)
    raise ValueError(
        f"Hub(broker=...) expected None, a Broker, or a URL starting with redis://, rediss://, "
        f"unix://, postgresql:// or postgres://, got {broker!r}"
    )
