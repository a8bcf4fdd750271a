"""What one client receives: whole collections and filtered ones, and how a row matches.

A :class:`Selection` is a client's subscription, normalised (the wire protocol's entries:
``docs/protocol.md``, "Subscriptions"); :meth:`Selection.match` is the rule, one client at a
time: replays use it, and the hub's index (:mod:`.index`) must agree with it.

Values are compared as JSON values, whoever made them: the client's ``where`` arrives as
JSON; a notification's filter values are Python values in the process that committed and
JSON values in the others (through a broker). :func:`value_key` maps both to the same key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

import msgspec

from .._json import ENCODER
from .._notify.notification import Notification

__all__ = ("Filter", "Selection", "filter_of", "value_key")

#: one filter: ``((column, values), ...)``, sorted by column; values are :func:`value_key` keys
Filter = tuple[tuple[str, frozenset[Any]], ...]

#: a ``where`` value as decoded from JSON: a scalar or a list of scalars
Scalar = Union[str, int, float, bool, None]

_NEVER = object()  # the key of a value no filter can name (a JSON array or object)
_decode = msgspec.json.decode


class _Bool:
    """The key of ``True``/``False``: Python treats ``True == 1``, JSON does not."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Bool) and other.value is self.value

    def __hash__(self) -> int:
        return hash((_Bool, self.value))

    def __repr__(self) -> str:
        return "true" if self.value else "false"


_TRUE, _FALSE = _Bool(True), _Bool(False)


def value_key(value: Any) -> Any:
    """The key a value compares by: its JSON value (hashable), the same for ``7`` from a
    client and ``7`` from the database, for a ``UUID`` here and its string from a broker."""
    kind = value.__class__
    if kind is int or kind is str or value is None:
        return value
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is float:
        return value  # 7.0 == 7 and hash alike, as in JSON
    decoded = _decode(ENCODER.encode(value))  # UUID, datetime, Decimal, Enum...: as sent
    if isinstance(decoded, (list, dict)):
        return _NEVER
    return value_key(decoded)


def filter_of(where: Mapping[str, Scalar | list[Scalar]]) -> Filter:
    """A ``where`` as a :data:`Filter`: a scalar becomes a one-value list.

    :raises ValueError: for an empty ``where`` or an empty list of values.
    """
    if not where:
        raise ValueError("expected a non-empty where, got {}")
    items = []
    for column, value in sorted(where.items()):
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"expected at least one value for {column!r}, got []")
        items.append((column, frozenset(value_key(v) for v in values)))
    return tuple(items)


def _where_json(f: Filter) -> dict[str, list[Any]]:
    def plain(key: Any) -> Any:
        return key.value if isinstance(key, _Bool) else key

    return {column: sorted((plain(k) for k in keys), key=lambda v: ENCODER.encode(v)) for column, keys in f}


def _state(values: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if values is None else {k: value_key(v) for k, v in values.items()}


def states(n: Notification) -> tuple[bool, dict[str, Any] | None, bool, dict[str, Any] | None]:
    """Which of the row's states exist (before, after) and their keyed filter values
    (``None``: unknown). An insert has no before; a delete no after; any other action
    (``notify()``) is treated as an update whose values are unknown."""
    action = n.action
    if action == "insert":
        return False, None, True, _state(n.filter_after)
    if action == "delete":
        return True, _state(n.filter_before), False, None
    return True, _state(n.filter_before), True, _state(n.filter_after)


def matches(filters: Iterable[Filter], state: dict[str, Any] | None) -> bool | None:
    """Whether a row in ``state`` matches any of ``filters``: ``True``, ``False``, or
    ``None`` when unknown values leave it open."""
    if state is None:
        return None
    result: bool | None = False
    for f in filters:
        this: bool | None = True
        for column, keys in f:
            if column not in state:
                this = None
            elif state[column] not in keys:
                this = False
                break
        if this:
            return True
        if this is None:
            result = None
    return result


def decide(has_before: bool, before: bool | None, has_after: bool, after: bool | None) -> tuple[bool, str | None]:
    """From the match of each state to delivery: whether to send, and the ``move`` mark."""
    if not has_before:
        return after is not False, None
    if not has_after:
        return before is not False, None
    if before is False:
        return after is not False, "enter" if after else None
    if after is False:
        return True, "leave" if before else None
    return True, None


class Selection:
    """What one client receives: collections whole (``whole``) and filtered ones (``filtered``:
    collection -> its filters). Immutable; a collection is never both.

    The router builds them from the wire's entries; to subscribe a client yourself
    (:meth:`Hub.subscribe`), give each filter as a ``where`` mapping:

    >>> s = Selection({"forums"}, {"posts": [{"forum_id": [7, 8], "status": "open"}]})
    >>> s.to_json()
    ['forums', {'collection': 'posts', 'where': {'forum_id': [7, 8], 'status': ['open']}}]

    :param whole: collections received whole.
    :param filtered: collection -> its filters, each a ``where`` mapping (column -> a value
        or a list of values, ANDed across columns) or a :data:`Filter`.
    :raises ValueError: for an empty ``where`` or an empty list of values.
    """

    __slots__ = ("filtered", "names", "whole")

    whole: frozenset[str]
    filtered: Mapping[str, frozenset[Filter]]
    #: every collection named, whole or filtered
    names: frozenset[str]

    def __init__(
        self, whole: Iterable[str] = (), filtered: Mapping[str, Iterable[Filter | Mapping[str, Any]]] | None = None,
    ) -> None:
        whole = frozenset(whole)
        kept = {
            c: frozenset(f if isinstance(f, tuple) else filter_of(f) for f in fs)
            for c, fs in (filtered or {}).items() if c not in whole
        }
        self.whole = whole
        self.filtered = {c: fs for c, fs in kept.items() if fs}
        self.names = whole | self.filtered.keys()

    @classmethod
    def of(cls, collections: Selection | Iterable[str] | None) -> Selection | None:
        """A selection from what :meth:`Hub.subscribe` accepts: ``None`` (everything), a
        selection, or collection names."""
        if collections is None or isinstance(collections, Selection):
            return collections
        return cls(collections)

    def __or__(self, other: Selection) -> Selection:
        filtered = {c: set(fs) for c, fs in self.filtered.items()}
        for c, fs in other.filtered.items():
            filtered.setdefault(c, set()).update(fs)
        return Selection(self.whole | other.whole, filtered)

    def __sub__(self, other: Selection) -> Selection:
        """Without ``other``'s names (whole collections, with their filters) and filters."""
        filtered = {
            c: fs - other.filtered.get(c, frozenset()) for c, fs in self.filtered.items() if c not in other.whole
        }
        return Selection(self.whole - other.whole, filtered)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selection) and (self.whole, self.filtered) == (other.whole, other.filtered)

    def __hash__(self) -> int:
        return hash((self.whole, frozenset(self.filtered.items())))

    def __len__(self) -> int:
        """Its size against ``max_collections``: a name counts 1, a filter the product of
        its value lists' lengths (the subscriptions it stands for)."""
        size = len(self.whole)
        for fs in self.filtered.values():
            for f in fs:
                n = 1
                for _, keys in f:
                    n *= len(keys)
                size += n
        return size

    def match(self, n: Notification) -> tuple[bool, str | None]:
        """Whether ``n`` is for this client, and its ``move`` (see ``docs/protocol.md``)."""
        collection = n.collection
        if collection in self.whole:
            return True, None
        filters = self.filtered.get(collection)
        if filters is None:
            return False, None
        has_before, before, has_after, after = states(n)
        return decide(
            has_before, matches(filters, before) if has_before else False,
            has_after, matches(filters, after) if has_after else False,
        )

    def to_json(self) -> list[str | dict[str, Any]]:
        """The entries, as ``subscribed`` lists them: names, then filters, sorted."""
        out: list[str | dict[str, Any]] = [*sorted(self.whole)]
        for c in sorted(self.filtered):
            wheres = [_where_json(f) for f in self.filtered[c]]
            out.extend({"collection": c, "where": w} for w in sorted(wheres, key=lambda w: ENCODER.encode(w)))
        return out

    def __repr__(self) -> str:
        return f"Selection({self.to_json()!r})"
