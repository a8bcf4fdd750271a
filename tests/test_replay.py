"""The replay window on its own: what it keeps, what it refuses, and what it remembers."""

from __future__ import annotations

from sqla_notify import Entry, Notification
from sqla_notify._hub.replay import MAX_TRACKED_COLLECTIONS, ReplayWindow


def entries(first: int, last: int, collection: str = "forums") -> list[Entry]:
    return [Entry(i, f"b{i}", Notification(collection, "insert", {"id": i}), "{}") for i in range(first, last + 1)]


def seqs(got: list[Entry] | None) -> list[int] | None:
    return None if got is None else [e.seq for e in got]


def test_keeps_the_last_entries_and_replays_what_followed() -> None:
    window = ReplayWindow(3)
    window.add(entries(1, 5))
    assert len(window) == 3
    assert seqs(window.since(2, None)) == [3, 4, 5]
    assert seqs(window.since(5, None)) == []
    assert window.since(1, None) is None  # 2 left the window
    assert window.since(6, None) is None  # from beyond the newest: another instance's id


def test_only_what_left_of_its_own_collections_counts() -> None:
    window = ReplayWindow(2)
    window.add(entries(1, 1, "forums"))
    window.add(entries(2, 5, "posts"))
    assert seqs(window.since(1, frozenset({"forums"}))) == [4, 5]  # it filters them itself
    assert window.since(1, frozenset({"posts"})) is None


def test_too_many_collections_are_no_longer_told_apart() -> None:
    window = ReplayWindow(1)
    for i in range(1, MAX_TRACKED_COLLECTIONS + 3):
        window.add(entries(i, i, f"c{i}"))
    assert window.since(1, frozenset({"quiet"})) is None  # what left may have been about it
    newest = MAX_TRACKED_COLLECTIONS + 2
    assert seqs(window.since(newest - 1, frozenset({"quiet"}))) == [newest]


def test_no_replay_spans_a_cut() -> None:
    window = ReplayWindow(10)
    window.add(entries(1, 3))
    window.cut()
    window.add(entries(4, 5))
    assert window.since(2, None) is None and window.since(3, None) is None
    assert seqs(window.since(4, None)) == [5]


def test_names_resolve_while_their_entries_are_in_the_window() -> None:
    window = ReplayWindow(2)
    assert window.lookup("b1") is None
    for batch in (entries(1, 2), entries(3, 3)):
        window.name(batch)
        window.add(batch)
    assert window.lookup("b1") is None and window.lookup("b2") == 2 and window.lookup("b3") == 3
    assert window._by_id is not None and set(window._by_id) == {"b2", "b3"}  # bounded by the window


def test_entries_that_leave_a_full_window_one_at_a_time_are_remembered_per_collection() -> None:
    window = ReplayWindow(2)
    for batch in (entries(1, 1, "forums"), entries(2, 2, "posts"), entries(3, 3, "posts"), entries(4, 4, "posts")):
        window.add(batch)  # from the third on: one in, the oldest out
    assert window.since(0, frozenset({"forums"})) is None  # 1 left
    assert seqs(window.since(1, frozenset({"forums"}))) == [3, 4]
    assert window.since(1, frozenset({"posts"})) is None  # 2 left
    assert seqs(window.since(2, frozenset({"posts"}))) == [3, 4]
