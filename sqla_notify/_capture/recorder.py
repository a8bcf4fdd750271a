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

   Columns whose new value the database computes (a SQL expression assigned to an
   attribute, ``server_onupdate``, ``Computed``) are expired by the flush before
   ``after_flush`` runs, which removes them from the attribute history too; capture tells
   them apart from attributes expired *before* the flush with a note ``before_flush``
   takes of the few changed objects that had any (see :func:`_written`). Their rows are
   announced with the keys listed under ``"$unknown"`` (see :class:`NotifyOptions`).

2. **Buffer per real transaction.** Records go to a buffer keyed by the innermost *real*
   transaction: the innermost SAVEPOINT (``session.get_nested_transaction()``) or else the
   root (``session.get_transaction()``). Flush-internal subtransactions are not real.
   Within a buffer one entry is kept per row (collection + primary key), coalescing what
   happened to it: insert→update = insert, insert→delete = nothing, update→delete = delete,
   delete→insert = update.

   For a model with ``filter_by`` or ``old=True``, an entry also holds the values the row
   had before the transaction (its ``filter_by`` columns; the previous values of its
   changed columns) and the ``filter_by`` values after. The row's first record in a buffer
   reads them from ``committed_state`` (the values before this flush), which for the
   transaction's first write of the row are the values it started with; coalescing keeps
   the earliest "before" and the latest "after". A savepoint's buffer records the values at
   its own start, but folding it into the enclosing buffer keeps the enclosing one's, and a
   rolled-back savepoint's buffer is dropped with its rows: what remains is the transaction's.
   A row's first record, for a model with one ``filter_by`` column at most, holds those
   values without a dict (:class:`~.buffer.Lone`): the dicts are made with the
   notifications, where they can be made off the committing thread.

   A buffer's first flush has nothing to coalesce with: each row is there once (one state
   per row). Its rows are *logged* (:class:`~.buffer.Segment`): appended to two lists per
   model and action, without looking their keys up or allocating an entry each, and
   become entries only when something may coalesce with them (a later flush, a bulk
   statement, ``notify()``, a savepoint folded); otherwise, notifications directly. A row
   that may share its key with another of the same flush (a row switch, a changed
   primary key) ends the logging for the rest of that flush.

3. **Before the root's COMMIT**, only for a *transactional* sink (a hub with a PostgreSQL
   broker): ``before_commit`` flushes, then hands the root's complete batch to the sink on
   the transaction's connection, so that the database delivers it if and only if it
   commits. What the sink takes leaves the buffer; anything flushed later (another
   ``before_commit`` listener) is published the usual way below.

4. **Commit.** ``after_commit`` fires when the database committed: for the root, but also
   when a SAVEPOINT is *released*. It only marks the buffer as committed, because no SQL
   may run there and because a released savepoint is not yet durable.

5. **End** (``after_transaction_end``), fired for every transaction, committed or not:

   * a committed SAVEPOINT folds its buffer into the enclosing transaction's, coalescing
     again; the outer transaction decides its fate;
   * a committed root publishes its buffer: one sink call per transaction. The buffer is
     handed over whole and never touched again; the notifier builds its notifications
     (:func:`~.buffer.to_notifications`), or, for a sink that builds them on a thread of
     its own (the hub, on its event loop), passes it on unbuilt (:class:`~.buffer.Pending`);
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

What a row costs
================

A 10,000-row flush runs the loop of :meth:`Recorder._capture` 10,000 times, so the usual
paths (the primary-key mode, and models with one ``filter_by`` column and ``old``) do
everything in place; in a transaction's first flush, in a loop of their own without the
tests of what kind of model or flush it is (:func:`_log_rows`). No Python call per row,
one pass over ``committed_state`` that both tests for a change and picks the old value,
the instance's ``__dict__`` read through the instance the state holds while it is
modified (``_strong_obj``; a deleted one through ``Session._deleted``; else its weak
reference) rather than the ``InstanceState.dict`` property (a Python call of its own),
``d[k]`` where a ``d.get(k)`` would be a method call, and no allocation per row (logged)
or one (a :class:`~.buffer.Lone`, its usual fields passed, the rest defaulted). A model
whose columns all load immutable values (:attr:`ModelInfo.scalar`) keeps its old values as
they are, without the test for a copy. Anything rarer (several old values, a row seen
twice, columns the database computed) takes the general path.
``benchmarks/instr_capture.py`` counts the instructions per row.
"""

from __future__ import annotations

import copy
import logging
import operator
from typing import TYPE_CHECKING, Any, Callable, Iterable, cast

from sqlalchemy.orm.base import NO_VALUE

from .._notify.notification import Notification
from .._report import HookErrors, fields
from .buffer import (
    ABSENT, DELETE, INSERT, UNKNOWN, UNKNOWN_VALUE, UPDATE, Buffer, Lone, Row, Segment, SomeRows, coalesce,
    identity, to_notifications,
)
from .options import InvalidOptions, ModelInfo, model_info
from .origin import origin_of

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Mapper, Session, SessionTransaction, UOWTransaction
    from sqlalchemy.orm.state import InstanceState

logger = logging.getLogger("sqla_notify")

# A frozenset of types, tested with type(): both are cheaper than value.__class__ and a tuple
# (a generic attribute lookup, and a rich comparison per type that is not the value's).
_MUTABLE = frozenset((dict, list))


def _snapshot(value: Any) -> Any:
    # JSON and ARRAY columns hold mutable containers: copy them so that a change made after
    # the commit cannot alter a notification that is still on its way.
    return copy.deepcopy(value) if type(value) in _MUTABLE else value


_insert_order = operator.attrgetter("insert_order")
_PAYLOAD_ERRORS = HookErrors("a payload function", "payload_error")
_UNSET: Any = object()


class Recorder:
    """The session event listeners of one :class:`Notifier`, and the state they share."""

    def __init__(
        self,
        publish: Callable[[Buffer, str | None], None],
        prepare: Callable[[Connection, list[Notification]], bool] | None = None,
    ) -> None:
        self._publish = publish
        self._prepare = prepare
        self._infos: dict[Mapper[Any], ModelInfo | None] = {}
        # Anything unique and private does as the session.info key.
        self.info_key = object()
        # The flush context's attributes are keyed by strings; this one is this recorder's.
        self._flush_key = f"sqla_notify.before_flush.{id(self):x}"

    # -- lookups -------------------------------------------------------------------------

    def info(self, mapper: Mapper[Any]) -> ModelInfo | None:
        """The cached capture settings of ``mapper`` (``None``: not notified)."""
        try:
            return self._infos[mapper]
        except KeyError:
            # Two threads may both compute it; the results are equal, either may win.
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
        elif buf.log:
            buf.settle()  # what comes next may coalesce with the logged rows
        return buf

    # -- session events ------------------------------------------------------------------
    # None of these may raise (after_flush would fail the flush, and the commit-time ones
    # would make commit() raise after the database has committed), with one exception:
    # before_commit lets an error of the transactional sink's SQL through, because the
    # transaction is aborted by then and commit() must not pretend it stored anything.

    def before_flush(self, session: Session, flush_context: UOWTransaction, instances: Any) -> None:
        """Note the changed objects that have expired attributes, for :func:`_written`.

        After the flush, an attribute the flush expired (a column the database computed)
        cannot be told from one expired before it. Most changed objects have none expired
        (they were loaded, then changed), so this is one truth test per changed object; the
        few that have get their expired and changed keys noted on the flush context, which
        :meth:`after_flush` receives too.
        """
        try:
            # A comprehension reads the slot with a specialised instruction, cheaper per
            # object than filter() with an attrgetter (a generic attribute lookup each).
            stale = [state for state in session.identity_map._modified if state.expired_attributes]
            if stale:
                flush_context.attributes[self._flush_key] = {
                    state: (frozenset(state.expired_attributes), tuple(state.committed_state))
                    for state in stale
                }
        except Exception:  # noqa: BLE001
            logger.exception("sqla_notify failed to prepare for a flush", extra=fields("capture_error"))

    def after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        """Copy what this flush wrote into the current transaction's buffer.

        :raises ValueError: when a model's ``filter_by`` does not fit it; the flush then
            fails, as it will until the model is fixed (see :class:`NotifyOptions`).
        """
        try:
            self._capture(session, flush_context)
        except InvalidOptions:
            raise
        except Exception:  # noqa: BLE001
            logger.exception("sqla_notify failed to capture a flush; its changes are not announced",
                             extra=fields("capture_error"))

    def before_commit(self, session: Session) -> None:
        """For a transactional sink only: hand the root's batch to it inside the transaction.

        Flushes first (``commit()`` would flush right after this hook anyway) so that the
        batch is complete. A later flush (another ``before_commit`` listener changing rows)
        is published after the commit, the usual way: nothing is lost.

        Unlike the other hooks, this one lets the sink's exceptions through, and
        ``commit()`` raises them: the sink's SQL ran inside the transaction, and a failed
        statement aborts it (PostgreSQL then turns ``COMMIT`` into a ``ROLLBACK`` without
        an error, so ``commit()`` would return without the data). A sink declines what it
        cannot take before running SQL by returning ``False``.
        """
        if session.get_nested_transaction() is not None or self._prepare is None:
            return  # a savepoint being released: the root decides
        session.flush()  # the user's own errors, which commit() would raise just the same
        pending = session.info.get(self.info_key)
        root = session.get_transaction()
        buf = pending.get(root) if pending else None
        if buf is None or not len(buf):
            return
        if self._prepare(session.connection(), to_notifications(buf, origin_of(session, root))):
            buf.clear()

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
        try:
            if transaction.nested:
                parent = transaction.parent
                # Skip non-nested subtransactions: they are not real transactions.
                while parent is not None and not parent.nested and parent.parent is not None:
                    parent = parent.parent
                if parent is not None:
                    target = pending.get(parent)
                    if target is None:
                        buf.committed = False  # now the enclosing transaction's, not yet committed
                        pending[parent] = buf
                    else:
                        target.merge(buf)
            elif transaction.parent is None and len(buf):
                # Handed over whole: the session goes on with new buffers.
                self._publish(buf, origin_of(session, transaction))
        except Exception:  # noqa: BLE001
            logger.exception("sqla_notify failed to publish a committed transaction", extra=fields("capture_error"))

    # -- capture -------------------------------------------------------------------------

    def _capture(self, session: Session, flush_context: UOWTransaction) -> None:
        # The hot loop of a large flush (see "What a row costs" in the module docstring).
        flags = flush_context.states
        before: Any = _UNSET  # what before_flush saw, read only if needed
        buf: Buffer | None = None
        inserts: list[InstanceState[Any]] = []
        changes: list[str] = []
        # The buffer's log while this flush may log its rows (see Buffer): the transaction's
        # first flush, until a row may share its key with another (then None).
        log: list[Segment] | None = None
        states: Iterable[InstanceState[Any]]
        for mapper, states in flush_context.mappers.items():
            info = self.info(mapper)
            if info is None:
                continue
            if buf is None:
                # Once per flush, not per row; a buffer left empty publishes nothing.
                buf = self.buffer(session)
                entries = buf.entries
                if not entries:
                    log = buf.log
            if log is not None and info.fast:
                states = _log_rows(info, states, flags, inserts, session._deleted, log)
                if not states:
                    continue
            columns = info.columns
            plain = info.plain
            lone = info.lone
            native = info.native
            pk_keys = info.pk_keys
            pk_one = pk_keys[0] if len(pk_keys) == 1 else None
            written = bool(info.written)  # a bool: tested per row without a call
            fk = info.filter_by[0] if lone and info.filter_by else None
            oldable = info.oldable
            deleted, updated = info.actions[DELETE], info.actions[UPDATE]
            for state in states:
                isdelete, listonly = flags[state]
                key = state.key
                if key is None:
                    # A new object, to insert; pending objects deleted are never written,
                    # listonly ones only had relationship bookkeeping.
                    if not (isdelete or listonly):
                        inserts.append(state)
                    continue
                if isdelete or listonly:
                    if listonly:
                        if not isdelete:
                            # listonly: only relationship bookkeeping, no row written. The
                            # exception, a deleted row also marked listonly, is a "row
                            # switch": its key was re-added and SQLAlchemy UPDATEs the row
                            # instead; recording the delete here and the insert below
                            # coalesces to that update.
                            continue
                        if log is not None:  # the insert must find it: no more logging
                            buf.settle()
                            log = None
                    if plain:
                        if entries.setdefault(key, deleted) is not deleted:
                            buf.add(key, deleted)  # seen before in this transaction: coalesce
                    elif lone:
                        # _lone(), inlined: the value the row started the transaction with.
                        value: Any = ABSENT
                        if fk is not None:
                            committed = state.committed_state
                            if fk in committed:  # changed since loaded
                                value = committed[fk]
                                if value is NO_VALUE:  # never loaded: unknown
                                    value = ABSENT
                            else:  # not changed since loaded: the current one
                                if native:
                                    # Not modified, so no _strong_obj (see below).
                                    ref = state.obj
                                    o = ref()
                                    d = state.dict if o is None else o.__dict__
                                else:
                                    d = state.dict
                                try:
                                    value = d[fk]
                                except KeyError:  # never loaded: unknown
                                    value = ABSENT
                        row = Lone(DELETE, info, value)
                        if entries.setdefault(key, row) is not row:
                            self._add(buf, info, state, key, DELETE, None)
                    else:
                        self._add(buf, info, state, key, DELETE, None)
                    continue
                committed = state.committed_state
                if written or state.expired_attributes:
                    expired = state.expired_attributes
                    # The unusual path: values the session did not write itself (a SQL
                    # expression, a default, a server-side value), or attributes expired.
                    if not committed and not expired:
                        continue
                    key = _new_key(info, state, key, committed)
                    if log is not None and key is not state.key:  # it may meet another row's key
                        buf.settle()
                        log = None
                    if before is _UNSET:
                        before = flush_context.attributes.get(self._flush_key)
                    changed, unknown = _written(info, state, committed, expired, before)
                    if not changed and not unknown:
                        continue
                    if not plain:
                        self._add(buf, info, state, key, UPDATE, changed, unknown)
                    elif entries.setdefault(key, updated) is not updated:
                        buf.add(key, updated)
                    continue
                if not committed:
                    continue  # only relationships changed, or nothing: no UPDATE was issued
                if pk_one in committed or (pk_one is None and not committed.keys().isdisjoint(pk_keys)):
                    key = _new_key(info, state, key, committed)  # the primary key itself changed
                    if log is not None and key is not state.key:  # it may meet another row's key
                        buf.settle()
                        log = None
                if native:
                    # A modified state attached to a session holds its instance strongly
                    # (_strong_obj, pinned in test_internals): one attribute read, where
                    # the weak reference is a call.
                    o = state._strong_obj
                    if o is None:
                        # state.obj() would be a method lookup that fails on the slot it
                        # finds (never specialised); reading the slot and calling is cheaper.
                        ref = state.obj
                        o = ref()
                    d = state.dict if o is None else o.__dict__
                else:
                    d = state.dict
                if plain:
                    # _changed(committed, d, columns, None), inlined.
                    for k in committed:  # not .items(): one allocation less
                        if k not in columns:
                            continue
                        old = committed[k]
                        if old is not NO_VALUE:
                            try:
                                # d[k], not d.get(k): no method call. Not in d (KeyError)
                                # or == failing: written, as in _changed.
                                new = d[k]
                                if new is old or new == old:
                                    continue
                            except Exception:  # noqa: BLE001, S112 - see _changed
                                pass
                        break  # a column changed
                    else:
                        continue  # nothing did: no UPDATE was issued
                    if entries.setdefault(key, updated) is not updated:
                        buf.add(key, updated)
                    continue
                if lone:
                    # _changed() and _lone(), inlined and fused into one pass over the
                    # changed attributes: the old value is the one in committed_state.
                    found = False
                    old_key: str | None = None
                    old_value: Any = None
                    for k in committed:
                        if k not in columns:
                            continue
                        old = committed[k]
                        if old is not NO_VALUE:
                            try:
                                new = d[k]  # see above
                                if new is old or new == old:
                                    continue
                            except Exception:  # noqa: BLE001, S112 - see _changed
                                pass
                            if k in oldable:
                                if old_key is not None:
                                    break  # a second old value: a Row, below
                                old_key = k
                                old_value = copy.deepcopy(old) if type(old) in _MUTABLE else old  # see _snapshot
                        found = True
                    else:
                        if not found:
                            continue  # nothing changed: no UPDATE was issued
                        if fk is None:
                            row = Lone(UPDATE, info, ABSENT, ABSENT, old_key, old_value)
                        else:
                            try:
                                after = d[fk]
                            except KeyError:  # not loaded
                                after = ABSENT
                            if fk in committed:
                                before_value = committed[fk]
                                if before_value is NO_VALUE:
                                    before_value = ABSENT
                            else:  # unchanged
                                before_value = after
                            row = Lone(UPDATE, info, before_value, after, old_key, old_value)
                        if entries.setdefault(key, row) is row:
                            continue
                # Several old values, or the row seen before in this transaction: dicts.
                # One list for the whole flush (_add copies what it keeps): a list per row
                # would bring the garbage collector's passes closer.
                changes.clear()
                if _changed(committed, d, columns, changes):
                    if lone and key not in entries:
                        entries[key] = _lone(info, d, committed, UPDATE, changes)
                    else:
                        self._add(buf, info, state, key, UPDATE, changes)
        if not inserts:
            return
        if buf is None:
            buf = self.buffer(session)
            entries = buf.entries
        # Inserts come last so that a row deleted and re-added in one flush (SQLAlchemy turns
        # that into an UPDATE) coalesces to an update. The flush context is unordered; new
        # objects keep the order they were added to the session in.
        inserts.sort(key=_insert_order)
        last_mapper = None
        model = cast(ModelInfo, None)
        for state in inserts:
            if state.mapper is not last_mapper:
                last_mapper = state.mapper
                # Present and not None: states of opted-out models were never collected.
                model = cast(ModelInfo, self._infos[last_mapper])
                names = model.pk_keys
                single = names[0] if len(names) == 1 else None
                plain = model.plain
                lone = model.lone
                native = model.native
                fk = model.filter_by[0] if lone and model.filter_by else None
                identity_class = model.identity_class
                inserted = model.actions[INSERT]
                if log is not None:
                    if native and (plain or lone):
                        keys: list[Any] = []
                        values: list[Any] = []
                        log.append(Segment(INSERT, model, keys, values))
                    else:  # its rows are entries: the ones logged before them go first
                        buf.settle()
                        log = None
            if native:
                o = state._strong_obj  # see the update path
                if o is None:
                    ref = state.obj
                    o = ref()
                d = state.dict if o is None else o.__dict__
            else:
                d = state.dict
            try:
                pk = (d[single],) if single is not None else tuple([d[k] for k in names])
            except KeyError:
                if log is not None:  # an entry: the rows logged before it go first
                    buf.settle()
                    log = None
                buf.add(SomeRows(), inserted)  # no primary key to tell: "reload"
                continue
            key = (identity_class, pk, state.identity_token)  # identity(), inlined
            if plain:
                if log is not None:
                    keys.append(key)
                elif entries.setdefault(key, inserted) is not inserted:
                    buf.add(key, inserted)
            elif lone:
                after = ABSENT
                if fk is not None:
                    try:
                        after = d[fk]
                    except KeyError:  # not loaded
                        pass
                if log is not None:
                    keys.append(key)
                    values.append(after)
                    continue
                row = Lone(INSERT, model, ABSENT, after)
                if entries.setdefault(key, row) is not row:
                    self._add(buf, model, state, key, INSERT, None)
            else:
                self._add(buf, model, state, key, INSERT, None)

    def _add(
        self,
        buf: Buffer,
        info: ModelInfo,
        state: InstanceState[Any],
        key: tuple[Any, ...],
        action: str,
        changed: list[str] | None,
        unknown: list[str] | None = None,
    ) -> None:
        """Record a row of a model whose payload, filter or old values carry values.

        ``changed`` is the caller's to reuse: nothing here keeps it.
        """
        # A payload describes the row's net action, e.g. insert→update is an insert.
        entries = buf.entries
        prev = entries.get(key)
        net = action
        if prev is not None:
            cls = prev.__class__
            first = cast("Row | Lone", prev).action if cls is Row or cls is Lone else cast("tuple[str, Any]", prev)[0]
            net = coalesce(first, action) or action
        values = None if info.mode == "pk" else self._payload(
            info, state, net, None if net == INSERT else changed, unknown
        )
        if not info.extras:
            buf.add(key, (action, info, values))
            return
        d = state.dict
        committed = state.committed_state
        filter_by = info.filter_by
        if prev is None and not unknown and len(filter_by) < 2:
            entries[key] = _lone(info, d, committed, action, changed, values)
            return
        before: dict[str, Any] | None = None
        after: dict[str, Any] | None = None
        old = None
        if filter_by:
            if action != DELETE:
                after = {}
                for k in filter_by:
                    if k in d:
                        after[k] = d[k]
                if unknown:
                    for k in unknown:
                        if k in filter_by:
                            after[k] = UNKNOWN_VALUE
                            buf.unknown = True
            if action != INSERT and prev is None:
                # First seen in this transaction (or savepoint): the values it started with.
                # A column the session never loaded, or one the flush expired, is unknown.
                for k in filter_by:
                    if k in committed:
                        break
                else:
                    if after is not None and not buf.unknown:
                        # Most updates keep their filter values: share the dict (never
                        # mutated) rather than allocate another, which brings the garbage
                        # collector's next pass closer.
                        before = after
                if before is None:
                    before = {}
                    for k in filter_by:
                        if k in committed:
                            v = committed[k]
                            if v is not NO_VALUE:
                                before[k] = v
                        elif k in d:
                            before[k] = d[k]
        if changed and info.old and action == UPDATE and net == UPDATE:
            exclude = info.exclude
            old = {}
            for k in changed:
                if k in committed and k not in exclude:
                    v = committed[k]
                    if v is not NO_VALUE:
                        old[k] = copy.deepcopy(v) if type(v) in _MUTABLE else v  # see _snapshot
        if prev is None:
            entries[key] = Row(action, info, values, before, after, old)
        else:
            buf.add(key, Row(action, info, values, before, after, old))

    def _payload(
        self,
        info: ModelInfo,
        state: InstanceState[Any],
        action: str,
        changed: list[str] | None,
        unknown: list[str] | None,
    ) -> dict[str, Any] | None:
        if info.mode == "function":
            if unknown and changed is not None:  # None: an insert, every column is new
                changed = changed + unknown
            return _call_payload_function(info, state, action, changed)
        if action == DELETE:
            return None
        d = state.dict
        if info.mode == "row" or changed is None:  # "row", or an insert in "changes" mode
            values = {k: _snapshot(d[k]) for k in info.payload_columns if k in d}
        else:
            exclude = info.exclude
            values = {k: _snapshot(d[k]) for k in changed if k not in exclude and k in d}
        if unknown:
            # Written by the database, value not in the session: name them, never guess.
            names = [k for k in info.payload_columns if k in unknown]
            if names:
                values[UNKNOWN] = names
        return values


def _lone(
    info: ModelInfo,
    d: dict[str, Any],
    committed: dict[str, Any],
    action: str,
    changed: list[str] | None,
    values: dict[str, Any] | None = None,
) -> Lone | Row:
    """The first record of a row of a model with at most one ``filter_by`` column, as a
    :class:`Lone` (a :class:`Row` if it has more than one old value): the usual shape of a
    row-level model's row, held without a dict (see :class:`Lone` for why).

    ``d`` and ``committed`` are the state's ``dict`` and ``committed_state``; ``changed``
    is the caller's to reuse.
    """
    before: Any = ABSENT
    after: Any = ABSENT
    filter_by = info.filter_by
    if filter_by:
        k = filter_by[0]
        if action != DELETE and k in d:
            after = d[k]
        if action != INSERT:
            # The value it started with; a column never loaded is unknown.
            if k in committed:
                v = committed[k]
                if v is not NO_VALUE:
                    before = v
            elif k in d:
                before = d[k]
    old_key: str | None = None
    old_value: Any = None
    old: dict[str, Any] | None = None
    if changed and info.old and action == UPDATE:
        exclude = info.exclude
        for k in changed:
            if k in committed and k not in exclude:
                v = committed[k]
                if v is not NO_VALUE:
                    v = copy.deepcopy(v) if type(v) in _MUTABLE else v  # see _snapshot
                    if old is not None:
                        old[k] = v
                    elif old_key is None:
                        old_key, old_value = k, v
                    else:  # a second old value: a Row after all
                        old = {old_key: old_value, k: v}
    lone = Lone(action, info, before, after, old_key, old_value, values)
    if old is None:
        return lone
    row = lone.unpack()
    row.old = old
    return row


def _log_rows(
    info: ModelInfo,
    states: Iterable[InstanceState[Any]],
    flags: dict[InstanceState[Any], tuple[bool, bool]],
    inserts: list[InstanceState[Any]],
    deleted: dict[InstanceState[Any], Any],
    log: list[Segment],
) -> list[InstanceState[Any]]:
    """Log the updated and deleted rows of a ``fast`` model (:attr:`ModelInfo.fast`) in a
    transaction's first flush, and collect its new objects in ``inserts``.

    :meth:`Recorder._capture`'s usual paths without their tests per row (whether to log,
    which kind of model, how to reach the instance). Returns the states left to the general
    loop: the rows that may share their key with another (a row switch, a changed primary
    key) and the unusual ones (expired attributes, a second old value, no instance held).
    ``deleted`` is ``Session._deleted``, which maps the states ``Session.delete()`` marked
    to their instances until the flush is over: one dict lookup where the weak reference
    is a call.
    """
    rest: list[InstanceState[Any]] = []
    dkeys: list[Any] = []
    ukeys: list[Any] = []
    columns = info.nonkey_columns
    if info.plain:
        pk = info.pk_keys[0]
        for state in states:
            isdelete, listonly = flags[state]
            key = state.key
            if key is None:
                if not (isdelete or listonly):
                    inserts.append(state)
                continue
            if listonly:
                if isdelete:  # a row switch: coalesces with its insert
                    rest.append(state)
                continue
            if isdelete:
                dkeys.append(key)
                continue
            committed = state.committed_state
            if pk in committed or state.expired_attributes:
                rest.append(state)
                continue
            o = state._strong_obj  # see Recorder._capture
            if o is None:
                rest.append(state)
                continue
            d = o.__dict__
            for k in committed:  # _changed(), inlined as in Recorder._capture
                if k not in columns:
                    continue
                old = committed[k]
                if old is not NO_VALUE:
                    try:
                        new = d[k]
                        if new is old or new == old:
                            continue
                    except Exception:  # noqa: BLE001, S112 - see _changed
                        pass
                ukeys.append(key)
                break
        if dkeys:
            log.append(Segment(DELETE, info, dkeys, []))
        if ukeys:
            log.append(Segment(UPDATE, info, ukeys, []))
        return rest
    pk_set = info.pk_set
    fk = info.filter_by[0] if info.filter_by else None
    oldable = info.oldable
    scalar = info.scalar
    dvalues: list[Any] = []
    uvalues: list[Any] = []
    for state in states:
        isdelete, listonly = flags[state]
        key = state.key
        if key is None:
            if not (isdelete or listonly):
                inserts.append(state)
            continue
        if listonly:
            if isdelete:  # a row switch: coalesces with its insert
                rest.append(state)
            continue
        if isdelete:
            # The value the row started the transaction with.
            value: Any = ABSENT
            if fk is not None:
                committed = state.committed_state
                if fk in committed:  # changed since loaded
                    value = committed[fk]
                    if value is NO_VALUE:  # never loaded: unknown
                        value = ABSENT
                else:  # not changed since loaded: the current one
                    try:
                        d = deleted[state].__dict__
                    except KeyError:  # deleted by a cascade, not by Session.delete()
                        o = state.obj()
                        d = state.dict if o is None else o.__dict__
                    try:
                        value = d[fk]
                    except KeyError:  # never loaded: unknown
                        value = ABSENT
            dkeys.append(key)
            dvalues.append(value)
            continue
        if state.expired_attributes:
            rest.append(state)
            continue
        o = state._strong_obj
        if o is None:
            rest.append(state)
            continue
        d = o.__dict__
        committed = state.committed_state
        # _changed() and _lone(), fused as in Recorder._capture.
        found = False
        old_key: str | None = None
        old_value: Any = None
        for k in committed:
            if k not in columns:
                if k in pk_set:
                    break  # the primary key changed: the row's key is another
                continue
            old = committed[k]
            if old is not NO_VALUE:
                try:
                    new = d[k]
                    if new is old or new == old:
                        continue
                except Exception:  # noqa: BLE001, S112 - see _changed
                    pass
                if k in oldable:
                    if old_key is not None:
                        break  # a second old value: a Row
                    old_key = k
                    old_value = old
                    if not scalar:
                        old_value = _snapshot(old)
            found = True
        else:
            if found:
                if fk is None:
                    after = before = ABSENT
                else:
                    try:
                        after = d[fk]
                    except KeyError:  # not loaded
                        after = ABSENT
                    if fk in committed:
                        before = committed[fk]
                        if before is NO_VALUE:
                            before = ABSENT
                    else:  # unchanged
                        before = after
                ukeys.append(key)
                uvalues.append(before)
                uvalues.append(after)
                uvalues.append(old_key)
                uvalues.append(old_value)
            continue  # found or not (no UPDATE was issued)
        rest.append(state)
    if dkeys:
        log.append(Segment(DELETE, info, dkeys, dvalues))
    if ukeys:
        log.append(Segment(UPDATE, info, ukeys, uvalues))
    return rest


def _new_key(info: ModelInfo, state: InstanceState[Any], key: Any, committed: dict[str, Any]) -> Any:
    """The identity key of an updated row: ``key``, or a new one if the flush changed its
    primary key."""
    names = info.pk_keys
    for name in names:
        if name in committed:
            d = state.dict
            pk = tuple([d.get(k, old) for k, old in zip(names, key[1], strict=True)])
            return identity(info, pk, key[2])
    return key


def _changed(
    committed: dict[str, Any], current: dict[str, Any], columns: frozenset[str], out: list[str] | None
) -> bool:
    """Whether any column really changed: the same test the flush uses to write it.

    With ``out`` given, every changed column key is appended to it; without, the first
    change answers (the primary-key mode needs no more).
    """
    found = False
    for key, old in committed.items():
        if key not in columns:
            continue  # a relationship or collection: no column of this row changes
        if old is not NO_VALUE:  # NO_VALUE: set without having been loaded; the flush writes it
            new = current.get(key, NO_VALUE)
            try:
                if new is old or new == old:
                    continue
            except Exception:  # noqa: BLE001 - e.g. arrays, whose == is elementwise
                pass
        if out is None:
            return True
        out.append(key)
        found = True
    return found


def _written(
    info: ModelInfo,
    state: InstanceState[Any],
    committed: dict[str, Any],
    expired: set[str],
    before: dict[InstanceState[Any], tuple[frozenset[str], tuple[str, ...]]] | None,
) -> tuple[list[str], list[str]]:
    """The columns an UPDATE of ``state`` wrote: those whose new value the session holds,
    and those whose new value only the database knows.

    After an UPDATE, SQLAlchemy expires the columns the database computed (a SQL expression
    assigned to an attribute, ``server_onupdate``, ``Computed``), unless ``eager_defaults``
    fetched them: their keys leave ``state.dict`` *and* ``committed_state`` and join
    ``expired_attributes`` (``persistence._postfetch``). Columns filled in by Python-side
    defaults (``onupdate``, the version counter) get their new value in ``state.dict`` and
    leave ``committed_state``. Either way the plain history test misses them. Attributes
    expired *before* the flush look the same afterwards; :meth:`Recorder.before_flush`
    noted those, for the rare states that had any.
    """
    columns = info.columns
    d = state.dict
    changed: list[str] = []
    _changed(committed, d, columns, changed)
    unknown: list[str] = []
    if expired and state.modified:  # not modified: nothing was written, nothing expired
        noted = before.get(state) if before else None
        if noted is None:
            # Nothing was expired before the flush, so the flush expired all that is. (A
            # fully expired object that was not changed before the flush, e.g. one whose
            # foreign key the flush set, has state.expired; the flush wrote no expression.)
            if not state.expired:
                unknown = [k for k in expired if k in columns and k not in d]
        else:
            was_expired, was_changed = noted
            unknown = [k for k in expired if k in columns and k not in d and k not in was_expired]
            for k in was_changed:  # an expression assigned to an already expired attribute
                if k in columns and k not in committed and k not in d and k not in unknown:
                    unknown.append(k)
    if info.written and (changed or unknown):
        key_tables = info.key_tables
        tables: set[Any] = set()
        for k in changed:
            tables.update(key_tables.get(k, ()))
        for k in unknown:
            tables.update(key_tables.get(k, ()))
        for k, written_by in info.written:
            if k in changed or k in unknown:
                continue
            if written_by is None or not written_by.isdisjoint(tables):
                (changed if k in d else unknown).append(k)
    return changed, unknown


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
        return {k: _snapshot(v) for k, v in result.items() if k not in info.exclude_names}
    except Exception as exc:  # noqa: BLE001 - a payload bug must not fail the user's flush
        # Not its message, nor the row: either may hold what the payload leaves out.
        _PAYLOAD_ERRORS.record(exc, f"a {action} of {info.collection} was sent with its primary key only")
        return None
