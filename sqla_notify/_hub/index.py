"""The hub's subscribers, indexed by what they receive.

A notification must cost what it reaches, not what is connected: with 1,000 clients each
watching its own forum, a post in forum 7 looks up ``("posts", "forum_id", 7)`` and tests
the few subscribers found there; a post in a forum nobody watches costs a few dict lookups.

Each filter is registered under one *anchor*: its first column and each of that column's
values. A row can match a filter only if its anchor column's value (before or after the
change) is one of them, so the subscribers found under the row's values are the only
candidates; :func:`~.selection.matches` then checks their filters whole. A row whose anchor
value is unknown (absent from its filter values) makes every filter on that anchor a
candidate, and a row with no filter values at all every filtered subscriber of its
collection. The outcome is :meth:`Selection.match`'s, subscriber by subscriber; a test
checks that the two agree.

On the loop only, like the hub.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._notify.notification import Notification
from .selection import Filter, Selection, decide, matches, states, value_key
from .subscriber import Subscriber

__all__ = ("Index",)


class Index:
    """Who receives what: everything, whole collections, filters by anchor."""

    __slots__ = ("_anchored", "_anchors", "_wide", "everything", "filtered", "whole")

    def __init__(self) -> None:
        # Dicts used as ordered sets: a fan-out walks the clients in the order they
        # connected, which is about the order their objects lie in memory; a set's order is
        # random, and at 10,000 connections each client's objects are then a cache miss.
        #: subscribers of every collection (``Selection`` ``None``), in connection order
        self.everything: dict[Subscriber, None] = {}
        #: collection -> subscribers receiving it whole, in connection order
        self.whole: dict[str, dict[Subscriber, None]] = {}
        #: collection -> subscriber -> its filters on that collection
        self.filtered: dict[str, dict[Subscriber, frozenset[Filter]]] = {}
        # collection -> anchor column -> value key -> subscriber -> how many of its filters
        self._anchors: dict[str, dict[str, dict[Any, dict[Subscriber, int]]]] = {}
        # collection -> anchor column -> subscribers with a filter anchored there
        self._anchored: dict[str, dict[str, dict[Subscriber, int]]] = {}
        # collection -> how many of its filters test more than one column (0: whoever is
        # found under a row's anchor value matches, with no test of the filter)
        self._wide: dict[str, int] = {}

    def add(self, sub: Subscriber, selection: Selection | None) -> None:
        """Index ``sub`` under ``selection``; call :meth:`remove` with the same first."""
        if selection is None:
            self.everything[sub] = None
            return
        for c in selection.whole:
            self.whole.setdefault(c, {})[sub] = None
        for c, fs in selection.filtered.items():
            self.filtered.setdefault(c, {})[sub] = fs
            anchors = self._anchors.setdefault(c, {})
            anchored = self._anchored.setdefault(c, {})
            for f in fs:
                column, keys = f[0]
                by_key = anchors.setdefault(column, {})
                for key in keys:
                    subs = by_key.setdefault(key, {})
                    subs[sub] = subs.get(sub, 0) + 1
                subs = anchored.setdefault(column, {})
                subs[sub] = subs.get(sub, 0) + 1
                if len(f) > 1:
                    self._wide[c] = self._wide.get(c, 0) + 1

    def remove(self, sub: Subscriber, selection: Selection | None) -> None:
        """Undo :meth:`add` (``selection`` as it was added)."""
        if selection is None:
            self.everything.pop(sub, None)
            return
        for c in selection.whole:
            subs = self.whole.get(c)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del self.whole[c]
        for c, fs in selection.filtered.items():
            by_sub = self.filtered.get(c)
            if by_sub is None or by_sub.pop(sub, None) is None:
                continue
            anchors, anchored = self._anchors[c], self._anchored[c]
            for f in fs:
                column, keys = f[0]
                by_key = anchors[column]
                for key in keys:
                    _drop(by_key, key, sub)
                _drop(anchored, column, sub)
                if not by_key:
                    del anchors[column]
                if len(f) > 1:
                    self._wide[c] -= 1
            if not by_sub:
                del self.filtered[c], self._anchors[c], self._anchored[c]
                self._wide.pop(c, None)

    def inserted(self, n: Notification) -> list[Subscriber] | tuple[()] | None:
        """The filtered subscribers of ``n.collection`` that receive ``n`` when it is the
        usual insert: every filter on its collection anchored on one column, whose value
        ``n.filter_after`` carries (an insert is never a ``move``); a snapshot. ``None``
        for any other notification: ask :meth:`tested`.

        A value nobody watches costs a dict lookup; with one-column filters only (a forum
        each), whoever is found under the value matches, untested.
        """
        c = n.collection
        by_sub = self.filtered.get(c)
        if not by_sub:
            return ()
        after_values = n.filter_after
        if n.action != "insert" or after_values is None:
            return None
        anchors = self._anchors[c]
        if len(anchors) != 1:
            return None
        ((anchor, by_key),) = anchors.items()
        if anchor not in after_values:
            return None
        value = after_values[anchor]
        # value_key's own first test, without the call: ints and strings are their key.
        subs = by_key.get(value if value.__class__ is int or value.__class__ is str else value_key(value))
        if not subs:
            return ()
        if not self._wide.get(c):
            return list(subs)
        # Keyed once, for the lookup and the match.
        keyed = {k: value_key(v) for k, v in after_values.items()}
        return [sub for sub in subs if matches(by_sub[sub], keyed) is not False]

    def filtered_targets(self, n: Notification) -> Iterator[tuple[Subscriber, str | None]]:
        """The filtered subscribers of ``n.collection`` that receive ``n``, with its ``move``."""
        inserted = self.inserted(n)
        if inserted is not None:
            for sub in inserted:
                yield sub, None  # an insert: never a move (see decide())
            return
        yield from self.tested(n).items()

    def tested(self, n: Notification) -> dict[Subscriber, str | None]:
        """The receivers of a notification :meth:`inserted` leaves (``None``), each with its
        ``move`` (``None``: none): the candidates' filters tested on the row before and
        after. A snapshot, as :meth:`inserted`'s list is."""
        c = n.collection
        by_sub = self.filtered[c]
        has_before, before, has_after, after = states(n)
        candidates: set[Subscriber] | dict[Subscriber, frozenset[Filter]]
        if (has_before and before is None) or (has_after and after is None):
            candidates = by_sub  # values unknown: every filter may match
        else:
            candidates = set()
            anchors, anchored = self._anchors[c], self._anchored[c]
            for state in (before, after):
                if state is None:
                    continue  # the state that does not exist (insert, delete)
                for column, by_key in anchors.items():
                    if column in state:
                        subs = by_key.get(state[column])
                        if subs:
                            candidates.update(subs)
                    else:
                        candidates.update(anchored[column])
        receivers: dict[Subscriber, str | None] = {}
        for sub in candidates:
            fs = by_sub[sub]
            send, move = decide(
                has_before, matches(fs, before) if has_before else False,
                has_after, matches(fs, after) if has_after else False,
            )
            if send:
                receivers[sub] = move
        return receivers


def _drop(counts: dict[Any, dict[Subscriber, int]], key: Any, sub: Subscriber) -> None:
    subs = counts[key]
    left = subs[sub] - 1
    if left:
        subs[sub] = left
    else:
        del subs[sub]
        if not subs:
            del counts[key]
