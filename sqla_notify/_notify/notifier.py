"""The public entry point: attach to session factories, publish what their commits changed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, TypeVar

import msgspec
from sqlalchemy import Connection, event
from sqlalchemy.orm import ORMExecuteState, Session, scoped_session, sessionmaker

from .._capture import bulk as _bulk
from .._capture.buffer import Buffer, Pending, to_notifications
from .._capture.recorder import Recorder
from .._errors import NotAttachedError
from .._report import HookErrors
from ..types import SinkCallable
from .notification import Notification
from .sinks import CallbackSink, Sink, as_sink

__all__ = ("Notifier", "NotifierStats")

logger = logging.getLogger("sqla_notify")

T = TypeVar("T")


class NotifierStats(msgspec.Struct, frozen=True):
    """Counters of one :class:`Notifier` since it was created."""

    #: sink calls made: one per committed transaction that changed something, plus one per
    #: ``notify()`` without a session
    batches: int
    #: notifications handed to the sink
    notifications: int
    #: sink calls that raised (their notifications were logged, not delivered)
    sink_errors: int


class _Attachment(NamedTuple):
    listen_target: Any  # what event.listen() was called on
    session_class: type[Session]  # the class every session of the target is an instance of
    undo: Callable[[], None] | None  # restores what attach() changed on the target


_EVENTS = ("before_flush", "after_flush", "after_commit", "after_transaction_end", "do_orm_execute")


class Notifier:
    """Turns the commits of attached session factories into notifications for a sink.

    .. code-block:: python

        notifier = Notifier(print)  # any Sink, or a callable taking a list of notifications
        SessionLocal = notifier.attach(sessionmaker(engine))

        with SessionLocal.begin() as session:
            session.add(Forum(name="general"))
        # prints [Notification(collection='forums', action='insert', data={'id': 1})]

    :param sink: a :class:`Sink`, or any callable taking one transaction's list of
        :class:`Notification`. See :class:`Sink` for when and on which thread it is called.
    :raises TypeError: if ``sink`` is neither.
    """

    def __init__(self, sink: Sink | SinkCallable) -> None:
        self._sink: Sink = as_sink(sink)
        # A plain callable is called directly: one Python frame less per delivery.
        self._send: SinkCallable = (
            self._sink.callback if isinstance(self._sink, CallbackSink) else self._sink.publish
        )
        # A transactional sink (a hub with a PostgreSQL broker) announces each batch inside
        # its transaction; others cost no before_commit listener.
        self._transactional = bool(self._sink.transactional)
        self._events = _EVENTS + (("before_commit",) if self._transactional else ())
        # A sink that builds notifications on its own thread (the hub, on its event loop)
        # gets captured batches unbuilt: see Pending.
        self._send_pending: Callable[[Pending], None] | None = (
            self._sink._publish_pending if self._sink._deferred else None
        )
        self._recorder = Recorder(self._deliver_buffer, self._prepare if self._transactional else None)
        self._attached: dict[int, _Attachment] = {}
        self._session_classes: tuple[type[Session], ...] = ()
        self._lock = threading.Lock()
        self._batches = 0
        self._notifications = 0
        self._sink_errors = 0
        self._sink_failures = HookErrors(f"sink {type(self._sink).__name__}", "sink_error")

    @property
    def sink(self) -> Sink:
        """The sink every batch goes to (a plain callable appears wrapped in a CallbackSink)."""
        return self._sink

    # -- attaching -----------------------------------------------------------------------

    def attach(self, target: T) -> T:
        """Capture the changes of every session made by ``target``; return ``target``.

        :param target: a :class:`~sqlalchemy.orm.sessionmaker`, an
            :class:`~sqlalchemy.ext.asyncio.async_sessionmaker`, a ``Session`` subclass, or a
            ``scoped_session`` / ``async_scoped_session`` (its factory is attached). Only
            sessions from ``target`` are affected, never every ``Session`` in the process.
            An ``async_sessionmaker`` gets a private ``sync_session_class`` for this, which
            :meth:`detach` restores.
        :raises TypeError: for any other kind of object, or an ``AsyncSession`` subclass (attach
            the ``async_sessionmaker`` instead; SQLAlchemy has no events on ``AsyncSession``).
        :raises ValueError: for the ``Session`` class itself, which is every session.

        Attaching the same target again does nothing.
        """
        factory = _factory_of(target)
        if id(factory) in self._attached:
            return target
        attachment = _listen_target(factory)
        for name in self._events:
            event.listen(attachment.listen_target, name, self._listener(name))
        self._attached[id(factory)] = attachment
        self._session_classes += (attachment.session_class,)
        return target

    def detach(self, target: object) -> None:
        """Stop capturing for ``target``, undoing :meth:`attach`.

        Transactions still open on its sessions publish nothing.

        :raises ValueError: if ``target`` is not attached to this notifier.
        """
        factory = _factory_of(target)
        attachment = self._attached.pop(id(factory), None)
        if attachment is None:
            raise ValueError(f"detach() expected a target attached to this notifier, got {target!r}")
        for name in self._events:
            event.remove(attachment.listen_target, name, self._listener(name))
        if attachment.undo is not None:
            attachment.undo()
        self._session_classes = tuple(
            c for c in self._session_classes if c is not attachment.session_class
        )

    def _listener(self, name: str) -> Callable[..., Any]:
        if name == "do_orm_execute":
            return self._do_orm_execute
        return getattr(self._recorder, name)  # type: ignore[no-any-return]

    def _do_orm_execute(self, state: ORMExecuteState) -> Any:
        return _bulk.do_orm_execute(self._recorder, state)

    # -- notifying -----------------------------------------------------------------------

    def notify(
        self,
        collection: str,
        action: str,
        data: Mapping[str, Any] | None = None,
        *,
        session: Any = None,
        filter_before: Mapping[str, Any] | None = None,
        filter_after: Mapping[str, Any] | None = None,
    ) -> None:
        """Announce a change the ORM does not see: raw SQL, another service, a file.

        Without ``session`` the notification goes to the sink at once. With ``session`` it
        joins that session's current transaction (a SAVEPOINT if one is open): published
        after the commit together with the captured changes, dropped on rollback. That is
        the way to announce ``session.execute(text("UPDATE ..."))``.

        :param collection: non-empty name of what changed, e.g. ``"forums"``.
        :param action: non-empty verb; capture uses ``insert``/``update``/``delete``.
        :param data: optional payload; copied (one level deep) when the call is made.
        :param session: a ``Session`` or ``AsyncSession`` from an attached target. If it has
            no transaction yet, one is begun, as its next statement would.
        :param filter_before: the row's filter values before the change (see
            ``NotifyOptions(filter_by=...)``), so that only the filtered subscribers it
            concerns receive it; ``None``: unknown, every filtered subscriber of the
            collection receives it. An ``"insert"`` has none.
        :param filter_after: the same, after the change; a ``"delete"`` has none.
        :raises TypeError: for arguments of the wrong type.
        :raises ValueError: for an empty ``collection`` or ``action``.
        :raises NotAttachedError: if ``session`` does not come from an attached target.
        """
        if collection.__class__ is not str or action.__class__ is not str:
            _check_name("collection", collection)
            _check_name("action", action)
        if not collection or not action:
            raise ValueError(
                f"notify() expected a non-empty collection and action, "
                f"got collection={collection!r}, action={action!r}"
            )
        if data is not None:
            if data.__class__ is not dict and not isinstance(data, Mapping):
                raise TypeError(
                    f"notify() expected data to be a mapping or None, "
                    f"got {type(data).__name__}: {data!r}"
                )
            data = dict(data)
        notification = Notification(collection, action, data)
        if filter_before is not None or filter_after is not None:
            notification = Notification(
                collection, action, data,
                filter_before=_values("filter_before", filter_before),
                filter_after=_values("filter_after", filter_after),
            )
        if session is None:
            self._deliver([notification])
            return
        sync_session = getattr(session, "sync_session", session)  # AsyncSession → Session
        if not isinstance(sync_session, Session):
            raise TypeError(
                f"notify() expected session to be a Session or AsyncSession, "
                f"got {type(session).__name__}: {session!r}"
            )
        if not isinstance(sync_session, self._session_classes):
            raise NotAttachedError(
                f"notify() got a session of class {type(sync_session).__name__}, which no "
                f"target attached to this notifier makes, so its commit would never be seen; "
                f"attach its sessionmaker first"
            )
        if sync_session.get_transaction() is None:
            sync_session.begin()
        self._recorder.buffer(sync_session).entries[object()] = notification

    # -- delivery ------------------------------------------------------------------------

    def _prepare(self, connection: Connection, batch: list[Notification]) -> bool:
        handled = self._sink.publish_in_transaction(connection, batch)
        if handled:
            with self._lock:
                self._batches += 1
                self._notifications += len(batch)
        return handled

    def _deliver_buffer(self, buffer: Buffer, origin: str | None = None) -> None:
        """Deliver a committed transaction's buffer: unbuilt to a deferring sink, else built."""
        send = self._send_pending
        if send is None:
            self._deliver(to_notifications(buffer, origin))
            return
        batch = Pending(buffer, origin)
        try:
            send(batch)
        except Exception as exc:  # noqa: BLE001 - see _deliver
            with self._lock:
                self._sink_errors += 1
            self._sink_failures.record(
                exc, f"{len(batch)} notification(s) not delivered ({_summary(batch.notifications())})"
            )
            return
        with self._lock:
            self._batches += 1
            self._notifications += len(batch)

    def _deliver(self, batch: list[Notification]) -> None:
        try:
            self._send(batch)
        except Exception as exc:  # noqa: BLE001 - a sink must never break the user's commit
            with self._lock:
                self._sink_errors += 1
            # By type and place, at most once per type a minute, with what was lost by
            # collection and action: never the payloads, nor the exception's message, which
            # may quote them.
            self._sink_failures.record(exc, f"{len(batch)} notification(s) not delivered ({_summary(batch)})")
            return
        # Not "with": on this path (every notify() call) the context manager protocol is
        # half the cost of the counting; nothing between acquire and release can raise.
        lock = self._lock
        lock.acquire()
        self._batches += 1
        self._notifications += len(batch)
        lock.release()

    def stats(self) -> NotifierStats:
        """Counters since creation: batches and notifications delivered, sink failures."""
        with self._lock:
            return NotifierStats(self._batches, self._notifications, self._sink_errors)

    def __repr__(self) -> str:
        return f"Notifier({self._sink!r}, attached={len(self._attached)})"


def _summary(batch: list[Notification]) -> str:
    counts: dict[tuple[str, str], int] = {}
    for n in batch:
        counts[n.collection, n.action] = counts.get((n.collection, n.action), 0) + 1
    return ", ".join(f"{c} {a} ×{k}" for (c, a), k in counts.items())


def _values(name: str, values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
        raise TypeError(f"notify() expected {name} to be a mapping of column names or None, got {values!r}")
    return dict(values)


def _check_name(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"notify() expected {name} to be a str, got {type(value).__name__}: {value!r}")


def _factory_of(target: object) -> object:
    """The session factory behind ``target``: scoped sessions resolve to theirs."""
    if isinstance(target, scoped_session):
        return target.session_factory
    try:
        from sqlalchemy.ext.asyncio import async_scoped_session
    except ImportError:  # pragma: no cover - the asyncio extension needs greenlet
        return target
    if isinstance(target, async_scoped_session):
        return target.session_factory
    return target


def _listen_target(factory: object) -> _Attachment:
    if isinstance(factory, sessionmaker):
        # A sessionmaker makes its sessions from a private subclass; listening on the
        # sessionmaker listens on that subclass only.
        return _Attachment(factory, factory.class_, None)
    if isinstance(factory, type) and issubclass(factory, Session):
        if factory is Session:
            raise ValueError(
                "attach() got the Session class itself, which would capture every session in "
                "the process; attach a sessionmaker or a Session subclass instead"
            )
        return _Attachment(factory, factory, None)
    try:
        from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    except ImportError:  # pragma: no cover
        AsyncSession = async_sessionmaker = None  # type: ignore[assignment,misc]
    if async_sessionmaker is not None and isinstance(factory, async_sessionmaker):
        return _attach_async(factory)
    if AsyncSession is not None and isinstance(factory, type) and issubclass(factory, AsyncSession):
        raise TypeError(
            f"attach() got the AsyncSession subclass {factory.__name__}; SQLAlchemy has no "
            f"events on AsyncSession classes: attach the async_sessionmaker that makes them"
        )
    raise TypeError(
        f"attach() expected a sessionmaker, async_sessionmaker, scoped_session or Session "
        f"subclass, got {type(factory).__name__}: {factory!r}"
    )


def _attach_async(factory: Any) -> _Attachment:
    # Events go on the sync Session class behind the AsyncSession. That class defaults to
    # Session itself (process-wide), so give this factory a private subclass of whatever it
    # uses, the way SQLAlchemy documents it, and put the original back on detach().
    had_own = "sync_session_class" in factory.kw
    original: type[Session] = factory.kw.get("sync_session_class") or factory.class_.sync_session_class
    private = type(original.__name__, (original,), {"__module__": original.__module__})
    factory.configure(sync_session_class=private)

    def undo() -> None:
        if had_own:
            factory.configure(sync_session_class=original)
        else:
            factory.kw.pop("sync_session_class", None)

    return _Attachment(private, private, undo)
