"""Filtered subscriptions: a client receives the rows that match its ``where`` before or after
each change, marked when they enter or leave it; the hub finds them through its index."""

from __future__ import annotations

import decimal
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from starlette.testclient import WebSocketTestSession

from sqla_notify import Hub, Notification, Notifier, NotifyOptions, Selection, filter_columns
from sqla_notify._hub import index as index_module
from sqla_notify._hub import selection as selection_module
from sqla_notify._hub.selection import value_key

from .support.apps import make_app
from .support.hubs import frames
from .support.services import pg_engine


class Base(DeclarativeBase):
    pass


class Post(Base):
    __tablename__ = "filtered_posts"
    __sqla_notify__ = NotifyOptions(collection="posts", payload="row", filter_by={"forum_id", "status"}, old=True)
    id: Mapped[int] = mapped_column(primary_key=True)
    forum_id: Mapped[int]
    status: Mapped[str] = mapped_column(String(10), default="open")
    title: Mapped[str] = mapped_column(String(100), default="")


class Forum(Base):
    __tablename__ = "filtered_forums"
    __sqla_notify__ = NotifyOptions(collection="forums")
    id: Mapped[int] = mapped_column(primary_key=True)


def U(before: dict[str, Any] | None, after: dict[str, Any] | None, action: str = "update", i: int = 1) -> Notification:
    """A change of post ``i`` with these filter values."""
    return Notification("posts", action, {"id": i}, filter_before=before, filter_after=after)


# -- the rule, one client ---------------------------------------------------------------------

F7 = Selection(filtered={"posts": [{"forum_id": 7}]})


@pytest.mark.parametrize(("n", "expected"), [
    (U(None, {"forum_id": 7}, "insert"), (True, None)),
    (U(None, {"forum_id": 8}, "insert"), (False, None)),
    (U({"forum_id": 7}, None, "delete"), (True, None)),
    (U({"forum_id": 8}, None, "delete"), (False, None)),
    (U({"forum_id": 7}, {"forum_id": 7}), (True, None)),
    (U({"forum_id": 8}, {"forum_id": 7}), (True, "enter")),
    (U({"forum_id": 7}, {"forum_id": 8}), (True, "leave")),
    (U({"forum_id": 8}, {"forum_id": 9}), (False, None)),
    # unknown values (a bulk UPDATE without RETURNING, notify()): possibly matching, no mark
    (U(None, {"forum_id": 8}), (True, None)),
    (U({"forum_id": 7}, None), (True, None)),
    (U({"forum_id": 8}, {}), (True, None)),
    (U(None, None, "delete"), (True, None)),
    (Notification("posts", "archived"), (True, None)),
    (Notification("forums", "insert", {"id": 7}), (False, None)),
])
def test_match_before_or_after_with_enter_and_leave(n: Notification, expected: tuple[bool, str | None]) -> None:
    assert F7.match(n) == expected


def test_keys_are_anded_and_lists_mean_any() -> None:
    s = Selection(filtered={"posts": [{"forum_id": [7, 8], "status": "open"}]})
    assert s.match(U(None, {"forum_id": 8, "status": "open"}, "insert")) == (True, None)
    assert s.match(U(None, {"forum_id": 8, "status": "closed"}, "insert")) == (False, None)
    # closing a post of forum 8 moves it out; reopening moves it back in
    assert s.match(U({"forum_id": 8, "status": "open"}, {"forum_id": 8, "status": "closed"})) == (True, "leave")
    assert s.match(U({"forum_id": 8, "status": "closed"}, {"forum_id": 8, "status": "open"})) == (True, "enter")


def test_values_compare_as_json() -> None:
    assert value_key(True) != value_key(1) and value_key(1) == value_key(1.0)
    u = uuid.uuid4()
    assert value_key(u) == value_key(str(u)) and value_key(decimal.Decimal("1.5")) == value_key("1.5")
    s = Selection(filtered={"posts": [{"flag": True, "ref": str(u)}]})
    assert s.match(U(None, {"flag": True, "ref": u}, "insert")) == (True, None)
    assert s.match(U(None, {"flag": 1, "ref": u}, "insert")) == (False, None)


def test_selections_normalise_combine_and_count() -> None:
    a = Selection({"forums"}, {"posts": [{"status": "open", "forum_id": [8, 7]}]})
    assert a.to_json() == ["forums", {"collection": "posts", "where": {"forum_id": [7, 8], "status": ["open"]}}]
    assert len(a) == 3  # a name, and a filter standing for two subscriptions
    b = Selection(filtered={"posts": [{"forum_id": [7, 8], "status": ["open"]}, {"forum_id": 9}]})
    assert a | b == Selection({"forums"}, {"posts": [{"forum_id": [7, 8], "status": "open"}, {"forum_id": 9}]})
    assert (a | b) - Selection(filtered={"posts": [{"forum_id": 9}]}) == a
    assert (a | b) - Selection({"posts"}) == Selection({"forums"})  # a name removes its filters
    assert Selection({"posts"}, {"posts": [{"forum_id": 1}]}) == Selection({"posts"})  # whole wins
    with pytest.raises(ValueError, match="expected a non-empty where"):
        Selection(filtered={"posts": [{}]})
    with pytest.raises(ValueError, match="expected at least one value for 'forum_id', got"):
        Selection(filtered={"posts": [{"forum_id": []}]})


# -- the hub's index agrees with the rule -----------------------------------------------------

values = st.sampled_from([1, 2, 3])
state = st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b"]), values))
where = st.dictionaries(st.sampled_from(["a", "b"]), st.one_of(values, st.lists(values, min_size=1, max_size=2)), min_size=1)
selection = st.one_of(
    st.none(),
    st.builds(
        Selection,
        st.sets(st.sampled_from(["posts", "forums"]), max_size=1),
        st.dictionaries(st.just("posts"), st.lists(where, min_size=1, max_size=3), max_size=1),
    ),
)
change = st.builds(
    lambda action, before, after, origin: Notification(
        "posts", action, {"id": 1},
        filter_before=None if action == "insert" else before, filter_after=None if action == "delete" else after,
        origin=origin,
    ),
    st.sampled_from(["insert", "update", "delete", "custom"]), state, state, st.sampled_from([None, "x"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(selection, min_size=1, max_size=6), st.lists(change, min_size=1, max_size=3))
def test_the_index_delivers_what_each_selection_matches(selections: list[Selection | None], changes: list[Notification]) -> None:
    hub = Hub()
    subs = [hub.subscribe(s) for s in selections]
    for sub in subs:
        sub.receive_nowait()
    origin = subs[0]
    changes = [Notification(n.collection, n.action, n.data, None, n.filter_before, n.filter_after,
                            origin.id if n.origin else None) for n in changes]
    hub._dispatch(changes[:1])  # one, then a batch: the two delivery paths
    hub._dispatch(changes[1:])
    for sub, sel in zip(subs, selections):
        expected = []
        for n in changes:
            send, move = (True, None) if sel is None else sel.match(n)
            if send and n.origin != sub.id:
                expected.append(move)
        got = [json.loads(f.text).get("move") for f in sub.receive_nowait() if not isinstance(f, str)]
        assert got == expected


def test_a_change_nobody_watches_costs_no_match(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = selection_module.matches

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(index_module, "matches", counting)
    hub = Hub()
    subs = [hub.subscribe(Selection(filtered={"posts": [{"forum_id": i}]})) for i in range(1000)]
    hub._dispatch([U({"forum_id": 5000}, {"forum_id": 5001})])
    assert calls == [] and all(s.pending == 1 for s in subs)  # only the welcome
    hub._dispatch([U({"forum_id": 7}, {"forum_id": 7})])
    assert len(calls) == 2  # one subscriber found, its filters checked before and after
    assert subs[7].pending == 2 and subs[8].pending == 1


def test_an_insert_keys_its_filter_value_once_and_builds_nothing_when_nobody_watches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyed: list[Any] = []
    real_key = selection_module.value_key

    def counting_key(value: Any) -> Any:
        keyed.append(value)
        return real_key(value)

    def no_states(n: Notification) -> Any:
        raise AssertionError("the usual insert needs no states()")

    monkeypatch.setattr(index_module, "value_key", counting_key)
    monkeypatch.setattr(index_module, "states", no_states)
    hub = Hub()
    subs = [hub.subscribe(Selection(filtered={"posts": [{"forum_id": i}]})) for i in range(1000)]
    hub._dispatch([U(None, {"forum_id": 5000}, "insert")])
    assert keyed == [] and all(s.pending == 1 for s in subs)  # only the welcome; an int is its own key
    hub._dispatch([U(None, {"forum_id": 7}, "insert")])
    assert keyed == [] and subs[7].pending == 2 and subs[8].pending == 1
    # A value that is not its own key (a UUID: its string) is keyed once.
    forum = uuid.UUID(int=7)
    watcher = hub.subscribe(Selection(filtered={"posts": [{"forum_id": str(forum)}]}))
    hub._dispatch([U(None, {"forum_id": forum}, "insert")])
    assert keyed == [forum] and watcher.pending == 2


def test_an_insert_to_one_column_filters_tests_no_filter_and_wider_filters_are_still_tested(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = selection_module.matches

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(index_module, "matches", counting)
    hub = Hub()
    subs = [hub.subscribe(Selection(filtered={"posts": [{"forum_id": i}]})) for i in range(10)]
    hub._dispatch([U(None, {"forum_id": 7, "status": "open"}, "insert")])
    assert calls == [] and subs[7].pending == 2 and subs[8].pending == 1  # found under 7: it matches
    wide = hub.subscribe(Selection(filtered={"posts": [{"forum_id": 7, "status": "open"}]}))
    hub._dispatch([U(None, {"forum_id": 7, "status": "closed"}, "insert")])
    assert len(calls) == 2 and subs[7].pending == 3 and wide.pending == 1  # both tested; only one matches
    hub._dispatch([U(None, {"forum_id": 7, "status": "open"}, "insert")])
    assert subs[7].pending == 4 and wide.pending == 2
    hub.update(wide, Selection(filtered={"posts": [{"forum_id": 8}]}))  # no wide filter left
    calls.clear()
    hub._dispatch([U(None, {"forum_id": 8, "status": "closed"}, "insert")])
    assert calls == [] and subs[8].pending == 2 and wide.pending == 4  # (its "subscribed", then the post)


def test_overlapping_subscriptions_receive_each_change_once() -> None:
    hub = Hub()
    sub = hub.subscribe(Selection(filtered={"posts": [{"forum_id": [7, 8]}, {"forum_id": 7}, {"status": "open"}]}))
    sub.receive_nowait()
    hub._dispatch([U({"forum_id": 7, "status": "open"}, {"forum_id": 8, "status": "open"})])
    assert [(m["action"], m.get("move")) for m in frames(sub)] == [("update", None)]  # still within the union
    hub.update(sub, Selection(filtered={"posts": [{"forum_id": 7}, {"forum_id": 7, "status": "open"}]}))
    sub.receive_nowait()
    hub._dispatch([U({"forum_id": 7, "status": "open"}, {"forum_id": 8, "status": "open"})])
    assert [m.get("move") for m in frames(sub)] == ["leave"]


def test_a_move_only_filtered_subscribers_want_reaches_each_with_its_move_past_a_full_queue() -> None:
    # Nobody receives posts whole: the hub's lean filtered path, with moves.
    hub = Hub(queue_size=2)
    old, new, full = (hub.subscribe(Selection(filtered={"posts": [{"forum_id": fs}]})) for fs in (7, 8, [7, 9]))
    for sub in (old, new, full):
        sub.receive_nowait()
    hub._dispatch([U(None, {"forum_id": 9}, "insert", 1)])
    hub._dispatch([U(None, {"forum_id": 9}, "insert", 2)])  # full's queue holds two: full
    hub._dispatch([U({"forum_id": 7}, {"forum_id": 8}, i=3)])
    assert [(m["action"], m.get("move")) for m in frames(old)] == [("update", "leave")]
    assert [(m["action"], m.get("move")) for m in frames(new)] == [("update", "enter")]
    got = frames(full)
    assert [m["type"] for m in got] == ["resync"] and got[0]["cursor"] == hub.cursor


def test_variants_are_encoded_once_and_shared() -> None:
    hub = Hub()
    subs = [hub.subscribe(Selection(filtered={"posts": [{"forum_id": 7}]})) for _ in range(3)]
    for sub in subs:
        sub.receive_nowait()
    hub._dispatch([U({"forum_id": 7}, {"forum_id": 8})])
    sent = [sub.receive_nowait()[0] for sub in subs]
    assert len({id(e) for e in sent}) == 1
    assert not isinstance(sent[0], str) and json.loads(sent[0].text)["move"] == "leave"


# -- through the router, captured from real commits -------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'f.db'}") if request.param == "sqlite" else pg_engine(request.config)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


class World:
    def __init__(self, engine: Engine, **options: Any) -> None:
        self.hub = Hub()
        self.sessions = Notifier(self.hub).attach(sessionmaker(engine))
        options.setdefault("filters", filter_columns(Base))
        self.client = TestClient(make_app(self.hub, collections={"posts", "forums"}, **options))

    def write(self, *changes: tuple[int, int | None, str]) -> None:
        """(id, forum_id, status) rows as one transaction: forum_id None deletes."""
        with self.sessions.begin() as s:
            for i, forum, status in changes:
                post = s.get(Post, i)
                if forum is None:
                    s.delete(post)
                elif post is None:
                    s.add(Post(id=i, forum_id=forum, status=status))
                else:
                    post.forum_id, post.status = forum, status


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    w = World(engine)
    with w.client:
        yield w


def connect(world: World, entries: list[Any]) -> Any:
    ws = world.client.websocket_connect("/notify/ws?collections=" + json.dumps(entries))
    return ws


def read(ws: WebSocketTestSession, count: int) -> list[tuple[str, int, str | None]]:
    out = []
    for _ in range(count):
        m = ws.receive_json()
        assert "id" in m, m
        out.append((m["action"], m["data"]["id"], m.get("move")))
    return out


def test_a_forum_page_sees_its_posts_enter_and_leave(world: World) -> None:
    with connect(world, [{"collection": "posts", "where": {"forum_id": 7, "status": "open"}}]) as ws:
        assert ws.receive_json()["type"] == "welcome"
        world.write((1, 7, "open"), (2, 8, "open"), (3, 7, "closed"))
        world.write((1, 8, "open"))  # moved away
        world.write((2, 7, "open"))  # moved in
        world.write((3, 7, "open"))  # reopened
        world.write((2, None, ""))  # deleted
        world.write((4, 9, "open"))  # elsewhere: nothing
        world.write((3, 7, "open"), (5, 7, "open"))
        assert read(ws, 5) == [
            ("insert", 1, None), ("update", 1, "leave"), ("update", 2, "enter"), ("update", 3, "enter"),
            ("delete", 2, None),
        ]
        assert read(ws, 1) == [("insert", 5, None)]  # 3 was written without a change: no update


def test_subscribe_and_unsubscribe_filters_over_the_socket(world: World) -> None:
    with connect(world, []) as ws:
        assert ws.receive_json()["type"] == "welcome"
        ws.send_json({"type": "subscribe", "collections": ["forums", {"collection": "posts", "where": {"forum_id": [8, 7]}}]})
        assert ws.receive_json() == {
            "type": "subscribed", "collections": ["forums", {"collection": "posts", "where": {"forum_id": [7, 8]}}],
        }
        ws.send_json({"type": "unsubscribe", "collections": [{"collection": "posts", "where": {"forum_id": [7, 8]}}]})
        assert ws.receive_json() == {"type": "subscribed", "collections": ["forums"]}
        ws.send_json({"type": "subscribe", "collections": [{"collection": "posts", "where": {"forum_id": 9}}]})
        assert ws.receive_json()["type"] == "subscribed"
        world.write((1, 7, "open"), (2, 9, "open"))
        assert read(ws, 1) == [("insert", 2, None)]


@pytest.mark.parametrize(("entry", "error"), [
    ({"collection": "posts", "where": {"title": "x"}},
     "collection 'posts' cannot be filtered on ['title']; expected any of ['forum_id', 'status']"),
    ({"collection": "forums", "where": {"id": 1}}, "collection 'forums' cannot be filtered: expected a name alone"),
    ({"collection": "posts", "where": {}}, "invalid where for 'posts': expected a non-empty where, got {}"),
    ({"collection": "posts", "where": {"forum_id": []}}, "invalid where for 'posts': expected at least one value"),
    ({"collection": "posts", "where": {"forum_id": [[7]]}}, "invalid message: Expected `bool | int | float | str | null`, got `array`"),
    ({"collection": "posts", "where": {"forum_id": {"gt": 7}}}, "invalid message: Expected `bool | int | float | str | array | null`, got `object`"),
    ({"collection": "posts", "where": {"forum_id": 7}, "or": 1}, "invalid message: Object contains unknown field `or`"),
    ({"collection": "secrets", "where": {"forum_id": 7}}, "unknown collection(s) ['secrets']; expected any of"),
])
def test_a_bad_where_gets_an_error_and_the_rest_applies(world: World, entry: dict[str, Any], error: str) -> None:
    with connect(world, []) as ws:
        assert ws.receive_json()["type"] == "welcome"
        ws.send_json({"type": "subscribe", "collections": [entry, "forums"]})
        reply = ws.receive_json()
        assert reply["type"] == "error" and reply["message"].startswith(error), reply
        if not reply["message"].startswith("invalid message"):  # the message as a whole was valid
            assert ws.receive_json() == {"type": "subscribed", "collections": ["forums"]}


def test_without_filters_a_where_is_refused(engine: Engine) -> None:
    world = World(engine, filters=None)
    with world.client, connect(world, [{"collection": "posts", "where": {"forum_id": 7}}]) as ws:
        assert ws.receive_json()["type"] == "welcome"
        assert ws.receive_json()["message"].startswith("collection 'posts' cannot be filtered")
        ws.send_json({"type": "subscribe", "collections": ["forums"]})
        assert ws.receive_json() == {"type": "subscribed", "collections": ["forums"]}  # it held nothing


def test_a_malformed_collections_parameter_is_said(world: World) -> None:
    with world.client.websocket_connect("/notify/ws?collections=[{\"collection\": 7}]") as ws:
        assert ws.receive_json()["type"] == "welcome"
        message = ws.receive_json()["message"]
        assert message.startswith("invalid collections=: Expected `str`, got `int` - at `$[0].collection`")


def test_filters_count_against_the_limit(engine: Engine) -> None:
    world = World(engine, max_collections=4)
    with world.client, connect(world, []) as ws:
        assert ws.receive_json()["type"] == "welcome"
        ws.send_json({"type": "subscribe", "collections": [{"collection": "posts", "where": {"forum_id": [1, 2, 3], "status": ["a", "b"]}}]})
        assert ws.receive_json() == {"type": "error", "message": "at most 4 subscriptions per client, got 6"}


def test_replay_filters_the_same_way_and_authorize_applies(engine: Engine) -> None:
    world = World(engine, authorize=lambda principal, n: (n.data or {}).get("id") != 3)
    with world.client:
        with connect(world, []) as ws:
            start = ws.receive_json()["cursor"]
        world.write((1, 7, "open"), (2, 8, "open"), (3, 7, "open"))
        world.write((1, 8, "open"))
        entries = json.dumps([{"collection": "posts", "where": {"forum_id": 7}}])
        with world.client.websocket_connect(f"/notify/ws?last_id={start}&collections={entries}") as ws:
            assert ws.receive_json()["type"] == "welcome"
            assert read(ws, 2) == [("insert", 1, None), ("update", 1, "leave")]  # not 2 (forum 8), not 3 (denied)
            world.write((4, 7, "open"))
            assert read(ws, 1) == [("insert", 4, None)]


def test_since_catches_a_new_subscription_up_from_a_snapshot(world: World) -> None:
    with connect(world, ["forums", {"collection": "posts", "where": {"forum_id": 8}}]) as ws:
        assert ws.receive_json()["type"] == "welcome"
        snapshot = world.hub.cursor  # what a REST response's X-Notify-Cursor would carry
        world.write((1, 7, "open"), (2, 8, "open"))
        world.write((2, 7, "open"))
        assert read(ws, 2) == [("insert", 2, None), ("update", 2, "leave")]
        ws.send_json({"type": "subscribe", "collections": [{"collection": "posts", "where": {"forum_id": 7}}],
                      "since": snapshot})
        # 1's insert, which forum 8 did not receive; 2's changes were sent already
        caught = ws.receive_json()
        assert (caught["action"], caught["data"]["id"], caught["replay"]) == ("insert", 1, True)
        assert ws.receive_json()["type"] == "subscribed"
        world.write((1, 8, "open"))
        assert read(ws, 1) == [("update", 1, None)]  # from 7 to 8: within the union now
        ws.send_json({"type": "subscribe", "collections": ["forums"], "since": "0-0"})
        assert ws.receive_json()["type"] == "resync"


def test_a_connection_does_not_get_its_own_changes_back() -> None:
    hub = Hub()
    mine, other = hub.subscribe(), hub.subscribe(Selection(filtered={"posts": [{"forum_id": 7}]}))
    mine.receive_nowait(), other.receive_nowait()
    ours = U(None, {"forum_id": 7}, "insert")
    hub._dispatch([Notification(ours.collection, ours.action, ours.data, None, None, ours.filter_after, mine.id)])
    hub._dispatch([U(None, {"forum_id": 7}, "insert", 2), Notification("posts", "insert", {"id": 3}, origin=mine.id)])
    assert [m["data"]["id"] for m in frames(mine)] == [2]
    assert [m["data"]["id"] for m in frames(other)] == [1, 2, 3]  # 3: values unknown, may match


def test_notify_can_say_which_rows_it_concerns() -> None:
    sent: list[Notification] = []
    notifier = Notifier(sent.extend)
    notifier.notify("posts", "update", {"id": 1}, filter_before={"forum_id": 7}, filter_after={"forum_id": 8})
    notifier.notify("posts", "update", {"id": 2})  # values unknown: every filtered subscriber
    assert [F7.match(n) for n in sent] == [(True, "leave"), (True, None)]
    assert Selection(filtered={"posts": [{"forum_id": 9}]}).match(sent[0]) == (False, None)
    with pytest.raises(TypeError, match="expected filter_after to be a mapping of column names or None, got 7"):
        notifier.notify("posts", "insert", filter_after=7)  # type: ignore[arg-type]


def test_since_sends_nothing_again_to_a_client_that_had_everything() -> None:
    hub = Hub()
    sub = hub.subscribe(None)
    start = hub.cursor
    hub._dispatch([U(None, {"forum_id": 7}, "insert")])
    sub.receive_nowait()
    hub.update(sub, Selection(filtered={"posts": [{"forum_id": 7}]}), since=start)
    assert [json.loads(f)["type"] for f in sub.receive_nowait() if isinstance(f, str)] == ["subscribed"]
