"""Change capture: from flushed rows to one batch of notifications per committed transaction.

How a transaction's changes travel
==================================

SQLAlchemy tells a session's listeners about a transaction in several steps, and each step
has its own rules (see ``SessionEvents`` in ``sqlalchemy/orm/events.py``). Capture follows
them:

1. **Flush** (``after_flush``). The rows just written are in the flush context, and their
   attribute history still shows what changed. Everything needed later is copied *now*:
   primary keys, changed column names, payload values. After the commit the instances are
   expired (``expire_on_commit``) and touching them would run SQL, or, in an
   ``AsyncSession``, raise ``MissingGreenlet``. ORM bulk statements
   (``session.execute(update(Model)...)``) never flush; :mod:`._bulk` records them as they
   execute. ``notify(..., session=s)`` records into the same place.

2. **Buffer per real transaction.** Records go to a buffer keyed by the innermost *real*
   transaction: the innermost SAVEPOINT (``session.get_nested_transaction()``) or else the
   root (``session.get_transaction()``). Flush-internal subtransactions are not real.
   Within a buffer one entry is kept per row (collection + primary key), coalescing what
   happened to it: insert→update = insert, insert→delete = nothing, update→delete = delete,
   delete→insert = update.

3. **Commit.** ``after_commit`` fires when the database committed: for the root, but also
   when a SAVEPOINT is *released*. It only marks the buffer as committed, because no SQL
   may run there and because a released savepoint is not yet durable.

4. **End** (``after_transaction_end``), fired for every transaction, committed or not:

   * a committed SAVEPOINT folds its buffer into the enclosing transaction's, coalescing
     again; the outer transaction decides its fate;
   * a committed root publishes its buffer: one sink call per transaction;
   * anything else (rollback, savepoint rollback, failed commit, ``close()`` without
     commit, which fires no rollback event) drops the buffer.

Buffers live in ``session.info`` under a key private to the notifier, so they die with the
session and are never shared between threads (a session is not thread-safe either).

Why the flush context and not per-row mapper events
===================================================

Mapper events (``after_insert`` ...) are process-global: every flush of every session pays
for them, attached or not, and calling a Python function per row cost 13-130% of a plain
flush in our measurements. Reading the flush context once per flush touches only this
notifier's sessions and costs a few hundred nanoseconds per row. It reads
``UOWTransaction.mappers`` and ``.states`` and ``InstanceState.committed_state``, which are
undocumented; ``tests/test_internals.py`` pins them on every supported SQLAlchemy version.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Callable, Union, cast

from sqlalchemy.orm.base import NO_VALUE

from ._notification import Notification
from ._options import ModelInfo, model_info

if TYPE_CHECKING:
    from sqlalchemy.orm import Mapper, Session, SessionTransaction, UOWTransaction
    from sqlalchemy.orm.state import InstanceState

logger = logging.getLogger("sqla_notify")

INSERT = "insert"
UPDATE = "update"
DELETE = "delete"

#: One captured row: (action, model, primary key or None for "some rows", payload values).
Row = tuple[str, ModelInfo, Union[tuple[Any, ...], None], Union[dict[str, Any], None]]
Entry = Union[Row, Notification]


class Buffer:
    """What one real transaction (root or savepoint) has changed so far."""

    __slots__ = ("entries", "committed")

    def __init__(self) -> None:
        # Insertion-ordered: the order of first appearance is the publishing order.
        self.entries: dict[Hashable, Entry] = {}
        self.committed = False

    def add(self, key: Hashable, row: Row) -> None:
        """Record ``row`` under ``key``, coalescing with what the key already holds."""
        entries = self.entries
        prev = entries.get(key)
        if prev is None:
            entries[key] = row
            return
        prev = cast(Row, prev)  # only rows share keys; manual notifications are unique
        net = coalesce(prev[0], row[0])
        if net is None:
            del entries[key]
            return
        values = row[3]
        if net != DELETE and prev[0] != DELETE and prev[3] and values is not None:
            values = {**prev[3], **values}
        entries[key] = (net, row[1], row[2], values)

    def merge(self, child: Buffer) -> None:
        """Fold a released savepoint's entries into this (enclosing) buffer."""
        for key, entry in child.entries.items():
            if isinstance(entry, Notification):
                self.entries[key] = entry
            else:
                self.add(key, entry)


def coalesce(first: str, then: str) -> str | None:
    """The net action of a row that saw ``first`` and ``then`` in one transaction."""
    if first == INSERT:
        return None if then == DELETE else INSERT
    if first == DELETE and then == INSERT:
        return UPDATE
    return then


def to_notifications(buffer: Buffer) -> list[Notification]:
    """Build the notifications of a committed buffer, in order."""
    out: list[Notification] = []
    append = out.append
    for entry in buffer.entries.values():
        if isinstance(entry, Notification):
            append(entry)
            continue
        action, info, pk, values = entry
        if pk is None:
            append(Notification(info.collection, action))
            continue
        keys = info.pk_keys
        data = {keys[0]: pk[0]} if len(keys) == 1 else dict(zip(keys, pk))
        if values:
            data.update(values)
        append(Notification(info.collection, action, data))
    return out


def _snapshot(value: Any) -> Any:
    # JSON and ARRAY columns hold mutable containers: copy them so that a change made after
    # the commit cannot alter a notification that is still on its way.
    return copy.deepcopy(value) if value.__class__ in (dict, list) else value


class Recorder:
    """The session event listeners of one :class:`Notifier`, and the state they share."""

    def __init__(self, publish: Callable[[Buffer], None]) -> None:
        self._publish = publish
        self._infos: dict[Mapper[Any], ModelInfo | None] = {}
        # Anything unique and private does as the session.info key.
        self.info_key = object()

    # -- lookups -------------------------------------------------------------------------

    def info(self, mapper: Mapper[Any]) -> ModelInfo | None:
        """The cached capture settings of ``mapper`` (``None``: not notified)."""
        try:
            return self._infos[mapper]
        except KeyError:
            info = self._infos[mapper] = model_info(mapper)
            return info

    def buffer(self, session: Session) -> Buffer:
        """The buffer of ``session``'s innermost real transaction, created on first use."""
        pending: dict[SessionTransaction, Buffer] | None = session.info.get(self.info_key)
        if pending is None:
            pending = session.info[self.info_key] = {}
        tx = session.get_nested_transaction() or session.get_transaction()
        buf = pending.get(tx)  # type: ignore[arg-type]
        if buf is None:
            buf = pending[tx] = Buffer()  # type: ignore[index]
        return buf

    # -- session events ------------------------------------------------------------------

    def after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        """Copy what this flush wrote into the current transaction's buffer."""
        try:
            self._capture(session, flush_context)
        except Exception:  # noqa: BLE001 - a bug here must not fail the user's flush
            logger.exception("sqla_notify failed to capture a flush; its changes are not announced")

    def after_commit(self, session: Session) -> None:
        """Mark the transaction (root or released savepoint) that just committed."""
        pending = session.info.get(self.info_key)
        if pending:
            buf = pending.get(session.get_nested_transaction() or session.get_transaction())
            if buf is not None:
                buf.committed = True

    def after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        """Publish a committed root, fold a released savepoint, drop anything else."""
        pending = session.info.get(self.info_key)
        if not pending:
            return
        buf = pending.pop(transaction, None)
        if buf is None or not buf.committed:
            return
        if transaction.nested:
            parent = transaction.parent
            # Skip non-nested subtransactions: they are not real transactions.
            while parent is not None and not parent.nested and parent.parent is not None:
                parent = parent.parent
            if parent is not None:
                target = pending.get(parent)
                if target is None:
                    pending[parent] = buf
                else:
                    target.merge(buf)
            return
        if transaction.parent is None and buf.entries:
            self._publish(buf)

    # -- capture -------------------------------------------------------------------------

    def _capture(self, session: Session, flush_context: UOWTransaction) -> None:
        flags = flush_context.states
        inserts: list[tuple[int, ModelInfo, InstanceState[Any]]] = []
        others: list[tuple[str, ModelInfo, InstanceState[Any], Any]] = []
        for mapper, states in flush_context.mappers.items():
            info = self.info(mapper)
            if info is None:
                continue
            columns = info.columns
            for state in states:
                isdelete, listonly = flags[state]
                if listonly:
                    continue
                if isdelete:
                    if state.key is not None:  # a pending object deleted is never written
                        others.append((DELETE, info, state, None))
                elif state.key is None:
                    inserts.append((state.insert_order, info, state))
                else:
                    committed = state.committed_state
                    if not committed:
                        continue
                    changed = _changed(committed, state.dict, columns)
                    if changed:
                        others.append((UPDATE, info, state, changed))
        if not inserts and not others:
            return
        buf = self.buffer(session)
        if len(inserts) > 1:
            # The flush context is unordered; objects keep the order they were added in.
            inserts.sort(key=_first)
        for _, info, state in inserts:
            d = state.dict
            try:
                pk = tuple([d[k] for k in info.pk_keys])
            except KeyError:
                pk = state.key[1] if state.key is not None else None  # type: ignore[assignment]
            self._add(buf, INSERT, info, state, pk, None)
        for action, info, state, changed in others:
            pk = state.key[1]  # type: ignore[index]
            if changed and any(k in changed for k in info.pk_keys):
                # The primary key itself was updated: announce the row under its new key.
                d = state.dict
                pk = tuple([d.get(k, old) for k, old in zip(info.pk_keys, pk)])
            self._add(buf, action, info, state, pk, changed)

    def _add(
        self,
        buf: Buffer,
        action: str,
        info: ModelInfo,
        state: InstanceState[Any],
        pk: tuple[Any, ...] | None,
        changed: list[str] | None,
    ) -> None:
        key = (info, pk) if pk is not None else object()
        mode = info.mode
        if mode == "pk":
            values = None
        else:
            # A payload describes the row's net action, e.g. insert→update is an insert.
            prev = cast("Row | None", buf.entries.get(key))
            net = coalesce(prev[0], action) if prev is not None else action
            values = self._payload(info, state, net or action, changed)
        buf.add(key, (action, info, pk, values))

    def _payload(
        self, info: ModelInfo, state: InstanceState[Any], action: str, changed: list[str] | None
    ) -> dict[str, Any] | None:
        mode = info.mode
        d = state.dict
        if mode == "function":
            return _call_payload_function(info, state, action, changed)
        if action == DELETE:
            return None
        if mode == "row" or changed is None:  # "row", or an insert in "changes" mode
            return {k: _snapshot(d[k]) for k in info.payload_columns if k in d}
        exclude = info.exclude
        return {k: _snapshot(d[k]) for k in changed if k not in exclude and k in d}


def _first(item: tuple[int, ModelInfo, InstanceState[Any]]) -> int:
    return item[0]


def _changed(committed: dict[str, Any], current: dict[str, Any], columns: frozenset[str]) -> list[str]:
    """Column keys whose value really changed: the same test the flush uses to write them."""
    out = []
    for key, old in committed.items():
        if key not in columns:
            continue  # a relationship or collection: no column of this row changes
        if old is NO_VALUE:  # set without having been loaded: assume changed, as the flush does
            out.append(key)
            continue
        new = current.get(key, NO_VALUE)
        try:
            same = new is old or bool(new == old)
        except Exception:  # noqa: BLE001 - e.g. arrays whose == is elementwise
            same = False
        if not same:
            out.append(key)
    return out


def _call_payload_function(
    info: ModelInfo, state: InstanceState[Any], action: str, changed: list[str] | None
) -> dict[str, Any] | None:
    function = info.function
    if function is None:
        return None
    if action == DELETE:
        keys: frozenset[str] = frozenset()
    elif changed is None:
        keys = frozenset(k for k in info.columns if k in state.dict)
    else:
        keys = frozenset(changed)
    try:
        result = function(state.obj(), action, keys)
        if result is None:
            return None
        return {k: _snapshot(v) for k, v in result.items() if k not in info.exclude}
    except Exception:  # noqa: BLE001 - a payload bug must not fail the user's flush
        logger.exception(
            "payload function %r failed for a %s of %s; sending the primary key only",
            function, action, info.collection,
        )
        return None
