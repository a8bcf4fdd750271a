"""Every UPDATE a flush issues is announced, including those whose values the database computes.

One test per flush feature of SQLAlchemy's ORM (SQL expressions assigned to attributes,
``onupdate`` / ``server_onupdate``, ``version_id_col``, ``eager_defaults``, ``Computed`` and
``Identity`` columns, ``post_update``), in each payload mode, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

Note = tuple[str, str, "dict[str, Any] | None"]
from .models import (
    Article, Color, Doubled, EagerStamped, Event, Forum, Node, Stamped, User, Versioned,
)
from .support.recording import Recorder


def _sorted(batches: list[list[Note]]) -> list[Note]:
    """The one batch published, by primary key: a flush updates rows in no set order."""
    [batch] = batches
    return sorted(batch, key=lambda n: n[2]["id"] if n[2] else 0)


def _event(id: int, amount: str) -> Event:
    return Event(
        id=id, at=dt.datetime(2026, 1, 1), amount=Decimal(amount), uid=uuid.UUID(int=id),
        color=Color.RED,
    )


# -- SQL expressions assigned to attributes ------------------------------------------------


def test_expression_update_is_announced_with_the_primary_key(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add(Forum(id=1, name="a"))
    sink.take()
    with factory.begin() as s:
        forum = s.get(Forum, 1)
        assert forum is not None
        forum.name = Forum.name + "!"
    assert sink.take() == [[("forums", "update", {"id": 1})]]
    with factory() as s:
        assert s.get_one(Forum, 1).name == "a!"


def test_expression_column_is_named_in_unknown_of_a_changes_payload(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add_all([User(id=1, name="ann"), User(id=2, name="bob")])
    sink.take()
    with factory.begin() as s:
        ann, bob = s.get_one(User, 1), s.get_one(User, 2)
        ann.name = User.name + "!"
        bob.name = User.name + "?"
        bob.email = "bob@example.com"
    assert _sorted(sink.take()) == [
        ("people", "update", {"id": 1, "$unknown": ["name"]}),
        ("people", "update", {"id": 2, "email": "bob@example.com", "$unknown": ["name"]}),
    ]


def test_excluded_column_set_by_expression_is_announced_but_never_named(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add(User(id=1, name="ann"))
        s.add(_event(1, "1.00"))
    sink.take()
    with factory.begin() as s:
        s.get_one(User, 1).password_hash = User.password_hash + "x"
        s.get_one(Event, 1).secret = Event.secret + "x"
    [batch] = sink.take()
    assert sorted(batch) == [
        ("events", "update", {
            "id": 1, "at": dt.datetime(2026, 1, 1), "amount": Decimal("1.00"),
            "uid": uuid.UUID(int=1), "color": Color.RED, "extra": {},
        }),
        ("people", "update", {"id": 1}),
    ]


def test_row_payload_never_carries_a_value_the_database_recomputed(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add(_event(1, "1.00"))
    sink.take()
    with factory.begin() as s:
        fresh = _event(2, "2.00")
        s.add(fresh)
        s.flush()  # inserted with amount 2.00 ...
        fresh.amount = Event.amount * 10
        s.get_one(Event, 1).amount = Event.amount + 1
    [batch] = sink.take()
    by_id = {data["id"]: (action, data) for _, action, data in batch if data}
    # ... then recomputed by the database: one insert, and 2.00 must not be sent as its amount.
    assert by_id[2][0] == "insert"
    assert "amount" not in by_id[2][1] and by_id[2][1]["$unknown"] == ["amount"]
    assert by_id[1][0] == "update"
    assert "amount" not in by_id[1][1] and by_id[1][1]["$unknown"] == ["amount"]
    assert by_id[1][1]["uid"] == uuid.UUID(int=1)


def test_payload_function_is_told_the_expression_column_changed(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add(Article(id=1, title="news"))
    sink.take()
    with factory.begin() as s:
        s.get_one(Article, 1).title = Article.title + "!"
    # The function may read the attribute: the session loads the computed value.
    assert sink.take() == [[("articles", "update", {
        "id": 1, "title": "NEWS!", "action_seen": "update", "changed": ["title"],
    })]]


def test_expression_on_an_expired_object_names_only_that_column(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory() as s:
        ann, bob = User(id=1, name="ann"), User(id=2, name="bob")
        s.add_all([ann, bob])
        s.commit()  # expire_on_commit: every attribute of both is expired now
        sink.take()
        ann.name = User.name + "!"
        bob.email = "bob@example.com"  # plain value, other columns still expired
        s.commit()
    assert _sorted(sink.take()) == [
        ("people", "update", {"id": 1, "$unknown": ["name"]}),
        ("people", "update", {"id": 2, "email": "bob@example.com"}),
    ]


def test_expression_then_value_in_one_transaction(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add_all([User(id=1, name="ann"), User(id=2, name="bob")])
    sink.take()
    with factory.begin() as s:
        ann, bob = s.get_one(User, 1), s.get_one(User, 2)
        ann.name = User.name + "!"
        bob.name = "robert"
        s.flush()
        ann.name = "anne"  # now known: no longer unknown
        bob.name = User.name + "!"  # now unknown: old value dropped
    assert _sorted(sink.take()) == [
        ("people", "update", {"id": 1, "name": "anne"}),
        ("people", "update", {"id": 2, "$unknown": ["name"]}),
    ]


# -- onupdate, server_onupdate, eager_defaults ---------------------------------------------


def test_onupdate_and_server_onupdate_columns_are_announced(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add(Stamped(id=1, title="a"))
    sink.take()
    with factory.begin() as s:
        s.get_one(Stamped, 1).title = "b"
    [[(collection, action, data)]] = sink.take()
    assert (collection, action) == ("stamped", "update")
    assert data is not None
    # stamp: Python onupdate, value known; revision: written by a trigger, value unknown.
    assert data == {"id": 1, "title": "b", "stamp": data["stamp"], "$unknown": ["revision"]}
    with factory() as s:
        row = s.get_one(Stamped, 1)
        assert (row.stamp, row.revision) == (data["stamp"], 1)


def test_expression_only_update_with_onupdate_columns(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add(Stamped(id=1, title="a"))
    sink.take()
    with factory.begin() as s:
        s.get_one(Stamped, 1).title = Stamped.title + "!"
    [[(_, action, data)]] = sink.take()
    assert action == "update" and data is not None
    assert data == {"id": 1, "stamp": data["stamp"], "$unknown": ["title", "revision"]}


def test_excluded_column_with_expression_is_not_named_among_onupdate_columns(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add(Stamped(id=1, title="a"))
    sink.take()
    with factory.begin() as s:
        s.get_one(Stamped, 1).secret = Stamped.secret + "!"
    [[(_, action, data)]] = sink.take()
    assert action == "update" and data is not None
    assert data == {"id": 1, "stamp": data["stamp"], "$unknown": ["revision"]}


def test_eager_defaults_fetch_server_values_into_the_payload(
    engine: Engine, factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add(EagerStamped(id=1, title="a"))
    sink.take()
    with factory.begin() as s:
        row = s.get_one(EagerStamped, 1)
        row.title = EagerStamped.title + "!"
    [[(_, action, data)]] = sink.take()
    assert action == "update" and data is not None
    # The trigger's column is fetched by RETURNING: a value. The expression is not (SQLAlchemy
    # expires it even so): unknown. SQLite's RETURNING shows the row as it was before AFTER
    # triggers ran, so its revision is the old one.
    revision = 1 if engine.name == "postgresql" else 0
    assert data == {"id": 1, "revision": revision, "$unknown": ["title"]}


# -- version_id_col ------------------------------------------------------------------------


def test_version_counter_is_announced_with_the_change(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add_all([Versioned(id=1, title="a"), Versioned(id=2, title="b")])
    sink.take()
    with factory.begin() as s:
        s.get_one(Versioned, 1).title = "a2"
        s.get_one(Versioned, 2).title = Versioned.title + "!"
    assert _sorted(sink.take()) == [
        ("versioned", "update", {"id": 1, "title": "a2", "version": 2}),
        ("versioned", "update", {"id": 2, "version": 2, "$unknown": ["title"]}),
    ]


# -- Computed and Identity -----------------------------------------------------------------


def test_computed_column_is_unknown_after_update_and_identity_key_is_reported(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add(Doubled(n=1))
    [[(_, action, inserted)]] = sink.take()
    assert action == "insert" and inserted is not None
    key = inserted["id"]
    assert isinstance(key, int)
    with factory.begin() as s:
        row = s.get_one(Doubled, key)
        assert row.double == 2
        row.n = 3
    # "row" mode: double was 2 in the session, but the database recomputed it: not sent.
    assert sink.take() == [[("doubled", "update", {"id": key, "n": 3, "label": "", "$unknown": ["double"]})]]
    with factory.begin() as s:
        s.get_one(Doubled, key).label = Doubled.label + "x"
    assert sink.take() == [[("doubled", "update", {"id": key, "n": 3, "$unknown": ["label", "double"]})]]


# -- post_update ---------------------------------------------------------------------------


def test_post_update_of_new_rows_coalesces_with_their_inserts(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        a, b = Node(id=1, name="a"), Node(id=2, name="b")
        a.next, b.next = b, a  # a cycle: one of the links is written by a second UPDATE
        s.add_all([a, b])
    assert sink.take() == [[
        ("nodes", "insert", {"id": 1, "name": "a", "next_id": 2}),
        ("nodes", "insert", {"id": 2, "name": "b", "next_id": 1}),
    ]]


def test_post_update_of_an_existing_row_is_an_update(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add_all([Node(id=1, name="a"), Node(id=2, name="b")])
    sink.take()
    with factory.begin() as s:
        a, b = s.get_one(Node, 1), s.get_one(Node, 2)
        a.next = b
        b.name = Node.name + "!"
    assert _sorted(sink.take()) == [
        ("nodes", "update", {"id": 1, "next_id": 2}),
        ("nodes", "update", {"id": 2, "$unknown": ["name"]}),
    ]
