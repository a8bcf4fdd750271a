"""The writing side of a broker: batches queued in order, written by one task, retried with
backoff; and the small helpers both sides share (:func:`backoff`, :func:`describe`).

See :class:`~sqla_notify.Broker` for who calls what.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable
from typing import Callable

from .._notify.notification import Notification

logger = logging.getLogger("sqla_notify")

#: A queued batch and its number in this outbox (brokers use it to recognise their writes).
Item = tuple[int, list[Notification]]


class Outbox:
    """Batches on their way to a broker: kept in order, bounded, written by one task.

    While the broker does not answer its ``ping``, batches wait (nothing is lost). A write
    that fails may or may not have gone through, so it is not simply retried (that could
    deliver it twice): with ``confirm``, once the broker answers again, the outbox asks which
    of them arrived and re-sends only the others; without it, they become the *lost* reason,
    as does a batch pushed out by ``max_pending``, and ``write`` must announce that (a gap
    marker) before the next batches.
    """

    def __init__(self, max_pending: int, what: str) -> None:
        self.max_pending = max_pending
        self.what = what  # for messages: "Redis", "PostgreSQL"
        self.pending: deque[Item] = deque()
        self._numbered = 0
        self._in_doubt: tuple[list[Item], str | None] | None = None
        self.lost: str | None = None
        self.errors = 0
        self.closed = False  # set when the broker stops: the loop ends whatever it caught
        self._wake = asyncio.Event()

    def put(self, notifications: list[Notification]) -> None:
        """Queue a batch (on the loop); never blocks."""
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()
            self.lost = f"batches were dropped while {self.what} was unreachable"
        self._numbered += 1
        self.pending.append((self._numbered, notifications))
        self._wake.set()

    async def run(
        self,
        write: Callable[[list[Item], str | None], Awaitable[object]],
        ping: Callable[[], Awaitable[object]],
        confirm: Callable[[list[Item]], Awaitable[int]] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        """Write what is queued, forever: ``write(items, lost_reason)``; ``confirm(items)``
        says how many of the items of a failed write (a prefix) did arrive. ``extra``: the
        fields of the warning logged when a write fails."""
        failures = 0
        verified = False  # the broker answered the last call
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            while self.pending or self.lost or self._in_doubt:
                if not verified:
                    try:
                        await ping()
                        # The broker answers: whatever failed before was the outage, and a
                        # failure now must be retried soon, not after the outage's backoff.
                        failures = 0
                        if self._in_doubt is not None and confirm is not None:
                            items, lost = self._in_doubt
                            arrived = await confirm(items)
                            self._in_doubt = None
                            self.pending.extendleft(reversed(items[arrived:]))  # in order, first
                            if not arrived and lost is not None:
                                self.lost = self.lost or lost  # its marker may not have arrived
                        verified = True
                    except Exception:  # noqa: BLE001 - unreachable: keep the batches, retry
                        if self.closed:
                            return
                        failures += 1
                        await asyncio.sleep(backoff(failures))
                        continue
                if not (self.pending or self.lost):
                    continue  # only the in-doubt items were left, and they all arrived
                items = list(self.pending)
                self.pending.clear()
                lost, self.lost = self.lost, None
                try:
                    await write(items, lost)
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - the writer must outlive any error
                    if self.closed:
                        return
                    self.errors += 1
                    failures += 1
                    verified = False
                    if confirm is not None:
                        self._in_doubt = (items, lost)
                    else:
                        self.lost = lost or f"{len(items)} batch(es) may not have reached {self.what} ({describe(exc)})"
                    logger.warning("sqla_notify could not write to %s (%s); will retry", self.what, describe(exc),
                                   extra=extra)
                    await asyncio.sleep(backoff(failures))


def describe(exc: BaseException) -> str:
    """An exception for a log line: its type and message. Not ``repr``: redis-py 8's leaves
    out the message ("network:ConnectionError"), and with it the reason."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


#: The longest wait between two attempts to reach a broker. Short, because it is also the
#: delay, at worst, between the broker answering again and the batches that waited going
#: out (the reader's and the writer's attempts run side by side, so it is not doubled): an
#: outage of any length ends with delivery within about half a second. Many processes
#: then try a few times a second each: a connection attempt is cheap for a broker.
MAX_BACKOFF = 0.5


def backoff(failures: int) -> float:
    """Exponential, 0.1 s to :data:`MAX_BACKOFF`, with full jitter (many processes must not
    retry in step)."""
    return random.uniform(0.05, min(MAX_BACKOFF, 0.1 * 2 ** min(failures, 10)))
