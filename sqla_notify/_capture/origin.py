"""Which client connection caused a session's changes: echo suppression's capture side.

A request that carries a connection id (``X-Notify-Connection``, see ``docs/protocol.md``)
ties it to the session that serves it; every notification its transactions commit then
carries it as :attr:`Notification.origin`, and the hub does not send them back to that
connection. The id lives in ``session.info``, which belongs to the session (never shared
between threads, gone with the session) and reaches the thread a sync endpoint runs in,
which a context variable set by an ``async`` dependency would not. It is read when a
transaction publishes, once per committed transaction that changed something: a session
without one pays one dictionary lookup per such commit, nothing per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from sqlalchemy.orm import SessionTransaction

__all__ = ("origin_of", "release_origin", "set_origin")

# session.info[_KEY]: the connection id, for every transaction committed while it is there;
# or (id, transaction): for that root transaction only (see release_origin).
_KEY = "sqla_notify.origin"
Stored = Union[str, "tuple[str, SessionTransaction]"]


def _sync_session(session: Any, caller: str) -> Session:
    sync = getattr(session, "sync_session", session)  # AsyncSession → its Session
    if not isinstance(sync, Session):
        raise TypeError(f"{caller}() expected a Session or AsyncSession, got {type(session).__name__}: {session!r}")
    return sync


def set_origin(session: Any, connection: str | None) -> None:
    """Mark what ``session`` commits from now on as caused by the client connection
    ``connection``, or stop doing so (``None``).

    Every notification of every transaction the session commits while the mark is set,
    captured or sent with ``notifier.notify(..., session=session)``, carries
    ``origin=connection``; the hub sends none of them to that connection (and only to it),
    whichever process it is connected to. ``connection`` is the id the client received in
    its ``welcome`` message and sent back in the ``X-Notify-Connection`` header (see
    ``docs/protocol.md``, "Echo suppression"). In a FastAPI app,
    :func:`sqla_notify.fastapi.notify_origin` reads the header and calls this for you.

    The mark is read when a transaction commits, and stays on the session (in
    ``session.info``) until cleared: clear it before handing the session to other work.

    :param session: a ``Session`` or ``AsyncSession``.
    :param connection: the connection id, or ``None`` to clear the mark.
    :raises TypeError: if ``session`` is neither, or ``connection`` is neither a non-empty
        string nor ``None``.
    """
    info = _sync_session(session, "set_origin").info
    if connection is None:
        info.pop(_KEY, None)
        return
    if not isinstance(connection, str) or not connection:
        raise TypeError(
            f"set_origin() expected connection to be a non-empty str (the id of the client's "
            f"welcome message) or None, got {type(connection).__name__}: {connection!r}"
        )
    info[_KEY] = connection


def release_origin(session: Any, connection: str) -> None:
    """The request that marked ``session`` with ``connection`` is done with it.

    With no transaction open, the mark goes now. With one open, the mark is kept for that
    transaction only: the dependency that made the session may commit it on its way out
    (``with sessionmaker.begin() as session: yield session``), and FastAPI runs that exit
    after this one. Any later transaction is unmarked.
    """
    sync = _sync_session(session, "release_origin")
    if sync.info.get(_KEY) != connection:
        return  # changed since (set_origin called again): not ours to clear
    transaction = sync.get_transaction()
    if transaction is None:
        del sync.info[_KEY]
    else:
        sync.info[_KEY] = (connection, transaction)


def origin_of(session: Session, transaction: SessionTransaction | None) -> str | None:
    """The origin of the root ``transaction`` of ``session``, which is publishing."""
    stored: Stored | None = session.info.get(_KEY)
    if stored is None or isinstance(stored, str):
        return stored
    connection, until = stored
    return connection if until is transaction else None
