"""Log lines that an attacker can provoke at will, kept few and free of secrets.

A refused handshake or a hook that raises can be triggered by any client, as often as it
likes. Logging each one costs a line (and, with a traceback, far more) per attempt: one
traceback per client per notification was measured at 20,000 log lines and a 6.7 s stall of
the event loop. So each kind of event is logged at most once per interval, with the number
seen since; and a hook's exception is reported by type and place, never by its message or
arguments, which may quote a token, a principal or a row.

Every record of the ``sqla_notify`` logger carries the same four fields (:func:`fields`,
passed as ``extra=``), for an operator's filters: ``event``, ``connection``, ``collection``
and ``broker`` (``docs/operations.md`` lists the events).
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback

__all__ = ("HookErrors", "Throttle", "connection_tag", "fields")

logger = logging.getLogger("sqla_notify")

#: seconds between two log lines about the same kind of event
INTERVAL = 60.0


def fields(
    event: str, *, connection: str | None = None, collection: str | None = None, broker: object = None,
) -> dict[str, object]:
    """The ``extra=`` of a log record: what kind of record it is (``event``, a stable name),
    and the connection id, collection and broker it concerns (``None`` where it concerns
    none). Every key is always there, so a format string may name any of them.

    ``connection``: a connection id; the record carries its :func:`connection_tag`, never
    the id itself. ``broker``: the broker object; its ``repr`` goes in the record (ours
    leave out passwords).
    """
    return {
        "event": event, "connection": None if connection is None else connection_tag(connection),
        "collection": collection,
        "broker": None if broker is None else repr(broker),
    }


def connection_tag(connection: str) -> str:
    """What log records call a connection: the first 12 hex digits of the SHA-256 of its id.

    Not the id: whoever holds a connection's id can have the changes of *their own*
    requests withheld from that connection (``X-Notify-Connection``, echo suppression), so
    it stays with its tab. The tag cannot be turned back into the id (96 random bits), and
    an operator matches a tab's ``welcome`` with ``sha256(id)[:12]``.
    """
    return hashlib.sha256(connection.encode()).hexdigest()[:12]


class Throttle:
    """Lets through one event per key per ``interval`` seconds, counting the rest."""

    __slots__ = ("interval", "_last", "_missed")

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._last: dict[object, float] = {}
        self._missed: dict[object, int] = {}

    def due(self, key: object) -> int | None:
        """``None`` if ``key`` was let through within the interval (counted as missed);
        otherwise the number missed since it last was, and the interval starts again."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._missed[key] = self._missed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._missed.pop(key, 0)


class HookErrors:
    """Counts the exceptions of one application hook (``authenticate``, ``authorize``) and
    logs them once per exception type per interval, without their message."""

    __slots__ = ("event", "hook", "count", "_throttle")

    def __init__(self, hook: str, event: str = "hook_error", interval: float = INTERVAL) -> None:
        self.hook = hook
        #: the log records' ``event`` field (``"authorize_error"``...)
        self.event = event
        #: exceptions raised by the hook so far
        self.count = 0
        self._throttle = Throttle(interval)

    def record(self, exc: BaseException, consequence: str) -> None:
        """Count ``exc``; log it if its type was not logged within the interval."""
        self.count += 1
        kind = type(exc)
        missed = self._throttle.due(kind)
        if missed is None:
            return
        # Where it was raised, not what it says: the message may quote a token or a row.
        where = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__))).rstrip()
        logger.error(
            "%s raised %s.%s; %s. Its message is not logged (it may carry data)%s; it was raised here:\n%s",
            self.hook, kind.__module__, kind.__qualname__, consequence,
            f"; {missed} more since the last report" if missed else "", where, extra=fields(self.event),
        )
