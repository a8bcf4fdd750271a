"""The Sink contract and the built-in sinks."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session, sessionmaker

from sqla_notify import CallbackSink, FanoutSink, Notification, Notifier, NotifierStats, Sink, SinkError
from sqla_notify._capture.buffer import Buffer, Pending

from .models import Container
from .support.recording import Recorder

N = [Notification("forums", "insert", {"id": 1})]


class ListSink(Sink):
    """A user-defined sink: the plug-in contract is one method."""

    def __init__(self) -> None:
        self.got: list[list[Notification]] = []

    def publish(self, notifications: list[Notification]) -> None:
        self.got.append(notifications)


def test_custom_sink_receives_committed_batches(engine: Engine) -> None:
    sink = ListSink()
    sm = Notifier(sink).attach(sessionmaker(engine))
    with sm.begin() as s:
        s.add(Container(id=1, name="a"))
    assert sink.got == [[Notification("containers", "insert", {"id": 1})]]


class TransactionalSink(ListSink):
    """Announces inside the transaction (as a hub with a PostgreSQL broker does) when
    ``answer`` is True; declines with False; fails with an exception."""

    transactional = True

    def __init__(self, answer: bool | Exception) -> None:
        super().__init__()
        self.answer = answer
        self.inside: list[tuple[bool, list[Notification]]] = []

    def publish_in_transaction(self, connection: Connection, notifications: list[Notification]) -> bool:
        self.inside.append((connection.in_transaction(), notifications))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize("answer", [True, False], ids=["taken", "declined"])  # raising: test_postgres_faults
def test_transactional_sink_gets_the_batch_before_commit(
    engine: Engine, answer: bool | Exception
) -> None:
    sink = TransactionalSink(answer)
    sm = Notifier(sink).attach(sessionmaker(engine))
    with sm() as s:
        s.add(Container(id=1, name="a"))  # not flushed yet: commit's flush comes first
        with s.begin_nested():
            s.add(Container(id=2, name="b"))  # a released savepoint: the root decides
        s.commit()
        s.add(Container(id=3, name="rolled back"))
        s.rollback()
    batch = [Notification("containers", "insert", {"id": 1}), Notification("containers", "insert", {"id": 2})]
    assert sink.inside == [(True, batch)]  # once, complete, inside the open transaction
    assert sink.got == ([] if answer is True else [batch])  # otherwise published after commit


def test_a_later_before_commit_change_is_not_lost(engine: Engine) -> None:
    sink = TransactionalSink(True)
    sm = Notifier(sink).attach(sessionmaker(engine))

    @event.listens_for(sm, "before_commit")
    def audit(session: Session) -> None:  # registered after the notifier's own listener
        if not session.info.get("audited"):
            session.info["audited"] = True
            session.add(Container(id=99, name="audit"))

    with sm.begin() as s:
        s.add(Container(id=1, name="a"))
    assert sink.inside == [(True, [Notification("containers", "insert", {"id": 1})])]
    assert sink.got == [[Notification("containers", "insert", {"id": 99})]]  # after commit


def test_incomplete_sink_fails_when_constructed() -> None:
    class Incomplete(Sink):
        pass

    with pytest.raises(TypeError, match="abstract method"):
        Incomplete()  # type: ignore[abstract]


def test_callback_sink() -> None:
    got = Recorder()
    CallbackSink(got).publish(N)
    assert got.batches == [N]
    with pytest.raises(TypeError, match="expected a callable taking a list of notifications, got str: 'x'"):
        CallbackSink("x")  # type: ignore[arg-type]


def test_fanout_isolates_failures() -> None:
    first, last = Recorder(), ListSink()

    def broken(batch: list[Notification]) -> None:
        raise RuntimeError("down")

    fan = FanoutSink(first, broken, last)
    with pytest.raises(SinkError, match="1 sink\\(s\\) failed: RuntimeError: down") as info:
        fan.publish(N)
    assert first.batches == [N] and last.got == [N]
    assert isinstance(info.value.__cause__, RuntimeError)
    assert first.batches[0] is not last.got[0]  # each sink owns its list


def test_fanout_needs_sinks() -> None:
    with pytest.raises(ValueError, match="expected at least one sink, got none"):
        FanoutSink()


class DeferringSink(ListSink):
    """Takes captured batches unbuilt, as the hub does, and builds them on a thread of its
    own; fails to take them with ``error``."""

    _deferred = True

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.error = error
        self.pending: list[Pending] = []

    def _publish_pending(self, batch: Pending) -> None:
        if self.error is not None:
            raise self.error
        self.pending.append(batch)

    def build_elsewhere(self) -> list[list[Notification]]:
        built: list[list[Notification]] = []
        worker = threading.Thread(target=lambda: built.extend(b.notifications() for b in self.pending))
        worker.start()
        worker.join(timeout=10)
        return built


def test_a_deferring_sink_gets_batches_unbuilt_that_build_elsewhere_as_a_callable_gets_them(
    engine: Engine,
) -> None:
    eager, deferring = Recorder(), DeferringSink()
    eager_sm = Notifier(eager).attach(sessionmaker(engine))
    notifier = Notifier(deferring)
    deferring_sm = notifier.attach(sessionmaker(engine))
    for sm in (eager_sm, deferring_sm):
        with sm.begin() as s:
            s.add_all([Container(id=1, name="a"), Container(id=2, name="b")])
        with sm.begin() as s:
            s.get_one(Container, 1).name = "c"
            s.delete(s.get_one(Container, 2))
        with sm.begin() as s:
            s.delete(s.get_one(Container, 1))
    assert deferring.got == []  # publish() is not called for captured batches
    assert [len(b) for b in deferring.pending] == [2, 2, 1]
    built = deferring.build_elsewhere()
    assert built == eager.batches and len(built) == 3
    assert deferring.pending[0].notifications() is built[0]  # built once
    assert notifier.stats() == NotifierStats(batches=3, notifications=5, sink_errors=0)
    notifier.notify("forums", "insert", {"id": 9})  # without a session: built at once, as always
    assert deferring.got == [[Notification("forums", "insert", {"id": 9})]]


def test_a_deferring_sink_that_raises_is_counted_and_the_commit_stands(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(DeferringSink(RuntimeError("queue closed")))
    sm = notifier.attach(sessionmaker(engine))
    with sm.begin() as s:
        s.add(Container(id=1, name="a"))
    with sm() as s:
        assert s.get(Container, 1) is not None
    assert notifier.stats() == NotifierStats(batches=0, notifications=0, sink_errors=1)
    assert "1 notification(s) not delivered (containers insert ×1)" in caplog.text


def test_the_default_publish_pending_builds_and_publishes() -> None:
    sink = ListSink()
    sink._publish_pending(Pending(Buffer()))
    assert sink.got == [[]]
