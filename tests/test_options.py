"""Per-model control: collection names, payload modes, exclusions, inheritance."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_notify._capture import recorder as _capture
from sqla_notify._report import HookErrors
from sqla_notify import Notifier, NotifyOptions, encode

from .models import Article, Color, Employee, Engineer, Event, Manager, User
from .support.recording import Recorder


def test_changes_mode(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        u = User(id=1, name="ann", email="a@x")
        s.add(u)
        s.commit()
        u.email = "ann@x"
        s.commit()
        s.delete(u)
        s.commit()
    assert sink.take() == [
        [("people", "insert", {"id": 1, "name": "ann", "email": "a@x"})],
        [("people", "update", {"id": 1, "email": "ann@x"})],
        [("people", "delete", {"id": 1})],
    ]


def test_changes_mode_coalesces_values(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        u = User(id=1, name="ann", email="a@x")
        s.add(u)
        s.commit()
        u.name = "anne"
        s.flush()
        u.email = "anne@x"
        s.commit()
        v = User(id=2, name="bob")
        s.add(v)
        s.flush()
        v.name = "bobby"
        s.commit()
    assert sink.take() == [
        [("people", "insert", {"id": 1, "name": "ann", "email": "a@x"})],
        [("people", "update", {"id": 1, "name": "anne", "email": "anne@x"})],
        [("people", "insert", {"id": 2, "name": "bobby", "email": ""})],
    ]


def test_excluded_column_never_leaves(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        u = User(id=1, name="ann", password_hash="h1")
        s.add(u)
        s.commit()
        u.password_hash = "h2"  # only the excluded column changes
        s.commit()
    batches = sink.take()
    assert batches[1] == [("people", "update", {"id": 1})]
    assert "password_hash" not in str(batches) and "h1" not in str(batches)


def test_row_mode_and_value_types(factory: sessionmaker[Session], sink: Recorder) -> None:
    at = dt.datetime(2026, 1, 2, 3, 4, 5)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with factory() as s:
        ev = Event(id=1, at=at, amount=Decimal("9.50"), uid=uid, color=Color.RED, extra={"k": [1]})
        s.add(ev)
        s.commit()
        ev.color = Color.BLUE
        s.commit()
    [[inserted], [updated]] = sink.take()
    assert inserted[2] == {
        "id": 1, "at": at, "amount": Decimal("9.50"), "uid": uid, "color": Color.RED, "extra": {"k": [1]},
    }
    assert updated[1] == "update" and updated[2] is not None and updated[2]["color"] is Color.BLUE
    assert "secret" not in str(inserted) and "hidden" not in str(inserted)


def test_row_mode_values_encode_as_json(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add(Event(
            id=1, at=dt.datetime(2026, 1, 2, 3, 4, 5), amount=Decimal("9.50"),
            uid=uuid.UUID(int=1), color=Color.RED,
        ))
        s.commit()
    [[n]] = sink.batches
    assert encode(n) == (
        b'{"collection":"events","action":"insert","data":{"id":1,"at":"2026-01-02T03:04:05",'
        b'"amount":"9.50","uid":"00000000-0000-0000-0000-000000000001","color":"red","extra":{}}}'
    )


def test_mutable_values_are_copied(factory: sessionmaker[Session], sink: Recorder) -> None:
    extra: dict[str, Any] = {"tags": ["a"]}
    with factory() as s:
        s.add(Event(id=1, at=dt.datetime(2026, 1, 1), amount=Decimal(1), uid=uuid.UUID(int=1),
                    color=Color.RED, extra=extra))
        s.commit()
    extra["tags"].append("mutated after commit")
    assert sink.batches[0][0].data["extra"] == {"tags": ["a"]}  # type: ignore[index]


def test_payload_function(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        a = Article(id=1, title="hello")
        s.add(a)
        s.flush()
        a.title = "hi"  # insert→update: the function sees the net action, insert
        s.commit()
        a.title = "bye"
        s.commit()
    [[ins], [upd]] = sink.take()
    assert ins == ("articles", "insert", {
        "id": 1, "title": "HI", "action_seen": "insert", "changed": ["id", "title", "token"],
    })
    assert upd == ("articles", "update", {"id": 1, "title": "BYE", "action_seen": "update", "changed": ["title"]})


def test_failing_payload_function_falls_back_to_key(
    engine: Engine, sink: Recorder, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_capture, "_PAYLOAD_ERRORS", HookErrors("a payload function"))  # a fresh throttle

    def broken(obj: Any, action: str, changed: frozenset[str]) -> dict[str, Any]:
        secret = "SE" + "CRET"  # a value: the logged place shows this source, not the value
        raise RuntimeError(f"boom: {secret}")

    class Local(DeclarativeBase):
        pass

    class Thing(Local):
        __tablename__ = "things"
        __sqla_notify__ = NotifyOptions(payload=broken)
        id: Mapped[int] = mapped_column(primary_key=True)

    Local.metadata.create_all(engine)
    try:
        sm = Notifier(sink).attach(sessionmaker(engine))
        with caplog.at_level(logging.ERROR, "sqla_notify"), sm.begin() as s:
            s.add(Thing(id=1))
        assert sink.take() == [[("things", "insert", {"id": 1})]]
        # Logged by type and place, never with its message (it may quote the row).
        assert "a payload function raised builtins.RuntimeError" in caplog.text
        assert "SECRET" not in caplog.text
    finally:
        Local.metadata.drop_all(engine)


def test_unknown_exclude_falls_back_to_key_and_logs(
    sink: Recorder, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    class Local(DeclarativeBase):
        pass

    class Account(Local):
        __tablename__ = "accounts"
        __sqla_notify__ = NotifyOptions(payload="row", exclude={"pasword"})  # misspelt
        id: Mapped[int] = mapped_column(primary_key=True)
        password: Mapped[str] = mapped_column(String(20))

    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    Local.metadata.create_all(engine)
    sm = Notifier(sink).attach(sessionmaker(engine))
    with caplog.at_level(logging.ERROR, "sqla_notify"), sm.begin() as s:
        s.add(Account(id=1, password="hunter2"))
    assert sink.take() == [[("accounts", "insert", {"id": 1})]]
    assert "excludes pasword, which is no column of the model" in caplog.text
    engine.dispose()


def test_exclude_by_column_name(factory: sessionmaker[Session], sink: Recorder) -> None:
    # Event excludes "secret_col", the column name of attribute "secret".
    with factory() as s:
        s.add(Event(id=1, at=dt.datetime(2026, 1, 1), amount=Decimal(1), uid=uuid.UUID(int=1), color=Color.RED))
        s.commit()
    [[(_, _, data)]] = sink.take()
    assert data is not None and "secret" not in data


# -- inheritance ----------------------------------------------------------------------------


def test_joined_subclass_reports_base_collection(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        e = Engineer(id=1, name="ada")
        s.add(e)
        s.commit()
        e.language = "rust"  # a column of the subclass table only
        s.commit()
        s.delete(e)
        s.commit()
    assert sink.take() == [
        [("employees", "insert", {"id": 1})],
        [("employees", "update", {"id": 1})],
        [("employees", "delete", {"id": 1})],
    ]


def test_single_table_subclass_with_own_collection(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory() as s:
        s.add_all([Employee(id=1, name="e"), Manager(id=2, name="m")])
        s.commit()
    assert sink.take() == [[("employees", "insert", {"id": 1}), ("managers", "insert", {"id": 2})]]


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"payload": "everything"}, ValueError, "expected one of 'pk', 'changes', 'row' or a function, got 'everything'"),
        ({"payload": 3}, TypeError, "expected a mode name or a function, got int: 3"),
        ({"collection": ""}, ValueError, "expected a non-empty name, got ''"),
        ({"collection": 5}, TypeError, "expected a str or None, got int: 5"),
        ({"exclude": "password"}, TypeError, "expected a collection of attribute names, got 'password'"),
    ],
)
def test_invalid_options(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        NotifyOptions(**kwargs)


def test_options_are_frozen_and_comparable() -> None:
    a = NotifyOptions(exclude=["x", "y"])
    assert a == NotifyOptions(exclude={"y", "x"})
    with pytest.raises(AttributeError):
        a.collection = "other"  # type: ignore[misc]
