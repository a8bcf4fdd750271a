"""Pins the SQLAlchemy internals that capture reads, on every supported version.

Capture reads the flush context and instance state once per flush instead of running a
function per row (see the docstring of ``sqla_notify/_capture/recorder.py`` for why). These are not
public API: if an upgrade changes them, these tests name what moved.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event, update
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.orm.base import NO_VALUE

from .models import Base, Container, Forum


def _capture_flush(session: Session) -> list[Any]:
    seen: list[Any] = []

    @event.listens_for(session, "after_flush")
    def grab(s: Session, ctx: UOWTransaction) -> None:
        seen.append({
            "mappers": {m.class_: set(states) for m, states in ctx.mappers.items()},
            "states": dict(ctx.states),
            "committed": {st: dict(st.committed_state) for st in ctx.states},
            "keys": {st: st.key for st in ctx.states},
            "insert_order": {st: st.insert_order for st in ctx.states},
        })

    return seen


def test_flush_context_and_state_shapes() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Container(id=1, name="a"))
        s.add(Container(id=2, name="b"))
        s.commit()
        seen = _capture_flush(s)
        one, two = s.get(Container, 1), s.get(Container, 2)
        assert one is not None and two is not None
        with s.no_autoflush:  # delete() loads the cascaded collection, which would flush
            one.name = "changed"
            s.delete(two)
            new = Container(id=3, name="c")
            s.add(new)
        s.flush()
    engine.dispose()  # Python >= 3.13 warns of a connection left to the GC

    [ctx] = seen
    states = ctx["states"]
    by_obj = {st.obj(): st for st in states}
    # UOWTransaction.mappers: mapper -> set of states; .states: state -> (isdelete, listonly)
    assert ctx["mappers"][Container] == set(states)
    assert states[by_obj[one]] == (False, False)
    assert states[by_obj[two]] == (True, False)
    assert states[by_obj[new]] == (False, False)
    # committed_state holds old values of changed attributes until the flush completes
    assert ctx["committed"][by_obj[one]] == {"name": "a"}
    # state.key: (class, pk tuple, token) for persistent rows, None for pending ones
    assert ctx["keys"][by_obj[two]] == (Container, (2,), None)
    assert ctx["keys"][by_obj[new]] is None
    assert isinstance(ctx["insert_order"][by_obj[new]], int)


def test_row_switch_marks_deleted_state_listonly() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Container(id=1, name="a"))
        s.commit()
        seen = _capture_flush(s)
        s.delete(s.get(Container, 1))
        s.add(Container(id=1, name="again"))
        s.flush()
    engine.dispose()  # Python >= 3.13 warns of a connection left to the GC
    flags = sorted(seen[0]["states"].values())
    assert flags == [(False, False), (True, True)]


def test_unloaded_old_value_is_no_value() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Container(id=1, name="a"))
        s.commit()  # expires everything
        seen = _capture_flush(s)
        c = s.get(Container, 1)
        assert c is not None
        s.expire(c, ["name"])
        c.name = "b"
        s.flush()
    engine.dispose()  # Python >= 3.13 warns of a connection left to the GC
    [committed] = seen[0]["committed"].values()
    assert committed["name"] is NO_VALUE


def test_statement_returning_flags() -> None:
    plain = update(Container).values(name="x")
    assert not plain._returning and not plain._return_defaults
    assert update(Container).returning(Container.id)._returning
    assert plain.return_defaults(Container.id)._return_defaults


def test_before_flush_sees_modified_states_and_their_expired_attributes() -> None:
    # Recorder.before_flush reads identity_map._modified and InstanceState.expired_attributes,
    # and hands its notes to after_flush through flush_context.attributes.
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Container(id=1, name="a"))
        s.commit()
        c = s.get(Container, 1)
        assert c is not None
        s.expire(c, ["name"])
        c.id = 1  # a change, so the state is modified, with "name" still expired
        seen: list[Any] = []

        @event.listens_for(s, "before_flush")
        def before(session: Session, ctx: UOWTransaction, instances: Any) -> None:
            modified = list(session.identity_map._modified)
            seen.append([(st.obj() is c, set(st.expired_attributes)) for st in modified])
            ctx.attributes["pin"] = "noted"

        @event.listens_for(s, "after_flush")
        def after(session: Session, ctx: UOWTransaction) -> None:
            seen.append(ctx.attributes.get("pin"))

        s.flush()
    engine.dispose()  # Python >= 3.13 warns of a connection left to the GC
    assert seen == [[(True, {"name"})], "noted"]


def test_changed_states_hold_their_instance_strongly_during_the_flush() -> None:
    # The flush hook reads an updated or inserted row's instance from
    # InstanceState._strong_obj (an attribute read, where state.obj() is a call), and falls
    # back to the weak reference when it is None (a deleted object that was not changed).
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Container(id=1, name="a"))
        s.add(Container(id=2, name="b"))
        s.commit()
        seen: list[Any] = []

        @event.listens_for(s, "after_flush")
        def grab(session: Session, ctx: UOWTransaction) -> None:
            seen.extend((st.obj(), st._strong_obj) for st in ctx.states)

        one, two = s.get(Container, 1), s.get(Container, 2)
        assert one is not None and two is not None
        with s.no_autoflush:  # delete() loads the cascaded collection, which would flush
            one.name = "changed"
            s.delete(two)
            new = Container(id=3, name="c")
            s.add(new)
        s.flush()
    engine.dispose()  # Python >= 3.13 warns of a connection left to the GC
    strong = {obj: held for obj, held in seen}
    assert strong[one] is one
    assert strong[new] is new


def test_the_session_maps_the_states_it_deletes_to_their_instances_during_the_flush() -> None:
    # A transaction's first flush reads a deleted row's instance from Session._deleted (a dict
    # lookup, where the weak reference is a call), and falls back to the weak reference for
    # the rows the flush itself deletes (orphans), which are not in it.
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Container(id=1, name="a", forums=[Forum(id=1, name="x"), Forum(id=2, name="y")]))
        s.add(Container(id=2, name="b", forums=[Forum(id=3, name="z")]))
        s.commit()
        seen: list[Any] = []

        @event.listens_for(s, "after_flush")
        def grab(session: Session, ctx: UOWTransaction) -> None:
            seen.append({st.obj(): session._deleted.get(st) for st, (isdelete, _) in ctx.states.items() if isdelete})

        one, two = s.get_one(Container, 1), s.get_one(Container, 2)
        orphan, cascaded = one.forums[0], two.forums[0]
        one.forums.remove(orphan)
        s.delete(two)
        s.flush()
    engine.dispose()
    assert seen == [{orphan: None, two: two, cascaded: cascaded}]


def test_a_starlette_websocket_keeps_the_asgi_send_it_was_given() -> None:
    """The WebSocket writer sends frames through ``WebSocket._send``, the ASGI send itself,
    bypassing ``WebSocket.send``'s state checks (sqla_notify/fastapi.py, ``_Writer``)."""
    from starlette.websockets import WebSocket

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: object) -> None:
        return None

    websocket = WebSocket({"type": "websocket", "path": "/", "headers": [], "query_string": b""}, receive, send)
    assert websocket._send is send
