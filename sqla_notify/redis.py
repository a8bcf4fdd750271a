"""Share notifications across processes and hosts through a Redis Stream.

.. code-block:: python

    hub = Hub(broker="redis://127.0.0.1:6379/0")            # or:
    hub = Hub(broker=RedisBroker("redis://...", stream="myapp:notify"))

Each committed batch becomes one stream entry (``XADD`` with an approximate ``MAXLEN``: the
stream is the replay window). Every process reads the stream from where it left off and
delivers what it reads, its own batches included, so each client gets each notification
once. A cursor is ``"<entry id>:<index in the batch>"``, the same in every process: a client
may reconnect to any of them with its last id.

Faults, and what clients see
============================

* **Redis unreachable** (at start-up or later): commits carry on, never blocking. Batches
  wait, in order, in a bounded queue (``max_pending``), and nothing is delivered (not even
  locally) until Redis answers again; then they are written and delivered.
* **A write that may or may not have happened** (the connection broke during ``XADD``):
  each entry carries a token (this broker, the batch's number), so once Redis answers
  again the broker looks for its tokens among the newest entries and re-sends only what did
  not arrive: no loss, no duplicate (unless more than 10,000 entries were written by others
  in between). Batches that overflow ``max_pending`` are dropped, and the next entry
  written is a *gap marker*: every process then tells its clients to ``resync``.
* **Entries this process never read are gone** (Redis restarted without persistence, or
  trimmed them while this process was away): detected on reconnection (the last entry read
  is no longer in the stream) and answered with ``resync`` to this process's clients.

The reader's state is in ``hub.stats().broker`` (``"connecting"``, ``"connected"``,
``"disconnected"``) and every change is logged on the ``sqla_notify`` logger.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, cast

import msgspec

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f'sqla_notify.redis needs redis-py ({exc.name} is missing): pip install "sqla_notify[redis]"'
    ) from exc

from ._broker import Broker, Item, Outbox, backoff, describe, stop_tasks
from ._notification import Notification, _lenient
from ._protocol import NotificationFrame, encode
from ._subscriber import _Entry

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ("RedisBroker",)

logger = logging.getLogger("sqla_notify")

_BATCH = b"b"  # the field holding a batch: a JSON array of notifications
_GAP = b"gap"  # the field of a gap marker: why notifications were lost
_TOKEN = b"t"  # the field naming who wrote a batch: "<broker instance>:<batch number>"
#: Entries searched for the tokens of a write that failed midway: more entries written by
#: other processes in between, and a batch that did arrive would be sent again.
_CONFIRM_SCAN = 10_000
_INDEX_BITS = 24  # notifications per entry, in the ordering key
_Entries = list[tuple[bytes, dict[bytes, bytes]]]  # what XRANGE and XREAD return, per stream
_batch_encoder = msgspec.json.Encoder(enc_hook=_lenient)  # as the hub encodes: never fails
_batch_decoder = msgspec.json.Decoder(list[Notification])


def _key(entry_id: str, index: int) -> int | None:
    ms, _, seq = entry_id.partition("-")
    if not (ms.isdigit() and seq.isdigit()) or index >= 1 << _INDEX_BITS:
        return None
    return ((int(ms) << 20 | int(seq)) << _INDEX_BITS) | index


class RedisBroker(Broker):
    """Carry committed batches between processes through one Redis Stream.

    :param url: a redis-py URL, e.g. ``"redis://127.0.0.1:6379/0"``.
    :param stream: the stream's key; one per application (all its processes share it).
    :param maxlen: entries the stream keeps (approximately: Redis trims in whole nodes).
        ``None``: the hub's ``replay``.
    :param max_pending: batches kept while Redis is unreachable; beyond it the oldest are
        dropped and clients are told to ``resync``.
    :param block: seconds one ``XREAD`` waits for new entries before asking again.
    :param connect_timeout: seconds before an attempt to reach Redis counts as failed.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        stream: str = "sqla_notify",
        maxlen: int | None = None,
        max_pending: int = 10_000,
        block: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ValueError(f"RedisBroker(stream=...) expected a non-empty str, got {stream!r}")
        for name, value in (("maxlen", maxlen), ("max_pending", max_pending)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"RedisBroker({name}=...) expected an int >= 1, got {value!r}")
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self.max_pending = max_pending
        self.block = block
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            # A read blocks for ``block``; a socket silent for longer than that is dead.
            url, socket_connect_timeout=connect_timeout, socket_timeout=block + connect_timeout,
            health_check_interval=30,
            # No retries inside redis-py: a retried XADD whose reply was lost would be written
            # twice. The loops below retry where that is safe.
            retry=Retry(NoBackoff(), 0),
        )
        self._hub: Hub | None = None
        self._outbox = Outbox(max_pending, "Redis")
        self._instance = uuid.uuid4().hex[:16]
        self._tasks: list[asyncio.Task[None]] = []
        self._state = "stopped"
        self._read_errors = 0
        self._stopping = False

    def __repr__(self) -> str:
        return f"RedisBroker({self.url!r}, stream={self.stream!r}, state={self._state!r})"

    # -- Broker ---------------------------------------------------------------------------

    shared_cursors = True

    @property
    def errors(self) -> int:
        """Failed Redis calls so far (reads and writes)."""
        return self._read_errors + self._outbox.errors

    @property
    def initial_cursor(self) -> str:
        return "0-0:0"

    @property
    def state(self) -> str:
        return self._state

    def parse_cursor(self, cursor: str) -> int | None:
        entry_id, _, index = cursor.rpartition(":")
        return _key(entry_id, int(index)) if index.isdigit() else None

    async def start(self, hub: Hub) -> None:
        if self._hub is not None:
            raise RuntimeError("this RedisBroker is already running; give each Hub its own")
        self._hub = hub
        self._stopping = self._outbox.closed = False
        self._maxlen = self.maxlen or max(hub.replay, 1)
        self._state = "connecting"
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read())]

    def publish(self, notifications: list[Notification]) -> None:
        self._outbox.put(notifications)

    async def stop(self) -> None:
        self._stopping = self._outbox.closed = True
        await stop_tasks(self._tasks, "Redis")
        self._tasks = []
        # Every connection, including one a cancelled read still held.
        await self._redis.connection_pool.disconnect(inuse_connections=True)
        await self._redis.aclose()
        self._hub = None
        self._state = "stopped"

    # -- writing --------------------------------------------------------------------------

    async def _write(self, items: list[Item], lost: str | None) -> None:
        """XADD a gap marker if something was lost, then the batches, in one pipeline. Each
        entry carries a token (this broker, the batch's number) for :meth:`_confirm`."""
        pipe = self._redis.pipeline(transaction=False)
        if lost is not None:
            pipe.xadd(self.stream, {_GAP: lost}, maxlen=self._maxlen, approximate=True)
        for number, batch in items:
            fields = {_BATCH: _batch_encoder.encode(batch), _TOKEN: f"{self._instance}:{number}"}
            pipe.xadd(self.stream, fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
        await pipe.execute()

    async def _confirm(self, items: list[Item]) -> int:
        """How many of ``items`` (a prefix: a pipeline runs in order) are in the stream,
        judged by their tokens among the newest :data:`_CONFIRM_SCAN` entries."""
        tail = cast("_Entries", await self._redis.xrevrange(self.stream, count=_CONFIRM_SCAN))
        tokens = {fields.get(_TOKEN) for _, fields in tail}
        arrived = 0
        for number, _ in items:
            if f"{self._instance}:{number}".encode() not in tokens:
                break
            arrived += 1
        return arrived

    # -- reading --------------------------------------------------------------------------

    async def _read(self) -> None:
        hub = self._hub
        assert hub is not None
        last: str | None = None  # the id of the last entry read; None: not connected yet
        failures = 0
        while True:
            try:
                if last is None:
                    last = await self._prime(hub)
                    # Only now may this process write: what it writes is then read as news,
                    # never mistaken for the history that primed the window.
                    self._tasks.append(asyncio.get_running_loop().create_task(
                        self._outbox.run(self._write, self._redis.ping, self._confirm)
                    ))
                elif failures:
                    await self._check_continuity(hub, last)
                if self._state != "connected":
                    logger.info("sqla_notify is reading Redis stream %r at %s", self.stream, self.url)
                    self._state = "connected"
                failures = 0
                reply = cast(
                    "list[tuple[bytes, _Entries]] | None",
                    await self._redis.xread({self.stream: last}, count=1000, block=int(self.block * 1000)),
                )
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any error
                if self._stopping:
                    return
                self._read_errors += 1
                failures += 1
                if self._state != "disconnected":
                    logger.warning("sqla_notify lost Redis (%s); reconnecting with backoff", describe(exc))
                self._state = "disconnected"
                await asyncio.sleep(backoff(failures))
                continue
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    try:
                        self._deliver(hub, last, fields)
                    except Exception:  # noqa: BLE001 - one bad entry must not stop the reader
                        logger.exception("sqla_notify could not deliver stream entry %s", last)

    async def _prime(self, hub: Hub) -> str:
        """Fill the hub's replay window from the stream's tail; return the newest id."""
        tail = cast("_Entries", await self._redis.xrevrange(self.stream, count=max(hub.replay, 1)))
        for entry_id, fields in reversed(tail):
            self._deliver(hub, entry_id.decode(), fields, live=False)
        return tail[0][0].decode() if tail else "0-0"

    async def _check_continuity(self, hub: Hub, last: str) -> None:
        """After a lost connection: is the last entry read still there? If not, what came
        after it may be gone too (Redis restarted, or trimmed past it)."""
        # Nothing read yet ("0-0"): nothing proves that nobody wrote meanwhile.
        if last == "0-0" or not await self._redis.xrange(self.stream, last, last):
            hub._gap("the broker lost notifications (Redis restarted, or trimmed unread entries)")

    def _deliver(self, hub: Hub, entry_id: str, fields: dict[bytes, bytes], *, live: bool = True) -> None:
        if _GAP in fields:
            hub._gap(f"another process lost notifications: {fields[_GAP].decode(errors='replace')}", live=live)
            return
        try:
            batch = _batch_decoder.decode(fields[_BATCH])
        except (KeyError, msgspec.DecodeError) as exc:
            logger.error("sqla_notify skipped stream entry %s, which is not a batch: %s", entry_id, exc)
            return
        entries = []
        for index, n in enumerate(batch):
            key = _key(entry_id, index)
            if key is None:
                logger.error("sqla_notify cut a batch of %d at %d notifications", len(batch), index)
                break
            ident = f"{entry_id}:{index}"
            entries.append(_Entry(key, ident, n, encode(NotificationFrame(ident, n.collection, n.action, n.data))))
        hub._ingest(entries, live=live)
