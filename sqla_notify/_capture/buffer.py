"""A transaction's changes so far, coalesced per row, and how they become notifications.

See :mod:`._capture` for when buffers are created, folded and published.
"""

from __future__ import annotations

from collections.abc import Hashable
from itertools import repeat
from typing import Any, Callable, Union, cast

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
#                            -> Lone                           filter_by of one column, old of
#                                                              at most one changed column
#                            -> Row                            other models with filter_by or old
#   SomeRows()               -> (action, ModelInfo)
#   object()                 -> Notification                   notify(session=...)
#
# The identity key is SQLAlchemy's own ``(base class, pk tuple, identity token)``: updated
# and deleted rows already carry it in ``state.key``, so recording them allocates nothing.
#
# A transaction's first flush has nothing to coalesce with (one state per row, each key once),
# so most of its rows are not entries yet but *logged*: a Segment per model and action, two
# lists appended to, no dict lookup nor struct per row. They become notifications directly
# (off the committing thread with the hub) or, when something must coalesce with them,
# entries (Buffer.settle). A segment's values, per row, for a Lone model (none for a model
# recorded by key and action):
#
#   insert  the filter value after        delete  the filter value before
#   update  before, after, the old value's key and the old value (ignored if the key is None)


class Segment(msgspec.Struct):
    """Logged rows of one model and action (see above): each row's key and values."""

    action: str
    info: ModelInfo
    keys: list[Any]
    #: the rows' values, flat (see above); empty for a model recorded by key and action
    values: list[Any]


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


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


#: a :class:`Lone` filter value that is not known (its column was never loaded)
ABSENT: Any = _Absent()


class Lone(msgspec.Struct, gc=False):
    """A :class:`Row` whose filter and old values are held without a dict: the first record
    of a row of a model with at most one ``filter_by`` column, whose update changed at most
    one column it has an old value for. The usual shape of a row-level model's row.

    A dict per value made a 10,000-row flush allocate 30,000 of them, each counted towards
    the garbage collector's next pass (it counts allocations of every container, tracked or
    not), and that pass, over a heap of ORM objects, was most of capture's cost. The dicts
    are built with the notifications, off the committing thread when the sink allows it
    (see :class:`Pending`).
    """

    # Fields in the order the flush hook fills them, the rest defaulted: a default costs the
    # constructor less than an argument costs the caller (a bytecode each).
    action: str
    info: ModelInfo
    #: the filter column's value at the start of the transaction (``ABSENT``: unknown);
    #: ignored for inserts and models without ``filter_by``
    before: Any
    #: the filter column's value now (``ABSENT``: unknown); ignored for deletes
    after: Any = ABSENT
    #: the changed column whose previous value ``old_value`` is (``None``: no old values)
    old_key: Union[str, None] = None
    old_value: Any = None
    values: Union[dict[str, Any], None] = None

    def unpack(self) -> Row:
        """The same row as a :class:`Row`, for coalescing with a later record of it."""
        info = self.info
        before = after = None
        if info.filter_by:
            before, after = _lone_filters(self, info.filter_by[0])
        old = None if self.old_key is None else {self.old_key: self.old_value}
        return Row(self.action, info, self.values, before, after, old)


def _lone_filters(row: Lone, key: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``filter_before`` and ``filter_after`` of a :class:`Lone` whose filter column is ``key``."""
    action = row.action
    before = after = None
    if action != INSERT:
        value = row.before
        before = {} if value is ABSENT else {key: value}
    if action != DELETE:
        value = row.after
        after = {} if value is ABSENT else {key: value}
    return before, after


Value = Union["tuple[str, ModelInfo]", "tuple[str, ModelInfo, dict[str, Any] | None]", Row, Lone, Notification]


class Buffer:
    """What one real transaction (root or savepoint) has changed so far: ``entries``, then
    the logged rows (``log``, see :class:`Segment`), whose keys are distinct and none of them
    in ``entries``."""

    __slots__ = ("entries", "committed", "unknown", "log")

    def __init__(self) -> None:
        # Insertion-ordered: the order of first appearance is the publishing order.
        self.entries: dict[Hashable, Value] = {}
        self.committed = False
        #: whether some entry holds an UNKNOWN_VALUE (rare: only then are they filtered out)
        self.unknown = False
        #: rows not yet in ``entries``, which come after them
        self.log: list[Segment] = []

    def __len__(self) -> int:
        # One notification per entry and per logged row.
        n = len(self.entries)
        for segment in self.log:
            n += len(segment.keys)
        return n

    def settle(self) -> None:
        """Make the logged rows entries (after the others, in order), for what coalesces with them."""
        # In C, row by row (zip, map, repeat): a later flush of the transaction pays this for
        # every row the first one logged, so it must cost less than what logging saved.
        update = self.entries.update
        for segment in self.log:
            action, info, keys, values = segment.action, segment.info, segment.keys, segment.values
            if not info.lone:
                update(zip(keys, repeat(info.actions[action])))  # never there: see the class docstring
            elif action == UPDATE:
                update(zip(keys, map(
                    Lone, repeat(action), repeat(info), values[0::4], values[1::4], values[2::4], values[3::4]
                )))
            elif action == DELETE:
                update(zip(keys, map(Lone, repeat(action), repeat(info), values)))
            else:
                update(zip(keys, map(Lone, repeat(action), repeat(info), repeat(ABSENT), values)))
        self.log.clear()

    def clear(self) -> None:
        """Forget every row."""
        self.entries.clear()
        self.log.clear()

    def add(self, key: Hashable, value: Value) -> None:
        """Record a row under ``key``, coalescing with what the key already holds.

        Keys in the log are not looked at: a row that may share one settles it first
        (:meth:`settle`).
        """
        entries = self.entries
        prev = entries.get(key)
        if prev is None:
            entries[key] = value
            return
        if isinstance(prev, Lone):
            prev = prev.unpack()
        if isinstance(value, Lone):
            value = value.unpack()
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
        self.settle()
        child.settle()
        self.unknown = self.unknown or child.unknown
        for key, value in child.entries.items():
            cls = value.__class__
            if cls is tuple or cls is Row or cls is Lone:
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
    client connection that caused them) when one is given."""
    out: list[Notification] = []
    append = out.append
    known = _known if buffer.unknown else _same
    for key, value in buffer.entries.items():
        cls = value.__class__
        if cls is tuple:  # the usual entry first: a row recorded by key and action
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
        elif cls is Lone:
            lone = cast(Lone, value)
            info = lone.info
            action = lone.action
            filter_by = info.filter_by
            before = after = None
            if filter_by:
                # _lone_filters(), inlined: this runs once per row of every large commit.
                name = filter_by[0]
                if action != INSERT:
                    v = lone.before
                    before = {} if v is ABSENT else {name: v}
                if action != DELETE:
                    v = lone.after
                    after = {} if v is ABSENT else {name: v}
            pk = key[1]  # type: ignore[index]
            names = info.pk_keys
            if info.pk_shown is None and len(names) == 1 and not lone.values:
                lone_data: dict[str, Any] | None = {names[0]: pk[0]}
            else:
                lone_data = _data(info, key, lone.values)
            append(Notification(
                info.collection, action, lone_data,
                None if lone.old_key is None else {lone.old_key: lone.old_value}, before, after,
            ))
        elif cls is Row:
            row = cast(Row, value)
            append(Notification(
                row.info.collection, row.action, _data(row.info, key, row.values), row.old or None,
                known(row.before), known(row.after),
            ))
        else:  # notify(..., session=...)
            append(cast(Notification, value))
    for segment in buffer.log:
        _from_segment(segment, append)
    if origin is not None:
        # Stamped afterwards, so that the usual path (no origin) builds each notification
        # as before; a request's transaction changes few rows.
        return [replace(n, origin=origin) for n in out]
    return out


def _from_segment(segment: Segment, append: Callable[[Notification], None]) -> None:
    """The notifications of logged rows, as their entries would make them (the tuple and
    ``Lone`` branches of :func:`to_notifications`)."""
    action, info, values = segment.action, segment.info, segment.values
    collection = info.collection
    names = info.pk_keys
    single = names[0] if info.pk_shown is None and len(names) == 1 else None
    name = info.filter_by[0] if info.filter_by else None
    for i, key in enumerate(segment.keys):
        data = {single: key[1][0]} if single is not None else _data(info, key, None)
        if not info.lone:
            append(Notification(collection, action, data))
            continue
        old = before = after = None
        if action == UPDATE:
            i *= 4
            if values[i + 2] is not None:
                old = {values[i + 2]: values[i + 3]}
            if name is not None:
                value = values[i]
                before = {} if value is ABSENT else {name: value}
                value = values[i + 1]
                after = {} if value is ABSENT else {name: value}
        elif name is not None:
            value = values[i]
            if action == DELETE:
                before = {} if value is ABSENT else {name: value}
            else:
                after = {} if value is ABSENT else {name: value}
        append(Notification(collection, action, data, old, before, after))


class Pending:
    """A committed transaction's changes, not yet built into notifications.

    Handed to sinks that build notifications off the committing thread (see
    ``Sink._publish_pending``): the hub builds them on its event loop, so that a large
    commit does not pay for 10,000 notifications and their dicts, nor for the garbage
    collector's passes they bring closer, before ``commit()`` returns.

    The buffer is handed over whole: the notifier never touches it again, so building may
    run on any thread, once, while the session goes on with new buffers. Everything in it
    was copied at flush time (payload values, filter and old values), nothing refers to a
    live ORM object.
    """

    __slots__ = ("_buffer", "_origin", "_built")

    def __init__(self, buffer: Buffer, origin: str | None = None) -> None:
        self._buffer = buffer
        self._origin = origin
        self._built: list[Notification] | None = None

    def __len__(self) -> int:
        # One notification per entry: every entry becomes exactly one.
        return len(self._buffer)

    def notifications(self) -> list[Notification]:
        """The notifications, in order; built on the first call, the same list after."""
        built = self._built
        if built is None:
            built = self._built = to_notifications(self._buffer, self._origin)
        return built

    def __repr__(self) -> str:
        return f"<Pending: {len(self)} notification(s)>"


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
