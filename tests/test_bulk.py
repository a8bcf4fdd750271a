"""ORM bulk statements through ``session.execute()``, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, exc, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from .models import Container, Forum, Tag
from .support.recording import Recorder


@pytest.fixture
def rows(factory: sessionmaker[Session], sink: Recorder) -> sessionmaker[Session]:
    with factory.begin() as s:
        s.add_all([Container(id=i, name=f"c{i}") for i in range(1, 6)])
    sink.take()
    return factory


def _ids(batch: list[tuple[str, str, dict[str, Any] | None]]) -> set[int]:
    return {d["id"] for _, _, d in batch if d is not None}


@pytest.mark.parametrize("sync", ["auto", "fetch", "evaluate", False])
def test_update_where_reports_each_row(
    rows: sessionmaker[Session], sink: Recorder, sync: Any
) -> None:
    with rows() as s:
        result = s.execute(
            update(Container).where(Container.id > 3).values(name="big"),
            execution_options={"synchronize_session": sync},
        )
        assert result.rowcount == 2  # type: ignore[attr-defined]  # the caller's result is intact
        s.commit()
    [batch] = sink.take()
    assert {a for _, a, _ in batch} == {"update"}
    assert _ids(batch) == {4, 5}


def test_delete_where_reports_each_row(rows: sessionmaker[Session], sink: Recorder) -> None:
    with rows() as s:
        result = s.execute(delete(Container).where(Container.id <= 2))
        assert result.rowcount == 2  # type: ignore[attr-defined]
        s.commit()
    [batch] = sink.take()
    assert {a for _, a, _ in batch} == {"delete"}
    assert _ids(batch) == {1, 2}


def test_statement_matching_nothing_reports_nothing(rows: sessionmaker[Session], sink: Recorder) -> None:
    with rows() as s:
        s.execute(update(Container).where(Container.id > 100).values(name="none"))
        s.commit()
    assert sink.take() == []


def test_bulk_update_by_primary_key(rows: sessionmaker[Session], sink: Recorder) -> None:
    with rows() as s:
        s.execute(update(Container), [{"id": 1, "name": "x"}, {"id": 3, "name": "y"}])
        s.commit()
    assert sink.take() == [[("containers", "update", {"id": 1}), ("containers", "update", {"id": 3})]]


def test_bulk_insert_with_keys(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.execute(insert(Container), [{"id": 8, "name": "a"}, {"id": 9, "name": "b"}])
        s.execute(insert(Tag), [{"forum_id": 1, "label": "x"}])
        s.commit()
    assert sink.take() == [[
        ("containers", "insert", {"id": 8}),
        ("containers", "insert", {"id": 9}),
        ("tags", "insert", {"forum_id": 1, "label": "x"}),
    ]]


def test_bulk_insert_without_keys_reports_the_collection(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory() as s:
        s.execute(insert(Container), [{"name": "a"}, {"name": "b"}])
        s.commit()
    assert sink.take() == [[("containers", "insert", None)]]


def test_statement_with_its_own_returning_is_untouched(
    rows: sessionmaker[Session], sink: Recorder
) -> None:
    with rows() as s:
        returned = s.execute(
            update(Container).where(Container.id == 2).values(name="r").returning(Container.name)
        ).all()
        assert [tuple(r) for r in returned] == [("r",)]
        s.commit()
    assert sink.take() == [[("containers", "update", None)]]


def test_bulk_then_orm_change_coalesces(rows: sessionmaker[Session], sink: Recorder) -> None:
    with rows() as s:
        s.execute(delete(Container).where(Container.id == 1))
        s.add(Container(id=1, name="back"))
        s.commit()
    assert sink.take() == [[("containers", "update", {"id": 1})]]


def test_bulk_in_rolled_back_savepoint_is_dropped(rows: sessionmaker[Session], sink: Recorder) -> None:
    with rows() as s:
        sp = s.begin_nested()
        s.execute(delete(Container).where(Container.id == 1))
        sp.rollback()
        s.commit()
    assert sink.take() == []


def test_failing_statement_records_nothing(rows: sessionmaker[Session], sink: Recorder) -> None:
    with rows() as s:
        with s.begin_nested():
            s.execute(insert(Forum), [{"id": 1, "name": "ok"}])
        sp = s.begin_nested()
        with pytest.raises(exc.IntegrityError):
            s.execute(insert(Forum), [{"id": 1, "name": "duplicate"}])
        sp.rollback()
        s.commit()
    assert sink.take() == [[("forums", "insert", {"id": 1})]]


def test_select_is_untouched(rows: sessionmaker[Session], sink: Recorder) -> None:
    with rows() as s:
        assert len(s.scalars(select(Container)).all()) == 5
        s.commit()
    assert sink.take() == []


def test_bulk_update_drops_stale_values(factory: sessionmaker[Session], sink: Recorder) -> None:
    from .models import User

    with factory() as s:
        s.add(User(id=1, name="ann", email="a@x"))
        s.flush()
        s.execute(update(User).where(User.id == 1).values(email="b@x"))
        s.commit()
    # insert→update is an insert; only the database knows the bulk statement's new values,
    # so the values captured at the insert, now stale, are not sent: the key only.
    assert sink.take() == [[("people", "insert", {"id": 1})]]
