"""A transaction's changes so far, coalesced per row, and how they become notifications.

See :mod:`._capture` for when buffers are created, folded and published.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Union, cast

from .._notify.notification import Notification
from .options import ModelInfo

INSERT = "insert"
UPDATE = "update"
DELETE = "delete"
#: payload key listing the columns an UPDATE wrote whose new values only the database knows
UNKNOWN = "$unknown"


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
#   SomeRows()               -> (action, ModelInfo)
#   object()                 -> Notification                   notify(session=...)
#
# The identity key is SQLAlchemy's own ``(base class, pk tuple, identity token)``: updated
# and deleted rows already carry it in ``state.key``, so recording them allocates nothing.
Value = Union["tuple[str, ModelInfo]", "tuple[str, ModelInfo, dict[str, Any] | None]", Notification]


class Buffer:
    """What one real transaction (root or savepoint) has changed so far."""

    __slots__ = ("entries", "committed")

    def __init__(self) -> None:
        # Insertion-ordered: the order of first appearance is the publishing order.
        self.entries: dict[Hashable, Value] = {}
        self.committed = False

    def add(self, key: Hashable, value: Value) -> None:
        """Record a row under ``key``, coalescing with what the key already holds."""
        entries = self.entries
        prev = entries.get(key)
        if prev is None:
            entries[key] = value
            return
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
        for key, value in child.entries.items():
            if value.__class__ is tuple:
                self.add(key, value)
            else:
                self.entries[key] = value


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


def to_notifications(buffer: Buffer) -> list[Notification]:
    """Build the notifications of a committed buffer, in order."""
    out: list[Notification] = []
    append = out.append
    for key, value in buffer.entries.items():
        if value.__class__ is not tuple:
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
    return out


def identity(info: ModelInfo, pk: tuple[Any, ...], token: Any = None) -> tuple[Any, ...]:
    """The identity key SQLAlchemy gives the row ``pk`` of ``info``'s model."""
    return (info.identity_class, pk, token)
