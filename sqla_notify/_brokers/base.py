"""The contract between a :class:`~sqla_notify.Hub` and a broker that shares it across processes.

With a broker, the hub does not deliver what its own process commits: it hands each batch to
the broker (:meth:`Broker.publish`), and every process (this one included) delivers what it
reads back. Each notification is so delivered once per process, in the broker's order, under
a name (cursor) that every process gives it: a client may resume on any process that still
holds it.

The hub pulls, as encode/broadcaster's core does from its backends: one task of the hub's
runs ``async for event in broker.events()``, and a broker only says what it read, as
:class:`Batch`, :class:`Gap` and :class:`Ready` records. Only the hub numbers notifications,
encodes frames, keeps the replay window and fans out. Reconnecting, backoff, the state word
and the error count are written once, here; a broker implements one connection's reading
(:meth:`Broker.read`) and one write (:meth:`Broker.write`).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Union

import msgspec

from .._notify.notification import Notification
from .._report import fields
from .outbox import Outbox, backoff, describe

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ("Batch", "Broker", "Gap", "Ready")

logger = logging.getLogger("sqla_notify")


class Batch(msgspec.Struct, frozen=True):
    """Notifications a broker read in one go: whole transactions only, in the broker's order.

    The hub delivers a batch as one hand-over: a client gets all of it or one ``resync``.
    """

    #: the notifications, oldest first
    notifications: list[Notification]
    #: one name per notification, the same in every process (cursors clients may resume
    #: from on any process): short, of ``[0-9A-Za-z:_.-]`` only. ``None``: the hub numbers them
    #: itself (a client then resumes on this process only). Required with
    #: :attr:`Broker.shared_cursors`.
    ids: Union[list[str], None] = None
    #: read while priming (before :class:`Ready`): kept for replay, not sent to clients
    history: bool = False
    #: when the oldest of these notifications reached the broker (``time.time()`` of the
    #: writing side: PostgreSQL, just before its COMMIT; Redis, its own clock when it added
    #: the entry), for the broker lag and the commit→send latency; ``None``: unknown (the
    #: hub then counts from when it read the batch)
    written_at: Union[float, None] = None


class Gap(msgspec.Struct, frozen=True):
    """Notifications were lost (the broker restarted, trimmed what was not read yet, or the
    connection dropped): every connected client is told to ``resync`` with ``reason``, and
    no replay spans the gap."""

    #: why, for the clients and the log (never a payload: it may be shown to anyone)
    reason: str
    #: a gap in history (while priming): replays may not span it, nobody is told
    history: bool = False


class Ready(msgspec.Struct, frozen=True):
    """The broker reads live from now on (after the history of the first connection, or
    after reconnecting)."""

    #: non-empty: clients that connected before this may have missed notifications (the
    #: broker was unreachable when they came): they are told to ``resync`` with this reason.
    #: Replays from the window stay allowed.
    stale: str = ""


class Broker(abc.ABC):
    """Carries committed batches between the hubs of several processes.

    Two sides. **The hub calls** :meth:`start`, :meth:`events`, :meth:`publish`,
    :meth:`stop` (implemented here, on the event loop). **An implementation writes**
    :meth:`read` (one connection's worth of reading), :meth:`write` and :meth:`ping`, and
    may override :meth:`confirm`, :meth:`close` and the cursor hooks. It must call
    ``super().__init__()``. A broker never blocks or fails a commit (:meth:`publish` only
    queues), and one that loses notifications says so with a :class:`Gap` rather than
    staying silent.

    :param max_pending: batches kept while the broker is unreachable; beyond it the oldest
        are dropped, and :meth:`write` is told so (``lost``).
    :param connect_timeout: the longest :meth:`start` waits for the first read attempt.
    :raises ValueError: for a ``max_pending`` below 1.
    """

    #: the broker's name in log lines ("lost Redis (...)")
    what: str = "the broker"

    def __init__(self, *, max_pending: int = 10_000, connect_timeout: float = 2.0) -> None:
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"{type(self).__name__}(max_pending=...) expected an int >= 1, got {max_pending!r}")
        self.connect_timeout = connect_timeout
        self._outbox = Outbox(max_pending, self.what)
        self._state = "stopped"
        self._read_errors = 0
        self._running = self._stopping = False
        self._go = asyncio.Event()  # start() was called: events() may begin
        self._attempted = asyncio.Event()  # the first read attempt is over (new at each start)
        self._history = 0
        self._reader: asyncio.Task[object] | None = None  # the task pulling events()
        self._writer: asyncio.Task[None] | None = None

    # -- what the hub calls ---------------------------------------------------------------

    async def start(self, history: int) -> None:
        """Let :meth:`events` begin (the hub is already pulling it) and wait, at most
        ``connect_timeout`` seconds, for its first read attempt: with the broker up, the
        process reads before it serves. Returns then even if the broker is unreachable
        (reading carries on in the background, with backoff).

        :param history: how many of the newest notifications to prime the replay with.
        :raises RuntimeError: if this broker is running already (give each hub its own).
        """
        if self._running:
            raise RuntimeError(f"this {type(self).__name__} is already running; give each Hub its own")
        self._running, self._stopping, self._outbox.closed = True, False, False
        self._history = history
        self._state = "connecting"
        self._attempted = asyncio.Event()
        self._go.set()
        try:
            await asyncio.wait_for(self._attempted.wait(), self.connect_timeout)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            logger.warning("sqla_notify: %s did not answer within %s s; reading in the background",
                           self.what, self.connect_timeout, extra=fields("broker_slow_start", broker=self))

    async def events(self) -> AsyncGenerator[Batch | Gap | Ready, None]:
        """What the broker reads, until :meth:`stop`: :meth:`read` again and again, with
        backoff (:data:`~sqla_notify._brokers.outbox.MAX_BACKOFF` at most) after a failure, one
        warning per outage, and every failure counted in :attr:`errors`. The writer starts
        after the first :class:`Ready`: what this process writes is then read as news.

        :raises RuntimeError: if another task is pulling this broker's events already.
        """
        if self._reader is not None and not self._reader.done():
            raise RuntimeError(f"this {type(self).__name__}'s events are pulled already; give each Hub its own")
        self._reader = asyncio.current_task()
        await self._go.wait()
        failures = 0
        while not self._stopping:
            try:
                async with aclosing(self.read(self._history)) as reading:
                    async for event in reading:
                        if event.__class__ is Ready:
                            self._live()
                            failures = 0
                        yield event
                raise ConnectionError(f"{self.what}: the connection ended")  # as if lost
            except Exception as exc:  # noqa: BLE001 - reading must outlive any error
                self._attempted.set()
                if self._stopping:
                    return
                self._read_errors += 1
                failures += 1
                if self._state != "disconnected":
                    logger.warning("sqla_notify lost %s (%s); reconnecting with backoff", self.what, describe(exc),
                                   extra=fields("broker_lost", broker=self))
                self._state = "disconnected"
                await asyncio.sleep(backoff(failures))

    def _live(self) -> None:
        if self._state != "connected":
            self._state = "connected"
            logger.info("sqla_notify reads %r", self, extra=fields("broker_connected", broker=self))
        self._attempted.set()
        if self._writer is None:
            confirm = self.confirm if type(self).confirm is not Broker.confirm else None
            self._writer = asyncio.get_running_loop().create_task(
                self._outbox.run(self.write, self.ping, confirm, fields("broker_write_failed", broker=self)),
            )

    def publish(self, notifications: list[Notification]) -> None:
        """Queue one committed batch for :meth:`write`, keeping the order of calls. Never
        blocks; on the loop."""
        self._outbox.put(notifications)

    async def stop(self) -> None:
        """Stop reading (the task pulling :meth:`events` is cancelled) and writing; what is
        still queued is dropped. Waits 5 s at most for the tasks: one that a library keeps
        alive (a cancellation turned into a timeout, say) must not hang the shutdown."""
        self._stopping = self._outbox.closed = True
        current = asyncio.current_task()
        tasks = [t for t in (self._reader, self._writer) if t is not None and t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        await self.close()  # ends a call whose cancellation a library lost
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            if pending:
                logger.error("sqla_notify: %d %s task(s) did not stop within 5 s", len(pending), self.what,
                             extra=fields("broker_stop_timeout", broker=self))
        await self.close()  # and whatever the cancelled tasks still held
        self._reader = self._writer = None
        self._go = asyncio.Event()  # a new one: the next run may be on another loop
        self._running = False
        self._state = "stopped"

    @property
    def state(self) -> str:
        """``"connecting"``, ``"connected"``, ``"disconnected"`` or ``"stopped"``, for
        :attr:`HubStats.broker`."""
        return self._state

    @property
    def pending(self) -> int:
        """Batches this process committed that wait to be written to the broker (they pile
        up while it is unreachable, up to ``max_pending``)."""
        return len(self._outbox.pending)

    @property
    def errors(self) -> int:
        """Failed reads and writes so far."""
        return self._read_errors + self._outbox.errors

    @property
    def rejected(self) -> int:
        """Payloads read from the broker and dropped because they could not have come from
        a process of this app: a signature missing or wrong, or a copy of one already
        delivered. Only a broker that signs its payloads counts them; 0 for the others."""
        return 0

    # -- what an implementation writes ----------------------------------------------------

    @abc.abstractmethod
    def read(self, history: int) -> AsyncGenerator[Batch | Gap | Ready, None]:
        """One connection: connect, yield the ``history`` newest notifications (as
        ``Batch(..., history=True)``; on the first connection only, if the broker keeps
        any), then :class:`Ready`, then what arrives, as it arrives, until the connection is
        lost: then raise (any exception; returning counts as lost too). Called again after a
        backoff; what was lost meanwhile is a :class:`Gap` before the next :class:`Ready`.
        Cancelled at :meth:`stop`."""

    @abc.abstractmethod
    async def write(self, batches: list[tuple[int, list[Notification]]], lost: str | None) -> None:
        """Send queued batches, in order, each with its number in this broker's outbox
        (increasing). ``lost``: batches were dropped before these (``max_pending``, or a
        failed write :meth:`confirm` could not check): send a gap marker first, that every
        process reads as a :class:`Gap`. Raise if the write failed or may have: the batches
        are then confirmed or announced lost, never simply sent twice."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise unless the broker answers. Batches wait (none are lost) until it does."""

    async def confirm(self, batches: list[tuple[int, list[Notification]]]) -> int:
        """After a failed :meth:`write`: how many of its ``batches`` (a prefix) did arrive;
        the others are sent again. Without an override, a failed write's batches count as
        lost (a gap)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections. :meth:`stop` calls it right after cancelling the tasks and
        again once they ended: it must be idempotent."""

    #: Whether :meth:`publish_in_transaction` may take batches (see :class:`~sqla_notify.Sink`).
    transactional: bool = False

    def publish_in_transaction(self, connection: Connection, notifications: list[Notification]) -> bool:
        """Announce a batch inside its transaction, just before COMMIT, on the committing
        thread; see :meth:`Sink.publish_in_transaction`. The default declines."""
        return False

    #: Whether every :class:`Batch`'s ``ids`` are this broker's own cursors, ordered by
    #: :meth:`parse_cursor` the same way in every process; the hub then numbers notifications
    #: by them. If not, each hub numbers what it delivers and looks ``ids`` up in its window.
    shared_cursors: bool = False

    def parse_cursor(self, cursor: str) -> int | None:
        """With :attr:`shared_cursors`: the ordering key of one of this broker's cursors, or
        ``None`` if it is not one."""
        return None

    @property
    def initial_cursor(self) -> str:
        """With :attr:`shared_cursors`: the cursor to report before anything was read."""
        return ""

