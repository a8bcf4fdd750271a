"""The Sink contract and the built-in sinks."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from sqla_notify import CallbackSink, FanoutSink, Notification, Notifier, Sink, SinkError

from .conftest import Recorder
from .models import Container

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
