"""What clients may subscribe to: the router's published collections and filter columns.

One :class:`Catalog` per router turns the wire's subscription entries (``docs/protocol.md``,
"Subscriptions") into a :class:`~sqla_notify.Selection`, with an error for each entry it
refuses; the valid rest still applies.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import msgspec

from .._hub.protocol import Filtered, SubscriptionEntry, decode_entries, quote_names
from .._hub.selection import Filter, Selection, filter_of

__all__ = ("Catalog", "check_filters")

MAX_NAME = 200  # characters in a collection name


def check_filters(filters: Mapping[str, Collection[str]] | None) -> dict[str, frozenset[str]]:
    """``notify_router(filters=...)`` checked: collection -> the columns clients may filter on.

    :raises TypeError: for anything but a mapping of names to collections of names.
    """
    if filters is None:
        return {}
    if not isinstance(filters, Mapping) or not all(
        isinstance(c, str) and not isinstance(cols, str) and all(isinstance(k, str) for k in cols)
        for c, cols in filters.items()
    ):
        raise TypeError(
            f"notify_router(filters=...) expected a mapping of collection names to column names, "
            f"e.g. filter_columns(Base), got {filters!r}"
        )
    return {c: frozenset(cols) for c, cols in filters.items() if cols}


class Catalog:
    """The collections a router publishes (``known``; ``None``: all) and their filter columns."""

    def __init__(self, known: frozenset[str] | None, filters: dict[str, frozenset[str]], limit: int) -> None:
        self.known = known
        self.filters = filters
        self.limit = limit

    def parse(self, entries: list[SubscriptionEntry]) -> tuple[Selection, list[str]]:
        """The valid entries as a selection, and an error for each kind of refusal."""
        errors: list[str] = []
        bad, unknown, whole = [], [], set()
        filtered: dict[str, set[Filter]] = {}
        for entry in entries:
            name = entry if isinstance(entry, str) else entry.collection
            if not name or len(name) > MAX_NAME:
                bad.append(name)
            elif self.known is not None and name not in self.known:
                unknown.append(name)
            elif isinstance(entry, str) or isinstance(entry.where, msgspec.UnsetType):
                whole.add(name)  # a name, or an object without where: the whole collection
            else:
                f = self._filter(entry, errors)
                if f is not None:
                    filtered.setdefault(name, set()).add(f)
        if bad:
            errors.append(f"collection names must be 1 to {MAX_NAME} characters, got {quote_names(bad)}")
        if unknown:
            expected = "any of " + quote_names(sorted(self.known)) if self.known else "none: no collection is published"
            errors.append(f"unknown collection(s) {quote_names(sorted(set(unknown)))}; expected {expected}")
        return Selection(whole, filtered), errors

    def _filter(self, entry: Filtered, errors: list[str]) -> Filter | None:
        where = entry.where
        assert not isinstance(where, msgspec.UnsetType)  # parse() checked
        allowed = self.filters.get(entry.collection, frozenset())
        if not allowed:
            errors.append(
                f"collection {entry.collection[:40]!r} cannot be filtered: expected a name alone, got a where "
                f"(the model declares NotifyOptions(filter_by=...) and notify_router gets filters=...)"
            )
            return None
        refused = sorted(set(where) - allowed)
        if refused:
            errors.append(
                f"collection {entry.collection[:40]!r} cannot be filtered on {quote_names(refused)}; "
                f"expected any of {quote_names(sorted(allowed))}"
            )
            return None
        try:
            return filter_of(where)
        except ValueError as exc:
            errors.append(f"invalid where for {entry.collection[:40]!r}: {exc}")
            return None

    def initial(self, raw: str | None) -> tuple[Selection | None, list[str]]:
        """The ``collections=`` query parameter: absent, everything published; names separated
        by commas; or a JSON array of entries."""
        if raw is None:
            return Selection.of(self.known), []
        entries: list[SubscriptionEntry]
        if raw.lstrip().startswith("["):
            try:
                entries = decode_entries(raw)
            except ValueError as exc:
                return Selection(), [f"invalid collections=: {str(exc)[:200]}; expected a JSON array of "
                                     f'names and {{"collection": name, "where": {{column: value or [values]}}}}']
        else:
            entries = [n.strip() for n in raw.split(",")] if raw else []
        selection, errors = self.parse(entries)
        if len(selection) > self.limit:
            errors.append(f"at most {self.limit} subscriptions per client, got {len(selection)}")
            selection = Selection()
        return selection, errors
