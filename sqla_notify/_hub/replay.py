"""The replay window: the latest notifications, kept for clients that reconnect."""

from __future__ import annotations

import itertools
from collections import deque

from .subscriber import Entry

__all__ = ("ReplayWindow",)

# Past this many distinct collections among what left the window (e.g. one per user), they
# are no longer told apart: whatever left counts for every collection.
MAX_TRACKED_COLLECTIONS = 10_000


class ReplayWindow:
    """The last ``size`` notifications, in order, and what it takes to replay from them.

    The rules (see the hub's docstring, "Cursors and replay"):

    * :meth:`since` gives a client that resumes after ordering key ``seq`` every entry after
      it, or ``None`` (it must ``resync``) when one that it may have wanted has left the
      window. Only entries of its own collections count, so a quiet client is not told to
      ``resync`` because other collections were busy;
    * a resume from beyond the newest entry, or from before a gap (:meth:`cut`), is ``None``;
    * a broker's names for entries (:meth:`name`) resolve (:meth:`lookup`) while the entries
      are in the window, so that map stays bounded too.

    On the loop only, like the hub.
    """

    __slots__ = ("_by_id", "_entries", "_evicted", "_evicted_any", "_floor", "_latest")

    def __init__(self, size: int) -> None:
        self._entries: deque[Entry] = deque(maxlen=size)
        # The seq of the newest entry that left the window, per collection and overall.
        self._evicted: dict[str, int] = {}
        self._evicted_any = 0
        self._floor = 0  # no replay from before this seq (a gap, or too many collections)
        self._latest = 0  # the seq of the newest entry added
        self._by_id: dict[str, int] | None = None  # a broker's names for what is in the window

    def add(self, entries: list[Entry]) -> None:
        """Keep a numbered batch (ordering keys increasing), remembering what falls out."""
        if not entries:
            return
        self._latest = entries[-1].seq
        window = self._entries
        excess = len(window) + len(entries) - (window.maxlen or 0)
        if excess == 1 and window:  # the usual case once full: one in, the oldest out
            oldest = window[0]
            if self._by_id is None:  # _forget([oldest]), inline: this runs once per notification
                last = self._evicted
                collection = oldest.notification.collection
                if collection in last or len(last) < MAX_TRACKED_COLLECTIONS:
                    last[collection] = self._evicted_any = oldest.seq
                    window.extend(entries)
                    return
            self._forget([oldest])
        elif excess > 0:  # these fall out of the window now: remember what they were about
            evicted = list(itertools.islice(window, min(excess, len(window))))
            evicted += entries[: max(0, excess - len(window))]
            self._forget(evicted)
        window.extend(entries)

    def name(self, entries: list[Entry]) -> None:
        """Let :meth:`lookup` resolve these entries' ids (a broker's names) while they are
        in the window. Call before :meth:`add`."""
        by_id = self._by_id if self._by_id is not None else {}
        self._by_id = by_id
        for entry in entries:
            by_id[entry.id] = entry.seq

    def lookup(self, cursor: str) -> int | None:
        """The ordering key of a named entry still in the window, or ``None``."""
        return None if self._by_id is None else self._by_id.get(cursor)

    def cut(self) -> None:
        """A gap follows the newest entry (a broker lost notifications): no replay may span it."""
        self._floor = self._latest + 1

    def since(self, seq: int, collections: frozenset[str] | None) -> list[Entry] | None:
        """Every entry after ``seq``, in order, for a client subscribed to ``collections``
        (``None``: all); ``None`` when some of what it may have wanted is gone."""
        if seq > self._latest or seq < self._floor:
            return None
        if collections is None:
            if self._evicted_any > seq:
                return None
        elif any(self._evicted.get(c, 0) > seq for c in collections):
            return None
        return [e for e in self._entries if e.seq > seq]

    def __len__(self) -> int:
        return len(self._entries)

    def _forget(self, evicted: list[Entry]) -> None:
        if self._by_id is not None:
            for entry in evicted:
                self._by_id.pop(entry.id, None)
        last = self._evicted
        for entry in evicted:
            last[entry.notification.collection] = entry.seq
        self._evicted_any = evicted[-1].seq
        if len(last) > MAX_TRACKED_COLLECTIONS:
            last.clear()
            self._floor = self._evicted_any
