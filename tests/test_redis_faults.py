"""RedisBroker faults that cost clients notifications without a ``resync``: Redis down when
the processes start, a process stalled while the stream was trimmed past it, and the delay
between Redis answering again and the batches that waited going out. Real servers: a
private redis-server per test, and real uvicorn processes (tests/server_app.py) that the
tests stop with SIGSTOP and resume with SIGCONT."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from sqla_notify import Hub
from sqla_notify.redis import RedisBroker

from .test_redis import N, PrivateRedis, frames, private_redis as private_redis, receive, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- 8. late after recovery ------------------------------------------------------------


async def test_batches_that_waited_out_an_outage_go_out_within_a_second_of_redis(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured from redis-server accepting connections again to the client's queue
    holding the batch committed during the outage. The jitter is pinned to its upper end
    (the worst case) so that the bound holds for every draw, not for a lucky one."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # as _broker.backoff draws
    private_redis.start()
    broker = RedisBroker(private_redis.url)
    async with Hub(broker=broker) as hub:
        sub = hub.subscribe()
        frames(sub)
        hub.publish([N(0)])
        await receive(sub, bool, "the first batch")
        private_redis.stop()
        hub.publish([N(1)])  # waits for Redis
        # A long outage: the reader failed five times and backs off (the writer likewise).
        await until(lambda: broker._read_errors >= 5, "five failed attempts to read", timeout=15)
        await asyncio.to_thread(private_redis.start)
        back = time.monotonic()
        await receive(sub, lambda got: any(m.get("data") == {"id": 1} for m in got),
                      "the batch that waited", timeout=15)
        late = time.monotonic() - back
        assert late <= 1.0, f"delivered {late:.2f} s after Redis was back"
