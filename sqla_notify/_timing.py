"""Histograms kept as plain bucket counters on the event loop, read at scrape time.

The commit→send latency is observed once per writer wake-up per client, on the hot path: a
``prometheus_client.Histogram`` there would take a lock per observation. A
:class:`Buckets` is a list of ints that only the loop thread writes; :mod:`sqla_notify.metrics`
copies it when Prometheus scrapes. Both histograms here are process-wide (every hub of the
process), as :data:`~sqla_notify._hub.subscriber.AUTHORIZE_ERRORS` is.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence

from ._hub.subscriber import Entry, Frame

__all__ = ("BROKER_LAG", "Buckets", "DELIVERY", "LATENCY_BOUNDS", "observe", "sent")

#: upper bounds, in seconds, of the latency buckets: 1 ms doubling up to 32.768 s, so that the
#: hot path finds a bucket with ``int(ms).bit_length()`` rather than a bisection
LATENCY_BOUNDS = tuple(2**k / 1000 for k in range(16))


class Buckets:
    """A histogram as bucket counters: written on the loop, copied by a scrape.

    :param bounds: increasing upper bounds (Prometheus' ``le``); a last bucket, ``+Inf``,
        takes the rest.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"Buckets(bounds=...) expected increasing numbers, got {bounds!r}")
        self.bounds = tuple(float(b) for b in bounds)
        #: observations per bucket (not cumulative), the last one for ``+Inf``
        self.counts = [0] * (len(self.bounds) + 1)
        #: the sum of the observed values (each times its weight)
        self.sum = 0.0

    def observe(self, value: float, weight: int = 1) -> None:
        """Count ``value`` ``weight`` times. On the loop thread (the only writer)."""
        self.counts[bisect_left(self.bounds, value)] += weight
        self.sum += value * weight

    def snapshot(self) -> tuple[list[tuple[float, int]], int, float]:
        """``([(le, cumulative count), ..., (inf, count)], count, sum)``: a copy, consistent
        in its counts even if read from another thread while the loop writes."""
        counts, total = list(self.counts), self.sum
        cumulative, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), counts):
            running += n
            cumulative.append((bound, running))
        return cumulative, running, total

    def reset(self) -> None:
        """Forget every observation (for tests)."""
        self.counts[:] = [0] * (len(self.bounds) + 1)
        self.sum = 0.0


#: seconds from a batch's commit to its frames being handed to a client's socket, one
#: observation per writer wake-up per client, weighted by the frames it sent
DELIVERY = Buckets(LATENCY_BOUNDS)
#: seconds from a batch being written to the broker to this process reading it
BROKER_LAG = Buckets(LATENCY_BOUNDS)
#: whether transports call :func:`sent`: from the first :class:`~sqla_notify.metrics.NotifyCollector`
#: on, so that a process that exports no metrics pays one attribute check per wake-up
observing = False


def observe() -> None:
    """Have transports observe the commit→send latency from now on (idempotent)."""
    global observing  # noqa: PLW0603 - one switch for the process, read on the hot path
    observing = True


def sent(
    batch: Sequence[Frame], _clock: Callable[[], float] = time.time, _counts: list[int] = DELIVERY.counts,
) -> None:
    """A transport handed ``batch`` to its socket: observe the commit→send latency of its
    first notification (the oldest: an upper bound for the rest), weighted by its length.

    A batch that starts with a control message is not counted: that is a connection's first
    (``welcome``, then a replay of what it missed while away) or a ``resync``.
    """
    # Once per writer wake-up per client: a clock read and a few integer operations. The
    # bucket of x ms is the bit length of int(x): [2**(k-1), 2**k) ms goes to bound 2**k ms.
    if batch:
        first = batch[0]
        if first.__class__ is Entry:
            committed = first.committed
            if committed:
                late = _clock() - committed
                weight = len(batch)
                if late > 0.0:
                    k = int(late * 1000.0).bit_length()
                    _counts[k if k < _TOP else _TOP] += weight
                    DELIVERY.sum += late * weight
                else:  # another host's clock, ahead of ours
                    _counts[0] += weight


_TOP = len(LATENCY_BOUNDS)  # the +Inf bucket
