"""Where notifications go: the :class:`Sink` contract and the built-in sinks."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from .._errors import SinkError
from ..types import SinkCallable
from .notification import Notification

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .._capture.buffer import Pending

__all__ = ("CallbackSink", "FanoutSink", "Sink")

class Sink(abc.ABC):
    """Receives the notifications of each committed transaction.

    The :class:`Notifier` calls :meth:`publish` once per committed root transaction (and once
    per :meth:`Notifier.notify` call made without a session).

    Guarantees to implementations:

    * **When**: only after the database has committed; never for a rollback, a rolled back
      savepoint, a failed commit or a session closed without committing.
    * **Thread**: on the thread that committed, synchronously, right after the commit. For a
      sync :class:`~sqlalchemy.orm.Session` that may be any thread (a FastAPI ``def``
      endpoint runs in a worker thread); for an
      :class:`~sqlalchemy.ext.asyncio.AsyncSession` it is the event loop's thread. Calls for
      different transactions may therefore run concurrently.
    * **Order**: ``notifications`` are in the order the changes happened within the
      transaction (see ``docs/capture.md``, "Ordering").

    Obligations of implementations:

    * **Do not block**: the committing thread (or the event loop) waits for :meth:`publish`
      to return. Hand the batch off (a queue, ``loop.call_soon_threadsafe``) instead of doing
      network I/O here.
    * **Raise freely**: an exception is caught, logged on the ``sqla_notify`` logger with the
      batch attached, and counted in :meth:`Notifier.stats`; it never reaches the code that
      called ``commit()``.
    """

    #: Whether :meth:`publish_in_transaction` may take batches; read once, by the Notifier.
    transactional: bool = False

    #: Private to sqla_notify's own sinks (the hub): whether captured batches go to
    #: :meth:`_publish_pending` unbuilt, for the sink to build their notifications later on
    #: a thread of its own (``Pending.notifications()``) instead of the committing thread.
    #: Read once, by the Notifier. ``notify()`` without a session still calls :meth:`publish`.
    _deferred: bool = False

    def _publish_pending(self, batch: Pending) -> None:
        """Deliver one committed transaction, its notifications not yet built.

        The same promises and obligations as :meth:`publish`: ``batch`` is the sink's from
        now on, and :meth:`Pending.notifications` may be called on any thread, once the
        call has handed it over. The default builds them here and calls :meth:`publish`.
        """
        self.publish(batch.notifications())

    @abc.abstractmethod
    def publish(self, notifications: list[Notification]) -> None:
        """Deliver one committed transaction's notifications.

        :param notifications: a new list, owned by the sink from now on; never empty.
        """

    def publish_in_transaction(self, connection: Connection, notifications: list[Notification]) -> bool:
        """Announce a transaction's notifications *inside* it, just before its COMMIT.

        Called only on sinks whose :attr:`transactional` is true, on the committing thread,
        after the transaction's last flush, with the transaction's ``connection``. Return
        ``True`` if the batch is taken care of (the database will deliver it if and only if
        the transaction commits; :meth:`publish` is not called for it), ``False`` to have it
        published after the commit as usual: do that for anything that fails *before* your
        SQL runs (validate and encode first). Unlike :meth:`publish`, anything it raises
        propagates: ``commit()`` raises it and the transaction is not committed. That is
        deliberate: SQL that failed here has aborted the transaction, and PostgreSQL turns
        the ``COMMIT`` of an aborted transaction into a ``ROLLBACK`` without an error, so
        swallowing the error would let ``commit()`` return normally without the data. The
        default returns ``False``.
        """
        return False


class CallbackSink(Sink):
    """A sink that calls ``callback(notifications)``: the shape of a plain callable sink.

    ``Notifier(print)`` is shorthand for ``Notifier(CallbackSink(print))``.
    """

    def __init__(self, callback: SinkCallable) -> None:
        if not callable(callback):
            raise TypeError(
                f"CallbackSink expected a callable taking a list of notifications, "
                f"got {type(callback).__name__}: {callback!r}"
            )
        self.callback = callback

    def publish(self, notifications: list[Notification]) -> None:
        """Call the callback with ``notifications``."""
        self.callback(notifications)

    def __repr__(self) -> str:
        return f"CallbackSink({self.callback!r})"


class FanoutSink(Sink):
    """Sends every batch to several sinks, in the order given.

    One failing sink does not keep the others from receiving the batch; once all have run,
    the failures are raised together as a :class:`SinkError`. Each sink receives its own copy
    of the list.
    """

    def __init__(self, *sinks: Sink | SinkCallable) -> None:
        if not sinks:
            raise ValueError("FanoutSink expected at least one sink, got none")
        self.sinks: tuple[Sink, ...] = tuple(as_sink(s) for s in sinks)

    def publish(self, notifications: list[Notification]) -> None:
        """Publish ``notifications`` to every sink; raise :class:`SinkError` if any failed."""
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.publish(list(notifications))
            except Exception as exc:  # noqa: BLE001 - isolate sinks from each other
                errors.append(exc)
        if errors:
            raise SinkError(errors) from errors[0]

    def __repr__(self) -> str:
        return f"FanoutSink{self.sinks!r}"


def as_sink(sink: Sink | SinkCallable) -> Sink:
    """Return ``sink`` itself if it is a :class:`Sink`, else wrap a callable in a CallbackSink."""
    if isinstance(sink, Sink):
        return sink
    if callable(sink):
        return CallbackSink(sink)
    raise TypeError(
        f"expected a Sink or a callable taking a list of notifications, "
        f"got {type(sink).__name__}: {sink!r}"
    )
