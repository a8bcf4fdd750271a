"""Transaction semantics of change capture, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, exc, select, text
from sqlalchemy.orm import Session, sessionmaker

from sqla_notify import Notifier

from .models import AuditLog, Container, Forum, Tag
from .support.recording import Recorder


def test_commit_publishes_one_batch(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Container(id=1, name="a"))
        s.add(Forum(id=10, name="f", container_id=1))
        s.commit()
    assert sink.take() == [
        [("containers", "insert", {"id": 1}), ("forums", "insert", {"id": 10})]
    ]


def test_nothing_before_commit(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Container(id=1, name="a"))
        s.flush()
        assert sink.take() == []
        s.commit()
    assert len(sink.take()) == 1


def test_rollback_publishes_nothing(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Container(id=1, name="a"))
        s.flush()
        s.rollback()
        s.add(Container(id=2, name="b"))
        s.commit()
    assert sink.take() == [[("containers", "insert", {"id": 2})]]


def test_close_without_commit_publishes_nothing(factory: sessionmaker[Session], sink: Recorder) -> None:
    s = factory()
    s.add(Container(id=1, name="a"))
    s.flush()
    s.close()
    assert sink.take() == []
    with factory() as s2:
        assert s2.scalars(select(Container)).all() == []


def test_failed_commit_publishes_nothing(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Container(id=1, name="a"))
        s.commit()
    sink.take()
    with factory() as s:
        s.add(Forum(id=1, name="ok"))
        s.add(Container(id=1, name="duplicate"))  # violates the primary key at flush
        with pytest.raises(exc.IntegrityError):
            s.commit()
        s.rollback()
    assert sink.take() == []


def test_several_flushes_accumulate(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Container(id=1, name="a"))
        s.flush()
        s.add(Container(id=2, name="b"))
        s.flush()
        s.get(Container, 1).name = "a2"  # type: ignore[union-attr]
        s.commit()
    assert sink.take() == [[("containers", "insert", {"id": 1}), ("containers", "insert", {"id": 2})]]


def test_one_batch_per_transaction(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        for i in range(3):
            s.add(Container(id=i, name="x"))
            s.commit()
    assert sink.take() == [[("containers", "insert", {"id": i})] for i in range(3)]


def test_transaction_without_changes_publishes_nothing(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory() as s:
        s.execute(select(Container)).all()
        s.commit()
    assert sink.take() == []


def test_inserts_keep_the_order_they_were_added_in(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    ids = [7, 3, 9, 1, 8, 2]
    with factory() as s:
        for i in ids:
            s.add(Container(id=i, name="x"))
        s.commit()
    assert [d["id"] for _, _, d in sink.take()[0]] == ids  # type: ignore[index]


# -- savepoints ---------------------------------------------------------------------------


def test_rolled_back_savepoint_is_dropped(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Container(id=1, name="outer"))
        sp = s.begin_nested()
        s.add(Container(id=2, name="inner"))
        s.flush()
        sp.rollback()
        s.commit()
    assert sink.take() == [[("containers", "insert", {"id": 1})]]


def test_released_savepoint_joins_the_root(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Container(id=1, name="outer"))
        with s.begin_nested():
            s.add(Container(id=2, name="inner"))
        assert sink.take() == []  # released is not committed
        s.commit()
    assert sink.take() == [[("containers", "insert", {"id": 1}), ("containers", "insert", {"id": 2})]]


def test_released_savepoint_then_root_rollback(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        with s.begin_nested():
            s.add(Container(id=2, name="inner"))
        s.rollback()
    assert sink.take() == []


def test_nested_in_nested(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Container(id=1, name="root"))
        with s.begin_nested():
            s.add(Container(id=2, name="level 1"))
            level2 = s.begin_nested()
            s.add(Container(id=3, name="level 2, rolled back"))
            s.flush()
            level2.rollback()
            with s.begin_nested():
                s.add(Container(id=4, name="level 2, released"))
                with s.begin_nested():
                    s.add(Container(id=5, name="level 3, released"))
        s.commit()
    assert [d["id"] for _, _, d in sink.take()[0]] == [1, 2, 4, 5]  # type: ignore[index]


def test_outer_savepoint_rollback_drops_released_inner(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory() as s:
        s.add(Container(id=1, name="root"))
        outer = s.begin_nested()
        with s.begin_nested():
            s.add(Container(id=2, name="inner"))
        outer.rollback()
        s.commit()
    assert sink.take() == [[("containers", "insert", {"id": 1})]]


def test_savepoint_coalesces_with_enclosing(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Container(id=1, name="a"))
        s.flush()
        with s.begin_nested():
            s.delete(s.get(Container, 1))
        s.add(Container(id=2, name="b"))
        s.commit()
    assert sink.take() == [[("containers", "insert", {"id": 2})]]


# -- net effect per row -------------------------------------------------------------------


@pytest.fixture
def existing(factory: sessionmaker[Session], sink: Recorder) -> sessionmaker[Session]:
    with factory.begin() as s:
        s.add_all([Container(id=1, name="one"), Container(id=2, name="two")])
    sink.take()
    return factory


def test_insert_then_update_is_insert(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        c = Container(id=1, name="a")
        s.add(c)
        s.flush()
        c.name = "b"
        s.commit()
    assert sink.take() == [[("containers", "insert", {"id": 1})]]


def test_insert_then_delete_is_nothing(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        c = Container(id=1, name="a")
        s.add(c)
        s.flush()
        s.delete(c)
        s.commit()
    assert sink.take() == []


def test_update_then_delete_is_delete(existing: sessionmaker[Session], sink: Recorder) -> None:
    with existing() as s:
        c = s.get(Container, 1)
        assert c is not None
        c.name = "changed"
        s.flush()
        s.delete(c)
        s.commit()
    assert sink.take() == [[("containers", "delete", {"id": 1})]]


def test_update_then_update_is_one_update(existing: sessionmaker[Session], sink: Recorder) -> None:
    with existing() as s:
        c = s.get(Container, 1)
        assert c is not None
        c.name = "x"
        s.flush()
        c.name = "y"
        s.commit()
    assert sink.take() == [[("containers", "update", {"id": 1})]]


def test_delete_then_reinsert_is_update(existing: sessionmaker[Session], sink: Recorder) -> None:
    with existing() as s:
        s.delete(s.get(Container, 1))
        s.flush()
        s.add(Container(id=1, name="again"))
        s.commit()
    assert sink.take() == [[("containers", "update", {"id": 1})]]


def test_delete_and_reinsert_in_one_flush_is_update(
    existing: sessionmaker[Session], sink: Recorder
) -> None:
    # SQLAlchemy turns this "row switch" into an UPDATE of the same row.
    with existing() as s:
        s.delete(s.get(Container, 1))
        s.add(Container(id=1, name="switched"))
        s.commit()
    assert sink.take() == [[("containers", "update", {"id": 1})]]


def test_unchanged_assignment_is_not_an_update(existing: sessionmaker[Session], sink: Recorder) -> None:
    with existing() as s:
        c = s.get(Container, 1)
        assert c is not None
        c.name = "one"  # the value it already has
        s.commit()
    assert sink.take() == []


def test_update_of_unloaded_attribute(existing: sessionmaker[Session], sink: Recorder) -> None:
    with existing() as s:
        c = s.get(Container, 1)
        assert c is not None
        s.expire(c)
        c.name = "set while expired"
        s.commit()
    assert sink.take() == [[("containers", "update", {"id": 1})]]


def test_primary_key_change_reports_new_key(existing: sessionmaker[Session], sink: Recorder) -> None:
    with existing() as s:
        c = s.get(Container, 2)
        assert c is not None
        c.id = 20
        s.commit()
    assert sink.take() == [[("containers", "update", {"id": 20})]]


def test_composite_primary_key(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Tag(forum_id=1, label="news"))
        s.commit()
        tag = s.get(Tag, (1, "news"))
        assert tag is not None
        tag.weight = 5
        s.commit()
        s.delete(tag)
        s.commit()
    assert sink.take() == [
        [("tags", "insert", {"forum_id": 1, "label": "news"})],
        [("tags", "update", {"forum_id": 1, "label": "news"})],
        [("tags", "delete", {"forum_id": 1, "label": "news"})],
    ]


# -- relationships and cascades -----------------------------------------------------------


def test_cascade_delete_is_captured(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory.begin() as s:
        s.add(Container(id=1, name="c", forums=[Forum(id=1, name="a"), Forum(id=2, name="b")]))
    sink.take()
    with factory.begin() as s:
        s.delete(s.get(Container, 1))
    [batch] = sink.take()
    assert sorted(batch, key=str) == [
        ("containers", "delete", {"id": 1}),
        ("forums", "delete", {"id": 1}),
        ("forums", "delete", {"id": 2}),
    ]


def test_delete_orphan_is_captured(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory.begin() as s:
        s.add(Container(id=1, name="c", forums=[Forum(id=1, name="a"), Forum(id=2, name="b")]))
    sink.take()
    with factory.begin() as s:
        c = s.get(Container, 1)
        assert c is not None
        c.forums.pop(0)
    assert sink.take() == [[("forums", "delete", {"id": 1})]]


def test_relationship_only_change_updates_only_the_child(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as s:
        s.add_all([Container(id=1, name="a"), Container(id=2, name="b"), Forum(id=1, name="f", container_id=1)])
    sink.take()
    with factory.begin() as s:
        forum = s.get(Forum, 1)
        target = s.get(Container, 2)
        assert forum is not None and target is not None
        target.forums.append(forum)  # moves the forum: only its row changes
    assert sink.take() == [[("forums", "update", {"id": 1})]]


def test_opted_out_model_is_silent(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory.begin() as s:
        s.add(AuditLog(id=1, message="hello"))
        s.add(Container(id=1, name="a"))
    assert sink.take() == [[("containers", "insert", {"id": 1})]]


def test_expire_on_commit_data_is_copied_at_flush(factory: sessionmaker[Session], sink: Recorder) -> None:
    # The default expire_on_commit=True expires every instance at commit; capture must not
    # have needed them after the flush.
    with factory() as s:
        objs = [Container(name=f"n{i}") for i in range(3)]
        s.add_all(objs)
        s.commit()
        assert all("name" not in o.__dict__ for o in objs)
    [batch] = sink.take()
    assert [a for _, a, _ in batch] == ["insert"] * 3
    assert len({d["id"] for _, _, d in batch}) == 3  # type: ignore[index]


def test_raw_sql_is_not_captured_without_notify(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.execute(text("INSERT INTO containers (id, name) VALUES (5, 'raw')"))
        s.commit()
    assert sink.take() == []


def test_sessions_of_other_factories_are_not_captured(
    engine: Engine, factory: sessionmaker[Session], sink: Recorder
) -> None:
    with sessionmaker(engine).begin() as s:
        s.add(Container(id=1, name="elsewhere"))
    with Session(engine) as s:
        s.add(Container(id=2, name="plain Session"))
        s.commit()
    assert sink.take() == []


def test_two_notifiers_on_one_factory(engine: Engine, sink: Recorder) -> None:
    other = Recorder()
    sm = sessionmaker(engine)
    Notifier(sink).attach(sm)
    Notifier(other).attach(sm)
    with sm.begin() as s:
        s.add(Container(id=1, name="a"))
    assert sink.take() == other.take() == [[("containers", "insert", {"id": 1})]]
