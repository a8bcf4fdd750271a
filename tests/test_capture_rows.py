"""Filter values and old values: what capture records for models with ``filter_by`` and
``old=True``, across flushes, savepoints, failed commits and bulk statements, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import (
    JSON, Engine, ForeignKey, String, TypeDecorator, create_engine, delete, event, func, insert, select, update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, defer, mapped_column, relationship, sessionmaker

from sqla_notify import Notification, Notifier, NotifyOptions, Sink, encode
from sqla_notify._capture.buffer import Pending
from sqla_notify._capture.options import model_info

from .support.recording import Recorder


class Base(DeclarativeBase):
    pass


class Post(Base):
    """Every new option at once, and a column that must never leave the process."""

    __tablename__ = "rows_posts"
    __sqla_notify__ = NotifyOptions(
        payload="changes", filter_by={"forum_id", "status"}, old=True, exclude={"secret"}
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    forum_id: Mapped[int]
    status: Mapped[str] = mapped_column(String(10), default="open")
    title: Mapped[str] = mapped_column(String(50), default="")
    secret: Mapped[str] = mapped_column(String(50), default="s")


class Topic(Base):
    """Filter values only, with the default primary-key payload."""

    __tablename__ = "rows_topics"
    __sqla_notify__ = NotifyOptions(filter_by={"forum_id"})
    id: Mapped[int] = mapped_column(primary_key=True)
    forum_id: Mapped[int]
    title: Mapped[str] = mapped_column(String(50), default="")


class Draft(Base):
    """Old values only, with the default primary-key payload."""

    __tablename__ = "rows_drafts"
    __sqla_notify__ = NotifyOptions(old=True)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50), default="")


class Reply(Base):
    """One filter column and old values with the primary-key payload: the usual row-level
    model, whose rows capture holds without a dict (``Lone``) until it has to coalesce."""

    __tablename__ = "rows_replies"
    __sqla_notify__ = NotifyOptions(filter_by={"forum_id"}, old=True)
    id: Mapped[int] = mapped_column(primary_key=True)
    forum_id: Mapped[int | None]
    title: Mapped[str] = mapped_column(String(50), default="")
    body: Mapped[str] = mapped_column(String(50), default="")


class Thread(Base):
    """The parent of comments, which it deletes when they leave it."""

    __tablename__ = "rows_threads"
    id: Mapped[int] = mapped_column(primary_key=True)
    comments: Mapped[list[Comment]] = relationship(cascade="all, delete-orphan")


class Comment(Base):
    """A row-level model whose rows a cascade deletes."""

    __tablename__ = "rows_comments"
    __sqla_notify__ = NotifyOptions(filter_by={"thread_id"}, old=True)
    id: Mapped[int] = mapped_column(primary_key=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("rows_threads.id"))
    title: Mapped[str] = mapped_column(String(50), default="")


class Doc(Base):
    """A row-level model with a JSON column: its old values are copies."""

    __tablename__ = "rows_docs"
    __sqla_notify__ = NotifyOptions(filter_by={"forum_id"}, old=True)
    id: Mapped[int] = mapped_column(primary_key=True)
    forum_id: Mapped[int]
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


@pytest.fixture
def rows(engine: Engine, notifier: Notifier) -> Iterator[sessionmaker[Session]]:
    """A sessionmaker attached to ``notifier``, with this module's tables, and one post in
    forum 7 (not announced: the sink is emptied)."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    sm = notifier.attach(sessionmaker(engine))
    with sm.begin() as s:
        s.add(Post(id=1, forum_id=7, title="t"))
    yield sm
    notifier.detach(sm)
    Base.metadata.drop_all(engine)


def taken(sink: Recorder) -> list[Notification]:
    """Every notification published since the last call, in order."""
    out = [n for batch in sink.batches for n in batch]
    sink.batches.clear()
    return out


def post_update(old: dict[str, Any] | None, before: dict[str, Any], after: dict[str, Any], **data: Any) -> Notification:
    return Notification("rows_posts", "update", {"id": 1, **data}, old, before, after)


OPEN7 = {"forum_id": 7, "status": "open"}


@contextmanager
def moved_to_forum_8(rows: sessionmaker[Session], sink: Recorder) -> Iterator[tuple[Session, Post]]:
    """With the sink emptied, a transaction (committed on the way out) in which post 1 has
    moved from forum 7 to 8, flushed: what the next changes must not take for the start."""
    taken(sink)
    with rows.begin() as s:
        post = s.get_one(Post, 1)
        post.forum_id = 8
        s.flush()
        yield s, post


# -- the three actions -----------------------------------------------------------------------


def test_insert_carries_the_filter_values_after_only(rows: sessionmaker[Session], sink: Recorder) -> None:
    taken(sink)
    with rows.begin() as s:
        s.add(Post(id=2, forum_id=8, status="draft"))
    [n] = taken(sink)
    assert n.filter_after == {"forum_id": 8, "status": "draft"}
    assert n.filter_before is None and n.old is None
    assert "secret" not in (n.data or {})


def test_update_carries_values_before_and_after_and_old_without_excluded_columns(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    taken(sink)
    with rows.begin() as s:
        post = s.get_one(Post, 1)
        post.forum_id, post.title, post.secret = 8, "new", "leaked?"
    assert taken(sink) == [
        post_update({"forum_id": 7, "title": "t"}, OPEN7, {"forum_id": 8, "status": "open"}, forum_id=8, title="new")
    ]


def test_delete_carries_the_values_before_from_the_session_without_a_select(
    rows: sessionmaker[Session], sink: Recorder, engine: Engine
) -> None:
    taken(sink)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    with rows.begin() as s:
        post = s.get_one(Post, 1)
        event.listen(engine, "before_cursor_execute", record)
        try:
            post.status = "closed"  # changed, then deleted in the same flush: the value before
            s.delete(post)
            s.flush()
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert statements == ["DELETE"]
    assert taken(sink) == [Notification("rows_posts", "delete", {"id": 1}, None, OPEN7)]


def test_an_update_that_writes_nothing_is_not_announced(rows: sessionmaker[Session], sink: Recorder) -> None:
    taken(sink)
    with rows.begin() as s:
        s.get_one(Post, 1).forum_id = 7
    assert taken(sink) == []


def test_a_model_with_filter_by_only_carries_no_old_and_keeps_its_payload(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with rows.begin() as s:
        s.add(Topic(id=1, forum_id=3))
    with rows.begin() as s:
        s.get_one(Topic, 1).title = "x"
    assert taken(sink)[1:] == [
        Notification("rows_topics", "insert", {"id": 1}, filter_after={"forum_id": 3}),
        Notification("rows_topics", "update", {"id": 1}, None, {"forum_id": 3}, {"forum_id": 3}),
    ]


def test_a_model_with_old_only_carries_old_values_and_its_primary_key(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with rows.begin() as s:
        s.add(Draft(id=1, title="a"))
    with rows.begin() as s:
        s.get_one(Draft, 1).title = "b"
    with rows.begin() as s:
        s.delete(s.get_one(Draft, 1))
    assert taken(sink)[1:] == [
        Notification("rows_drafts", "insert", {"id": 1}),
        Notification("rows_drafts", "update", {"id": 1}, {"title": "a"}),
        Notification("rows_drafts", "delete", {"id": 1}),
    ]


def test_filter_values_are_encoded_and_a_notification_without_them_encodes_as_before(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    [n] = taken(sink)
    assert encode(Notification("rows_posts", "insert", {"id": 1})) == (
        b'{"collection":"rows_posts","action":"insert","data":{"id":1}}'
    )
    assert encode(n) == (
        b'{"collection":"rows_posts","action":"insert","data":{"id":1,"forum_id":7,"status":"open","title":"t"},'
        b'"filter_after":{"forum_id":7,"status":"open"}}'
    )


def reply(action: str, old: dict[str, Any] | None = None, before: dict[str, Any] | None = None,
          after: dict[str, Any] | None = None, id: int = 1) -> Notification:
    return Notification("rows_replies", action, {"id": id}, old, before, after)


def test_a_model_with_one_filter_column_and_old_values_carries_them_for_each_action(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with rows.begin() as s:
        s.add(Reply(id=1, forum_id=3, title="a"))
    with rows.begin() as s:
        s.get_one(Reply, 1).title = "b"  # one old value
    with rows.begin() as s:
        r = s.get_one(Reply, 1)
        r.title, r.body, r.forum_id = "c", "x", 4  # three: a dict after all
    with rows.begin() as s:
        s.get_one(Reply, 1).forum_id = None  # a NULL filter value is a value
    with rows.begin() as s:
        s.delete(s.get_one(Reply, 1))
    assert taken(sink)[1:] == [
        reply("insert", after={"forum_id": 3}),
        reply("update", {"title": "a"}, {"forum_id": 3}, {"forum_id": 3}),
        reply("update", {"title": "b", "body": "", "forum_id": 3}, {"forum_id": 3}, {"forum_id": 4}),
        reply("update", {"forum_id": 4}, {"forum_id": 4}, {"forum_id": None}),
        reply("delete", before={"forum_id": None}),
    ]


def test_one_filter_column_coalesces_to_the_values_from_the_start(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with rows.begin() as s:
        s.add_all([Reply(id=1, forum_id=3, title="a"), Reply(id=2, forum_id=5)])
    taken(sink)
    with rows.begin() as s:
        r = s.get_one(Reply, 1)
        r.forum_id = 4
        s.flush()
        with s.begin_nested():
            r.forum_id, r.title = 5, "b"
        s.delete(s.get_one(Reply, 2))
        s.flush()
        s.add(Reply(id=2, forum_id=6))  # deleted and added again: an update
        s.add(Reply(id=3, forum_id=7))
        s.flush()
        s.get_one(Reply, 3).forum_id = 8  # insert then update: an insert
    assert taken(sink) == [
        reply("update", {"forum_id": 3, "title": "a"}, {"forum_id": 3}, {"forum_id": 5}),
        reply("update", None, {"forum_id": 5}, {"forum_id": 6}, id=2),
        reply("insert", after={"forum_id": 8}, id=3),
    ]
    with rows.begin() as s:
        s.get_one(Reply, 1).title = "c"
        s.flush()
        s.delete(s.get_one(Reply, 1))  # update then delete: a delete, from the start
    assert taken(sink) == [reply("delete", before={"forum_id": 5})]


def test_one_filter_column_never_loaded_has_an_unknown_value(rows: sessionmaker[Session], sink: Recorder) -> None:
    with rows.begin() as s:
        s.add(Reply(id=1, forum_id=3, title="a"))
    taken(sink)
    with rows.begin() as s:
        s.get_one(Reply, 1, options=[defer(Reply.forum_id)]).title = "b"
    assert taken(sink) == [reply("update", {"title": "a"}, {}, {})]


def test_a_deleted_row_whose_filter_column_was_set_unloaded_has_an_unknown_value(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with rows.begin() as s:
        s.add(Reply(id=1, forum_id=3, title="a"))
    taken(sink)
    with rows.begin() as s:
        doomed = s.get_one(Reply, 1, options=[defer(Reply.forum_id)])
        doomed.forum_id = 9  # set, never loaded: the value it started with is not known
        s.delete(doomed)
    assert taken(sink) == [reply("delete", before={})]


# -- across the transaction ------------------------------------------------------------------


def test_a_row_that_changes_its_filter_value_twice_keeps_the_values_from_the_start(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with moved_to_forum_8(rows, sink) as (s, post):
        post.forum_id, post.status = 9, "closed"
        s.flush()
        post.title = "late"
    assert taken(sink) == [
        post_update(
            {"forum_id": 7, "status": "open", "title": "t"}, OPEN7, {"forum_id": 9, "status": "closed"},
            forum_id=9, status="closed", title="late",
        )
    ]


def test_a_released_savepoint_keeps_the_values_from_the_start_of_the_transaction(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with moved_to_forum_8(rows, sink) as (s, post):
        with s.begin_nested():
            post.forum_id = 9
        with s.begin_nested():
            post.title = "x"  # first seen in this savepoint: its own start is not the start
    assert taken(sink) == [
        post_update({"forum_id": 7, "title": "t"}, OPEN7, {"forum_id": 9, "status": "open"}, forum_id=9, title="x")
    ]


def test_a_rolled_back_savepoint_changes_nothing(rows: sessionmaker[Session], sink: Recorder) -> None:
    with moved_to_forum_8(rows, sink) as (s, post):
        nested = s.begin_nested()
        post.forum_id, post.status = 9, "closed"
        s.flush()
        nested.rollback()
    assert taken(sink) == [
        post_update({"forum_id": 7}, OPEN7, {"forum_id": 8, "status": "open"}, forum_id=8)
    ]
    with rows.begin() as s:
        nested = s.begin_nested()
        s.get_one(Post, 1).forum_id = 1
        s.flush()
        nested.rollback()
        s.get_one(Post, 1).title = "after"  # reloaded: the savepoint's value is gone
    assert taken(sink) == [
        post_update({"title": "t"}, {"forum_id": 8, "status": "open"}, {"forum_id": 8, "status": "open"}, title="after")
    ]


def test_a_failed_commit_publishes_nothing_and_the_next_transaction_starts_afresh(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with pytest.raises(IntegrityError), moved_to_forum_8(rows, sink) as (s, _):
        s.add(Post(id=2, forum_id=None))  # NOT NULL: the commit's flush fails
    assert taken(sink) == []
    with rows.begin() as s:
        s.get_one(Post, 1).forum_id = 9
    assert taken(sink) == [post_update({"forum_id": 7}, OPEN7, {"forum_id": 9, "status": "open"}, forum_id=9)]


def test_insert_then_update_is_an_insert_with_the_last_values(rows: sessionmaker[Session], sink: Recorder) -> None:
    taken(sink)
    with rows.begin() as s:
        post = Post(id=2, forum_id=8)
        s.add(post)
        s.flush()
        post.forum_id = 9
    [n] = taken(sink)
    assert (n.action, n.old, n.filter_before, n.filter_after) == ("insert", None, None, {"forum_id": 9, "status": "open"})


def test_update_then_delete_is_a_delete_with_the_values_from_the_start(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with moved_to_forum_8(rows, sink) as (s, post):
        s.delete(post)
    assert taken(sink) == [Notification("rows_posts", "delete", {"id": 1}, None, OPEN7)]


def test_a_filter_column_the_database_computes_has_an_unknown_value(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with moved_to_forum_8(rows, sink) as (s, post):
        post.forum_id = Post.forum_id + 1
        s.flush()
        post.title = "x"
    [n] = taken(sink)
    assert (n.filter_before, n.filter_after) == (OPEN7, {"status": "open"})  # absent: unknown
    assert n.old == {"forum_id": 7, "title": "t"}
    with rows() as s:
        assert s.get_one(Post, 1).forum_id == 9


# -- bulk statements -------------------------------------------------------------------------


def test_bulk_update_with_returning_knows_the_values_after_only(rows: sessionmaker[Session], sink: Recorder) -> None:
    with rows.begin() as s:
        s.add(Post(id=2, forum_id=7, status="closed"))
    taken(sink)
    with rows.begin() as s:
        s.execute(update(Post).where(Post.forum_id == 7).values(forum_id=8))
    with rows.begin() as s:
        s.execute(update(Post).where(Post.id == 2).values(forum_id=Post.forum_id + 1, title="b"))
    got = taken(sink)
    got[:2] = sorted(got[:2], key=lambda n: n.data["id"] if n.data else 0)  # one statement: any order
    assert [(n.data, n.old, n.filter_before, n.filter_after) for n in got] == [
        ({"id": 1}, None, None, {"forum_id": 8, "status": "open"}),
        ({"id": 2}, None, None, {"forum_id": 8, "status": "closed"}),
        ({"id": 2}, None, None, {"forum_id": 9, "status": "closed"}),
    ]


def test_bulk_delete_with_returning_knows_the_values_before(rows: sessionmaker[Session], sink: Recorder) -> None:
    taken(sink)
    with rows.begin() as s:
        s.execute(delete(Post).where(Post.forum_id == 7))
    assert taken(sink) == [Notification("rows_posts", "delete", {"id": 1}, None, OPEN7)]


def test_bulk_statements_by_key_know_what_their_parameters_set(rows: sessionmaker[Session], sink: Recorder) -> None:
    taken(sink)
    with rows.begin() as s:
        s.execute(insert(Post), [{"id": 2, "forum_id": 3}, {"id": 3, "forum_id": 4, "status": "x"}])
    with rows.begin() as s:
        s.execute(update(Post), [{"id": 1, "status": "closed"}])
    assert taken(sink) == [
        Notification("rows_posts", "insert", {"id": 2}, filter_after={"forum_id": 3}),  # status: a default
        Notification("rows_posts", "insert", {"id": 3}, filter_after={"forum_id": 4, "status": "x"}),
        Notification("rows_posts", "update", {"id": 1}, filter_after={"status": "closed"}),
    ]


def test_bulk_update_after_a_flush_keeps_the_start_and_drops_the_stale_payload(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    taken(sink)
    with rows.begin() as s:
        s.get_one(Post, 1).title = "x"
        s.flush()
        s.execute(update(Post).where(Post.id == 1).values(forum_id=8))
    assert taken(sink) == [
        Notification("rows_posts", "update", {"id": 1}, {"title": "t"}, OPEN7, {"forum_id": 8, "status": "open"})
    ]


def test_bulk_statements_without_returning_carry_no_filter_values(
    tmp_path: Any, notifier: Notifier, sink: Recorder
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    # An SQLite before 3.35 (or a database without UPDATE/DELETE ... RETURNING) says so here.
    engine.dialect.update_returning = engine.dialect.delete_returning = False
    Base.metadata.create_all(engine)
    rows = notifier.attach(sessionmaker(engine))
    with rows.begin() as s:
        s.add(Post(id=1, forum_id=7))
    taken(sink)
    with rows.begin() as s:
        s.execute(update(Post).where(Post.forum_id == 7).values(status="closed"))
    with rows.begin() as s:
        s.execute(delete(Post).where(Post.forum_id == 7))
    assert taken(sink) == [Notification("rows_posts", "update"), Notification("rows_posts", "delete")]
    engine.dispose()


# -- a transaction's first flush (its rows are logged, not coalesced) --------------------------


def test_a_row_switch_in_a_first_flush_is_an_update_from_the_deleted_row_to_the_new_one(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with rows.begin() as s:
        s.add_all([Reply(id=1, forum_id=3), Reply(id=2, forum_id=4), Reply(id=3, forum_id=5)])
    taken(sink)
    with rows.begin() as s:
        s.delete(s.get_one(Reply, 1))
        s.add(Reply(id=1, forum_id=6))  # the same key, in the same flush: SQLAlchemy UPDATEs it
        s.get_one(Reply, 2).title = "b"
        s.delete(s.get_one(Reply, 3))
    assert sorted(taken(sink), key=lambda n: n.data["id"]) == [  # type: ignore[index]
        reply("update", None, {"forum_id": 3}, {"forum_id": 6}),
        reply("update", {"title": ""}, {"forum_id": 4}, {"forum_id": 4}, id=2),
        reply("delete", before={"forum_id": 5}, id=3),
    ]


def test_a_primary_key_changed_in_a_first_flush_is_announced_under_the_new_key(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with rows.begin() as s:
        s.add_all([Reply(id=1, forum_id=3), Reply(id=2, forum_id=4)])
    taken(sink)
    with rows.begin() as s:
        s.get_one(Reply, 1).id = 5
        s.get_one(Reply, 2).forum_id = 8
        s.add(Reply(id=1, forum_id=7))  # the key the first row left
    assert sorted(taken(sink), key=lambda n: (n.data["id"], n.action)) == [  # type: ignore[index]
        reply("insert", after={"forum_id": 7}),
        reply("update", {"forum_id": 4}, {"forum_id": 4}, {"forum_id": 8}, id=2),
        reply("update", {"id": 1}, {"forum_id": 3}, {"forum_id": 3}, id=5),
    ]


def test_a_notification_joined_after_a_flush_follows_its_rows(
    rows: sessionmaker[Session], sink: Recorder, notifier: Notifier
) -> None:
    taken(sink)
    with rows.begin() as s:
        s.add_all([Reply(id=1, forum_id=3), Reply(id=2, forum_id=4)])
        s.flush()
        notifier.notify("rows_replies", "reload", session=s)
        s.get_one(Reply, 1).title = "b"  # coalesces with the logged insert
    assert taken(sink) == [
        reply("insert", after={"forum_id": 3}),
        reply("insert", after={"forum_id": 4}, id=2),
        Notification("rows_replies", "reload"),
    ]


def test_rows_deleted_by_a_cascade_carry_their_filter_values(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with rows.begin() as s:
        s.add_all([Thread(id=1, comments=[Comment(id=1), Comment(id=2)]), Thread(id=2, comments=[Comment(id=3)])])
    taken(sink)
    with rows.begin() as s:
        thread = s.get_one(Thread, 1)
        thread.comments.pop(0)  # an orphan: deleted by the flush, not by Session.delete()
        s.delete(s.get_one(Thread, 2))  # its comment: by Session.delete()'s cascade
    comments = [n for n in taken(sink) if n.collection == "rows_comments"]
    assert sorted(comments, key=lambda n: n.data["id"]) == [  # type: ignore[index]
        Notification("rows_comments", "delete", {"id": 1}, filter_before={"thread_id": 1}),
        Notification("rows_comments", "delete", {"id": 3}, filter_before={"thread_id": 2}),
    ]


class _Deferring(Sink):
    """Takes batches unbuilt, as the hub does."""

    _deferred = True

    def __init__(self) -> None:
        self.pending: list[Pending] = []

    def publish(self, notifications: list[Notification]) -> None:
        raise AssertionError("captured batches are published unbuilt")

    def _publish_pending(self, batch: Pending) -> None:
        self.pending.append(batch)


def test_old_values_of_a_json_column_are_copies_made_at_the_flush(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    sink = _Deferring()
    sm = Notifier(sink).attach(sessionmaker(engine))
    try:
        with sm.begin() as s:
            s.add(Doc(id=1, forum_id=3, data={"tags": ["a"]}))
        with sm.begin() as s:
            doc = s.get_one(Doc, 1)
            previous = doc.data
            doc.data = {"tags": ["b"]}
        previous["tags"].append("changed after the commit")  # before the batch is built
        assert [len(batch) for batch in sink.pending] == [1, 1]
        assert sink.pending[1].notifications() == [
            Notification("rows_docs", "update", {"id": 1}, {"data": {"tags": ["a"]}}, {"forum_id": 3}, {"forum_id": 3})
        ]
    finally:
        Base.metadata.drop_all(engine)


class _Wrapped(TypeDecorator[str]):
    impl = String
    cache_ok = True


class _Typed(DeclarativeBase):
    pass


class Scalars(_Typed):
    __tablename__ = "rows_scalars"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(10))


class Wrapped(_Typed):
    __tablename__ = "rows_wrapped"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(_Wrapped(10))


def test_only_models_whose_columns_all_load_immutable_values_skip_the_copy_of_old_values() -> None:
    # ModelInfo.scalar: a type is trusted by its exact class; a TypeDecorator may load anything.
    infos = [model_info(m.__mapper__) for m in (Scalars, Wrapped, Doc, Reply)]
    assert [info.scalar for info in infos if info is not None] == [True, False, False, True]


# -- checked options ----------------------------------------------------------------------------


def test_an_excluded_column_cannot_be_filtered_on() -> None:
    with pytest.raises(ValueError, match=r"filter_by expected columns that are not excluded, got a"):
        NotifyOptions(filter_by={"a", "b"}, exclude={"a"})
    with pytest.raises(TypeError, match=r"filter_by expected a collection of attribute names, got 'ab'"):
        NotifyOptions(filter_by="ab")
    with pytest.raises(TypeError, match=r"old expected a bool, got str: 'yes'"):
        NotifyOptions(old="yes")  # type: ignore[arg-type]


class _Bad(DeclarativeBase):
    pass


class Misnamed(_Bad):
    __tablename__ = "rows_misnamed"
    __sqla_notify__ = NotifyOptions(filter_by={"forum"})
    id: Mapped[int] = mapped_column(primary_key=True)
    forum_id: Mapped[int]


class HiddenByColumnName(_Bad):
    __tablename__ = "rows_hidden"
    __sqla_notify__ = NotifyOptions(filter_by={"owner"}, exclude={"owner_col"})
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[int] = mapped_column("owner_col")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Misnamed, r"Misnamed.__sqla_notify__: filter_by expected mapped column attributes of Misnamed "
                   r"\(one of forum_id, id\), got 'forum'"),
        (HiddenByColumnName, r"HiddenByColumnName.__sqla_notify__: filter_by expected columns that are not "
                             r"excluded, got 'owner'"),
    ],
)
def test_filter_by_that_does_not_fit_the_model_fails_its_first_flush(
    model: type[_Bad], message: str, tmp_path: Any, notifier: Notifier, sink: Recorder
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'bad.db'}")
    _Bad.metadata.create_all(engine)
    sessions = notifier.attach(sessionmaker(engine))
    for _ in range(2):  # not cached as valid: every flush says so until it is fixed
        with pytest.raises(ValueError, match=message), sessions.begin() as s:
            s.add(model(id=1, **({"forum_id": 1} if model is Misnamed else {"owner": 1})))
    with pytest.raises(ValueError, match=message), sessions.begin() as s:
        s.execute(delete(model))  # a bulk statement resolves the options too
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(model)) == 0
    assert sink.batches == []
    engine.dispose()
