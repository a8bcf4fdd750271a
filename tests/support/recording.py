"""``Recorder``: a sink that keeps every batch it gets, for tests to compare."""

from __future__ import annotations

import threading
from typing import Any

from sqla_notify import Notification


class Recorder:
    """A sink that keeps every batch it gets, safe to call from any thread."""

    def __init__(self) -> None:
        self.batches: list[list[Notification]] = []
        self.threads: list[int] = []  # the thread of each call
        self._lock = threading.Lock()

    def __call__(self, batch: list[Notification]) -> None:
        with self._lock:
            self.batches.append(batch)
            self.threads.append(threading.get_ident())

    def take(self) -> list[list[tuple[str, str, dict[str, Any] | None]]]:
        """The batches so far as plain tuples, emptying the record."""
        with self._lock:
            out = [[(n.collection, n.action, n.data) for n in b] for b in self.batches]
            self.batches.clear()
        return out
