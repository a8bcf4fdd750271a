"""Attaching, detaching, ``notify()``, and isolation from failing sinks."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session, async_sessionmaker
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from sqla_notify import NotAttachedError, Notification, Notifier, NotifierStats

from .models import Container
from .support.recording import Recorder


def _insert(sm: Any, id: int) -> None:
    with sm() as s:
        s.add(Container(id=id, name="x"))
        s.commit()


# -- attach / detach ------------------------------------------------------------------------


def test_attach_returns_target_and_is_idempotent(engine: Engine, sink: Recorder) -> None:
    notifier = Notifier(sink)
    sm = sessionmaker(engine)
    assert notifier.attach(sm) is sm
    assert notifier.attach(sm) is sm
    _insert(sm, 1)
    assert sink.take() == [[("containers", "insert", {"id": 1})]]


def test_detach_stops_capture_and_can_reattach(engine: Engine, sink: Recorder) -> None:
    notifier = Notifier(sink)
    sm = notifier.attach(sessionmaker(engine))
    notifier.detach(sm)
    _insert(sm, 1)
    assert sink.take() == []
    notifier.attach(sm)
    _insert(sm, 2)
    assert sink.take() == [[("containers", "insert", {"id": 2})]]


def test_detach_unknown_target(engine: Engine, notifier: Notifier) -> None:
    with pytest.raises(ValueError, match="expected a target attached to this notifier, got sessionmaker"):
        notifier.detach(sessionmaker(engine))


def test_session_subclass(engine: Engine, sink: Recorder) -> None:
    class MySession(Session):
        pass

    notifier = Notifier(sink)
    notifier.attach(MySession)
    _insert(lambda: MySession(engine), 1)
    _insert(lambda: Session(engine), 2)  # the base class is not affected
    assert sink.take() == [[("containers", "insert", {"id": 1})]]
    notifier.detach(MySession)
    _insert(lambda: MySession(engine), 3)
    assert sink.take() == []


def test_scoped_session_attaches_its_factory(engine: Engine, sink: Recorder) -> None:
    notifier = Notifier(sink)
    scoped = scoped_session(sessionmaker(engine))
    notifier.attach(scoped)
    notifier.attach(scoped.session_factory)  # the same factory: still once
    scoped.add(Container(id=1, name="x"))
    scoped.commit()
    scoped.remove()
    assert sink.take() == [[("containers", "insert", {"id": 1})]]
    notifier.detach(scoped)


def test_async_sessionmaker_gets_private_sync_class(engine: Engine, notifier: Notifier) -> None:
    asm = async_sessionmaker()
    notifier.attach(asm)
    cls = asm.kw["sync_session_class"]
    assert cls is not Session and issubclass(cls, Session)
    assert async_scoped_session(asm, scopefunc=lambda: 1).session_factory is asm
    notifier.detach(asm)
    assert "sync_session_class" not in asm.kw


def test_async_sessionmaker_keeps_users_sync_class(notifier: Notifier) -> None:
    class Mine(Session):
        pass

    asm = async_sessionmaker(sync_session_class=Mine)
    notifier.attach(asm)
    assert asm.kw["sync_session_class"] is not Mine and issubclass(asm.kw["sync_session_class"], Mine)
    notifier.detach(asm)
    assert asm.kw["sync_session_class"] is Mine


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (Session, ValueError, "got the Session class itself, which would capture every session"),
        (AsyncSession, TypeError, "got the AsyncSession subclass AsyncSession; SQLAlchemy has no events"),
        ("sessions", TypeError, "expected a sessionmaker, async_sessionmaker, scoped_session or Session subclass, got str: 'sessions'"),
        (object, TypeError, "got type: <class 'object'>"),
    ],
)
def test_attach_rejects(notifier: Notifier, target: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        notifier.attach(target)


def test_sink_must_be_callable() -> None:
    with pytest.raises(TypeError, match="expected a Sink or a callable taking a list of notifications, got int: 3"):
        Notifier(3)  # type: ignore[arg-type]


# -- notify() -------------------------------------------------------------------------------


def test_notify_without_session_is_immediate(notifier: Notifier, sink: Recorder) -> None:
    data = {"id": 3}
    notifier.notify("forums", "refresh", data)
    data["id"] = 4  # copied when called
    notifier.notify("forums", "reload")
    assert sink.take() == [[("forums", "refresh", {"id": 3})], [("forums", "reload", None)]]


def test_notify_with_session_waits_for_commit(factory: sessionmaker[Session], notifier: Notifier, sink: Recorder) -> None:
    with factory() as s:
        s.execute(text("UPDATE containers SET name = 'raw'"))
        notifier.notify("containers", "update", session=s)
        s.add(Container(id=1, name="orm"))
        assert sink.take() == []
        s.commit()
    assert sink.take() == [[("containers", "update", None), ("containers", "insert", {"id": 1})]]


def test_notify_with_session_dropped_on_rollback(factory: sessionmaker[Session], notifier: Notifier, sink: Recorder) -> None:
    with factory() as s:
        notifier.notify("containers", "update", session=s)  # begins a transaction
        s.rollback()
        sp = s.begin_nested()
        notifier.notify("containers", "in savepoint", session=s)
        sp.rollback()
        notifier.notify("containers", "kept", session=s)
        s.commit()
    assert sink.take() == [[("containers", "kept", None)]]


def test_notify_session_not_attached(engine: Engine, notifier: Notifier) -> None:
    with Session(engine) as s, pytest.raises(NotAttachedError, match="no target attached to this notifier makes"):
        notifier.notify("x", "y", session=s)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((1, "insert"), {}, TypeError, "expected collection to be a str, got int: 1"),
        (("forums", None), {}, TypeError, "expected action to be a str, got NoneType: None"),
        (("", "insert"), {}, ValueError, "expected a non-empty collection and action, got collection='', action='insert'"),
        (("forums", "insert", [1]), {}, TypeError, r"expected data to be a mapping or None, got list: \[1\]"),
        (("forums", "insert"), {"session": "s"}, TypeError, "expected session to be a Session or AsyncSession, got str: 's'"),
    ],
)
def test_notify_rejects(
    notifier: Notifier, sink: Recorder, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        notifier.notify(*args, **kwargs)
    assert sink.take() == []


# -- failing sinks --------------------------------------------------------------------------


def test_failing_sink_never_breaks_commit(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    def broken(batch: list[Notification]) -> None:
        reason = "hub is " + "gone"  # a value: the logged place shows this source, not the value
        raise ConnectionError(reason)

    notifier = Notifier(broken)
    sm = notifier.attach(sessionmaker(engine))
    with caplog.at_level(logging.ERROR, "sqla_notify"):
        _insert(sm, 1)  # must not raise
        notifier.notify("forums", "reload")
    with sm() as s:
        assert s.get(Container, 1) is not None  # committed
    assert notifier.stats() == NotifierStats(batches=0, notifications=0, sink_errors=2)
    # Logged once for its type (the second failure is counted, not logged again), by type
    # and place and what was lost: never the exception's message or the payload.
    [record] = caplog.records
    assert "ConnectionError" in record.getMessage() and "containers insert ×1" in record.getMessage()
    assert "hub is gone" not in caplog.text and "'id': 1" not in caplog.text
    assert not hasattr(record, "notifications")


def test_stats_count_deliveries(factory: sessionmaker[Session], notifier: Notifier) -> None:
    _insert(factory, 1)
    with factory.begin() as s:
        s.add_all([Container(id=2, name="b"), Container(id=3, name="c")])
    notifier.notify("x", "y")
    assert notifier.stats() == NotifierStats(batches=3, notifications=4, sink_errors=0)


def test_repr(notifier: Notifier) -> None:
    assert repr(notifier).startswith("Notifier(CallbackSink(<tests.support.recording.Recorder")
