"""A rolling restart without loss: two uvicorn processes share a broker, 100 WebSocket clients
are spread over both, and writes go on at a steady rate through either. One process gets
SIGTERM: it sends each of its clients what was queued for it, closes it with 1001, and its
clients reconnect at once (as the browser client does) with their last id to the other
process. Every client receives every notification committed after it connected, once, in
the broker's order, and a moved client's first notification after the move comes within
2 s of its close frame. Through Redis, and through PostgreSQL (whose replay window is per
process: each process keeps what it received, and both receive everything)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from .support.movers import Mover, write_steadily
from .support.servers import Server, connected

pytestmark = pytest.mark.anyio

CLIENTS = 100
RATE = 20.0  # writes per second
MAX_GAP = 2.0  # seconds, from the close frame to the first notification on the new connection


async def restart_one(a: Server, b: Server) -> tuple[list[Mover], list[int]]:
    """The scenario: ``a`` goes away under load, its clients move to ``b``. Returns the
    clients (those of ``a`` first) and the ids committed."""
    await connected(a, b)
    movers = [Mover(a, b) if i % 2 == 0 else Mover(b, a) for i in range(CLIENTS)]
    movers.sort(key=lambda m: m.home is b)
    tasks = [asyncio.create_task(m.run()) for m in movers]
    try:
        await asyncio.wait_for(asyncio.gather(*(m.welcomed.wait() for m in movers)), 30)
        stop_writing = asyncio.Event()
        writer = asyncio.create_task(write_steadily([a, b], RATE, stop_writing))
        on_a = movers[: CLIENTS // 2]
        # Some notifications first, then SIGTERM to a.
        await asyncio.wait_for(_until(lambda: all(len(m.ids) >= 20 for m in movers) or writer.done()), 20)
        if writer.done():
            await writer
        a.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(_until(lambda: all(m.moves and m.moves[-1].first_after for m in on_a)), 20)
        # Writes go on after the move, then stop; everyone must get all of them.
        moved_at = len(movers[-1].ids)
        await asyncio.wait_for(_until(lambda: len(movers[-1].ids) >= moved_at + 20), 20)
        stop_writing.set()
        committed = await writer
        assert a.proc.wait(20) == 0 or a.proc.returncode == -signal.SIGTERM
        for m in movers:
            m.target = len(committed)
            m.check()
        late = [m for m in movers if not m.complete.is_set()]
        if late:
            await asyncio.wait_for(asyncio.gather(*(m.complete.wait() for m in late)), 15)
        return movers, committed
    finally:
        await asyncio.gather(*(m.stop() for m in movers))
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until(condition: object) -> None:
    """Wait (the caller bounds it) until ``condition()`` holds, checking every 20 ms."""
    assert callable(condition)
    while not condition():
        await asyncio.sleep(0.02)


def check(movers: list[Mover], committed: list[int]) -> list[tuple[float, float, float]]:
    """Nothing lost, nothing twice, the same order everywhere; returns each moved client's
    gap (last notification before the move to the first after it), and its two parts: to
    the close frame, and from it, in seconds."""
    assert len(set(committed)) == len(committed)
    reference = movers[-1].ids  # a client of the process that stayed: it never moved
    assert sorted(reference) == sorted(committed), "the client that stayed missed or doubled some"
    gaps = []
    for i, m in enumerate(movers):
        assert m.unexpected == [], f"client {i}: {m.unexpected}"
        assert m.ids == reference, (
            f"client {i} (moves: {m.moves}) received {len(m.ids)} notifications, "
            f"{len(set(m.ids))} distinct, expected the {len(reference)} committed, in the broker's order; "
            f"missing {sorted(set(reference) - set(m.ids))}"
        )
        if m.home is movers[0].home:
            (move,) = m.moves
            assert move.code == 1001, f"client {i} was closed with {move.code}, expected 1001 (going away)"
            assert move.first_after is not None
            assert move.first_after - move.closed <= MAX_GAP, (
                f"client {i}: {move.first_after - move.closed:.2f} s from the close frame to the first "
                f"notification after the move, expected at most {MAX_GAP} s"
            )
            gaps.append((move.first_after - move.last_before, move.closed - move.last_before,
                         move.first_after - move.closed))
        else:
            assert m.moves == [], f"client {i} of the process that stayed was closed: {m.moves}"
    return gaps


def report(broker: str, committed: list[int], gaps: list[tuple[float, float, float]], started: float) -> None:
    """The figures, for ``pytest -s``."""
    worst = [max(g[i] for g in gaps) for i in range(3)]
    print(f"{broker}: {len(committed)} writes, {len(gaps)} clients moved; gap max {worst[0]:.3f} s "
          f"(last notification to close frame max {worst[1]:.3f} s, close frame to next notification "
          f"max {worst[2]:.3f} s); {time.monotonic() - started:.1f} s")


async def test_a_rolling_restart_through_redis_loses_nothing(redis_servers: tuple[Server, Server]) -> None:
    started = time.monotonic()
    movers, committed = await restart_one(*redis_servers)
    gaps = check(movers, committed)
    report("redis", committed, gaps, started)


async def test_a_rolling_restart_through_postgres_loses_nothing(pg_servers: tuple[Server, Server]) -> None:
    started = time.monotonic()
    movers, committed = await restart_one(*pg_servers)
    gaps = check(movers, committed)
    report("postgres", committed, gaps, started)
