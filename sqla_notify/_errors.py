"""Exceptions raised by sqla_notify."""

from __future__ import annotations

__all__ = ("NotAttachedError", "SinkError", "SqlaNotifyError", "WouldBlock")


class SqlaNotifyError(Exception):
    """Base class of every exception raised by sqla_notify."""


class NotAttachedError(SqlaNotifyError):
    """Raised by ``notify(..., session=s)`` when ``s`` does not come from an attached target.

    Such a notification could never be published, because the notifier does not see that
    session commit.
    """


class SinkError(SqlaNotifyError):
    """Raised by :class:`FanoutSink` after every sink ran, when at least one of them failed.

    ``errors`` holds each exception, in sink order; the first is also ``__cause__``.
    """

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        kinds = ", ".join(f"{type(e).__name__}: {e}" for e in errors)
        super().__init__(f"{len(errors)} sink(s) failed: {kinds}")


class WouldBlock(SqlaNotifyError):
    """Raised by :meth:`Subscriber.send_nowait` (and its kin) when the subscriber's queue is
    full: nothing was queued, and the hub's overflow policy decides what happens instead."""
