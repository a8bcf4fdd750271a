"""A transaction's changes so far, coalesced per row, and how they become notifications.

See :mod:`._capture` for when buffers are created, folded and published.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Union, cast

import msgspec
from msgspec.structs import replace

from .._notify.notification import Notification
from .options import ModelInfo

INSERT = "insert"
UPDATE = "update"
DELETE = "delete"
#: payload key listing the columns an UPDATE wrote whose new values only the database knows
UNKNOWN = "$unknown"


class _UnknownValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN_VALUE"


#: a filter value the database computed: stands for "unknown" in a buffer, so that merging
#: drops the earlier value, and is left out of the notification
UNKNOWN_VALUE: Any = _UnknownValue()


class SomeRows:
    """Key of an entry whose rows are unknown ("reload the collection").

    Every instance is a distinct key, so such entries never coalesce with anything.
    """

    __slots__ = ()


# A buffer maps keys to values, built to allocate next to nothing per row: a 10,000-row
# flush makes 10,000 entries, and every allocation brings the garbage collector's next
# pass closer; a full pass over a heap of ORM objects costs more than capture itself.
#
#   identity key             -> (action, ModelInfo)            shared, see ModelInfo.actions
#                            -> (action, ModelInfo, values)    payload modes
#                            -> Row                            models with filter_by or old
#   SomeRows()               -> (action, ModelInfo)
#   object()                 -> Notification                   notify(session=...)
#
# The identity key is SQLAlchemy's own ``(base class, pk tuple, identity token)``: updated
# and deleted rows already carry it in ``state.key``, so recording them allocates nothing.


class Row(msgspec.Struct, gc=False):
    """A row of a model with ``filter_by`` or ``old``: its action, payload values, the
    values it had before the transaction and its ``filter_by`` values after.

    Not a tuple, unlike other entries: a tuple holding the ModelInfo is tracked by the
    garbage collector, and one per row of a large flush made the collector's passes cost as
    much as capture itself; ``gc=False`` structs are never tracked.
    """

    action: str
    info: ModelInfo
    values: Union[dict[str, Any], None]
    #: the ``filter_by`` values at the start of the transaction (``None``: unknown, or an insert)
    before: Union[dict[str, Any], None]
    #: the ``filter_by`` values now (``None``: unknown, or a delete)
    after: Union[dict[str, Any], None]
    #: the previous values of the changed columns (updates of ``old=True`` models)
    old: Union[dict[str, Any], None]


Value = Union["tuple[str, ModelInfo]", "tuple[str, ModelInfo, dict[str, Any] | None]", Row, Notification]


class Buffer:
    """What one real transaction (root or savepoint) has changed so far."""

    __slots__ = ("entries", "committed", "unknown")

    def __init__(self) -> None:
        # Insertion-ordered: the order of first appearance is the publishing order.
        self.entries: dict[Hashable, Value] = {}
        self.committed = False
        #: whether some entry holds an UNKNOWN_VALUE (rare: only then are they filtered out)
        self.unknown = False

    def add(self, key: Hashable, value: Value) -> None:
        """Record a row under ``key``, coalescing with what the key already holds."""
        entries = self.entries
        prev = entries.get(key)
        if prev is None:
            entries[key] = value
            return
        if value.__class__ is Row:
            row = _merge_rows(prev, value)
            if row is None:
                del entries[key]
            else:
                entries[key] = row
            return
        if prev.__class__ is Row:  # another mapper of the same table: keep what both know
            prev = (prev.action, prev.info, prev.values)
        prev = cast("tuple[Any, ...]", prev)  # only rows share keys
        value = cast("tuple[Any, ...]", value)
        first, info = prev[0], value[1]
        net = coalesce(first, value[0])
        if net is None:
            del entries[key]
            return
        # No values now (a bulk statement, whose new values only the database knows) makes
        # earlier values stale: drop them. Otherwise later values win and earlier ones stay
        # (insert→update keeps the inserted columns).
        values = value[2] if len(value) == 3 else None
        if values is not None and net != DELETE and first != DELETE and len(prev) == 3 and prev[2]:
            old = prev[2]
            if UNKNOWN in old or UNKNOWN in values:
                values = _merge_unknown(info, old, values)
            else:
                values = {**old, **values}
        entries[key] = info.actions[net] if values is None else (net, info, values)

    def merge(self, child: Buffer) -> None:
        """Fold a released savepoint's entries into this (enclosing) buffer."""
        self.unknown = self.unknown or child.unknown
        for key, value in child.entries.items():
            if value.__class__ is tuple or value.__class__ is Row:
                self.add(key, value)
            else:
                self.entries[key] = value


def _merge_rows(prev: Any, value: Row) -> Row | None:
    """A row with filter or old values seen again: the earliest ``before`` and ``old`` (the
    values at the start of the transaction) and the latest ``after`` win. ``None``: the
    row's changes cancel out (insert→delete)."""
    if prev.__class__ is Row:
        first, prior = prev.action, prev.values
        before, p_after, p_old = prev.before, prev.after, prev.old
    else:  # recorded by another mapper of the table, without them: unknown
        first, prior = prev[0], prev[2] if len(prev) == 3 else None
        before = p_after = p_old = None
    net = coalesce(first, value.action)
    if net is None:
        return None
    info, values = value.info, value.values
    if values is not None and net != DELETE and first != DELETE and prior:
        if UNKNOWN in prior or UNKNOWN in values:
            values = _merge_unknown(info, prior, values)
        else:
            values = {**prior, **values}
    after = value.after
    if net == DELETE or after is None:
        after = None
    elif p_after is not None and first != DELETE:
        # Columns absent now were not loaded, so not written: their earlier values hold.
        after = {**p_after, **after}
    old = value.old
    if net != UPDATE or first != UPDATE:
        old = None  # an insert has none; delete→insert: the deleted row's values are unknown
    elif p_old is not None:
        old = p_old if old is None else {**old, **p_old}
    return Row(net, info, values, None if net == INSERT else before, after, old)


def _known(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """``values`` without the columns whose values only the database knows."""
    if values is None:
        return None
    return {k: v for k, v in values.items() if v is not UNKNOWN_VALUE}


def _same(values: dict[str, Any] | None) -> dict[str, Any] | None:
    return values


def _merge_unknown(info: ModelInfo, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Later values win; a column the database recomputed later loses its earlier value."""
    recomputed = new.get(UNKNOWN, ())
    merged = {k: v for k, v in old.items() if k not in recomputed}
    merged.update(new)
    names = set(recomputed)
    names.update(k for k in old.get(UNKNOWN, ()) if k not in new)
    if names:
        merged[UNKNOWN] = [k for k in info.payload_columns if k in names]
    else:
        merged.pop(UNKNOWN, None)
    return merged


def coalesce(first: str, then: str) -> str | None:
    """The net action of a row that saw ``first`` and ``then`` in one transaction."""
    if first == INSERT:
        return None if then == DELETE else INSERT
    if first == DELETE and then == INSERT:
        return UPDATE
    return then


def to_notifications(buffer: Buffer, origin: str | None = None) -> list[Notification]:
    """Build the notifications of a committed buffer, in order, each with ``origin`` (the
    client connection that caused them, see :mod:`.origin`) when one is given."""
    out: list[Notification] = []
    append = out.append
    known = _known if buffer.unknown else _same
    for key, value in buffer.entries.items():
        cls = value.__class__
        if cls is Row:
            row = cast(Row, value)
            append(Notification(
                row.info.collection, row.action, _data(row.info, key, row.values), row.old or None,
                known(row.before), known(row.after),
            ))
            continue
        if cls is not tuple:
            append(cast(Notification, value))
            continue
        value = cast("tuple[Any, ...]", value)
        action, info = value[0], value[1]
        if key.__class__ is SomeRows:
            append(Notification(info.collection, action))
            continue
        pk = cast("tuple[Any, ...]", key)[1]
        names = info.pk_keys
        if info.pk_shown is None:
            data = {names[0]: pk[0]} if len(names) == 1 else dict(zip(names, pk, strict=True))
        else:  # excluded key columns never leave: the rest of the payload, or no data
            data = {names[i]: pk[i] for i in info.pk_shown}
        if len(value) == 3 and value[2]:
            data.update(value[2])
        append(Notification(info.collection, action, data or None))
    if origin is not None:
        # Stamped afterwards, so that the usual path (no origin) builds each notification
        # as before; a request's transaction changes few rows.
        return [replace(n, origin=origin) for n in out]
    return out


def _data(info: ModelInfo, key: Any, values: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``data`` of a :class:`Row`: its primary key (bar excluded columns) and values."""
    pk = key[1]
    names = info.pk_keys
    if info.pk_shown is None:
        data = {names[0]: pk[0]} if len(names) == 1 else dict(zip(names, pk, strict=True))
    else:
        data = {names[i]: pk[i] for i in info.pk_shown}
    if values:
        data.update(values)
    return data or None


def identity(info: ModelInfo, pk: tuple[Any, ...], token: Any = None) -> tuple[Any, ...]:
    """The identity key SQLAlchemy gives the row ``pk`` of ``info``'s model."""
    return (info.identity_class, pk, token)
