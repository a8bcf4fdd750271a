"""Share notifications across processes and hosts through a Redis Stream.

.. code-block:: python

    hub = Hub(broker="redis://127.0.0.1:6379/0")            # or:
    hub = Hub(broker=RedisBroker("redis://...", stream="myapp:notify"))

Each committed batch becomes one stream entry (``XADD`` with an approximate ``MAXLEN``: the
stream is the replay window). Every process reads the stream from where it left off and
delivers what it reads, its own batches included, so each client gets each notification
once. A cursor is ``"<entry id>:<index in the batch>"``, the same in every process: a client
may reconnect to any of them with its last id.

Every entry is numbered: field ``n`` is the stream's previous entry's ``n`` plus one,
written by a small script that reads the newest entry and adds the next in one atomic step
(one key, so it works on a cluster too). A reader checks, for every entry it reads, that
``n`` follows the previous one: a jump means entries it never read are gone, at no cost
per read (a few bytes per entry). ``XREAD`` itself never says so, and entry ids are
time-based, so they show no hole. The alternative, ``XINFO STREAM`` after every read, is
neither exact nor cheap: Redis 7.0 leaves ``max-deleted-entry-id`` at ``0-0`` when it
trims, comparing ``first-entry`` with the last id read also fires when the stream was
trimmed just up to that id (nothing lost), and its reply carries two whole entries per read.

Faults, and what clients see
============================

Every gap below is counted in ``hub.stats().gaps`` and logged with its cause; clients get
``resync`` with the same cause as ``reason``.

* **Redis unreachable** (at start-up or later): commits carry on, never blocking. Batches
  wait, in order, in a bounded queue (``max_pending``), and nothing is delivered (not even
  locally) until Redis answers again; then they are written and delivered, within about
  half a second (retries back off to :data:`~sqla_notify._broker.MAX_BACKOFF` at most).
* **Clients that connected before this process could read the stream.** ``start`` waits
  for the first read (``connect_timeout`` at most), so with Redis up none can. With Redis
  down, clients connect meanwhile, and what other processes wrote during the outage cannot
  be told apart from history: once the reader first reaches a stream that holds anything,
  they get ``resync``.
* **A write that may or may not have happened** (the connection broke during the write):
  each entry carries a token (this broker, the batch's number), so once Redis answers
  again the broker looks for its tokens among the newest entries and re-sends only what did
  not arrive: no loss, no duplicate (unless more than 10,000 entries were written by others
  in between). Batches that overflow ``max_pending`` are dropped, and the next entry
  written is a *gap marker*: every process then tells its clients to ``resync``.
* **Entries this process never read are gone**: trimmed while it was stalled or too slow
  (others wrote more than ``maxlen`` meanwhile), or lost by a Redis restarted without
  persistence. Detected on every read by the numbering (and, on reconnection, by the last
  entry read no longer being in the stream) and answered with ``resync`` to this process's
  clients. Entries without a number (written by an older version) are not checked.

The reader's state is in ``hub.stats().broker`` (``"connecting"``, ``"connected"``,
``"disconnected"``) and every change is logged on the ``sqla_notify`` logger.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit, urlunsplit

import msgspec

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f'sqla_notify.redis needs redis-py ({exc.name} is missing): pip install "sqla_notify[redis]"'
    ) from exc

from ._broker import Broker, Item, Outbox, backoff, describe, stop_tasks
from ._json import ENCODER
from ._notification import Notification
from ._protocol import NotificationFrame, encode
from ._subscriber import _Entry

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ("RedisBroker",)

logger = logging.getLogger("sqla_notify")

_BATCH = b"b"  # the field holding a batch: a JSON array of notifications
_GAP = b"gap"  # the field of a gap marker: why notifications were lost
_TOKEN = b"t"  # the field naming who wrote a batch: "<broker instance>:<batch number>"
_N = b"n"  # the field numbering entries: the previous entry's number + 1 (see _ADD)
#: XADD with the next number. Atomic (a script); reads only its own key's newest entry.
_ADD = """
local n = 1
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then
  local fields = newest[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then
      n = (tonumber(fields[i + 1]) or 0) + 1
      break
    end
  end
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'n', string.format('%d', n), unpack(ARGV, 2))
"""
_COUNT = 1000  # entries per XREAD
#: A backlog is read without blocking and handed to the hub in one piece (a client that
#: cannot take it all then gets one ``resync``), but at least every this many reads.
_CATCH_UP_READS = 10
#: Entries searched for the tokens of a write that failed midway: more entries written by
#: other processes in between, and a batch that did arrive would be sent again.
_CONFIRM_SCAN = 10_000
_INDEX_BITS = 24  # notifications per entry, in the ordering key
_Entries = list[tuple[bytes, dict[bytes, bytes]]]  # what XRANGE and XREAD return, per stream
_batch_encoder = ENCODER  # as the hub encodes: never fails
_batch_decoder = msgspec.json.Decoder(list[Notification])
_ADD_SHA = hashlib.sha1(_ADD.encode()).hexdigest()


def _redacted(url: str) -> str:
    """``url`` for a log line or a repr: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


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
        self.connect_timeout = connect_timeout
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
        self._attempted = asyncio.Event()  # the reader's first attempt ended
        self._primed = False  # the reader has read the stream once
        self._n: int | None = None  # the number of the last entry read (None: unknown)
        self._batch: list[_Entry] = []  # read, not yet handed to the hub

    def __repr__(self) -> str:
        return f"RedisBroker({_redacted(self.url)!r}, stream={self.stream!r}, state={self._state!r})"

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
        self._attempted = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read())]
        # With Redis up, be ready before the application serves: a client that connects
        # earlier cannot be placed in the stream, and would get ``resync`` (see _prime).
        # With Redis down, return all the same, and carry on in the background.
        try:
            await asyncio.wait_for(self._attempted.wait(), self.connect_timeout)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            logger.warning("sqla_notify: Redis did not answer within %s s; reading in the background",
                           self.connect_timeout)

    def publish(self, notifications: list[Notification]) -> None:
        self._outbox.put(notifications)

    async def stop(self) -> None:
        self._stopping = self._outbox.closed = True
        for task in self._tasks:
            task.cancel()
        # redis-py (8.1) can lose a cancellation that lands while a command is starting, and
        # the call then waits for its reply (a blocking XREAD: seconds). Closing the
        # connections ends it at once; the loops see ``_stopping`` and return.
        await self._redis.connection_pool.disconnect(inuse_connections=True)
        await stop_tasks(self._tasks, "Redis")
        self._tasks = []
        # Every connection, including one a cancelled read still held.
        await self._redis.connection_pool.disconnect(inuse_connections=True)
        await self._redis.aclose()
        self._hub = None
        self._state = "stopped"

    # -- writing --------------------------------------------------------------------------

    async def _write(self, items: list[Item], lost: str | None) -> None:
        """Add a gap marker if something was lost, then the batches, in one pipeline. Each
        entry carries a token (this broker, the batch's number) for :meth:`_confirm`."""
        adds: list[dict[bytes, bytes | str]] = [] if lost is None else [{_GAP: lost}]
        adds += ({_BATCH: _batch_encoder.encode(batch), _TOKEN: f"{self._instance}:{number}"} for number, batch in items)
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for fields in adds:
                pipe.evalsha(_ADD_SHA, 1, self.stream, self._maxlen, *(x for kv in fields.items() for x in kv))
            results = await pipe.execute(raise_on_error=False)
            if attempt == 0 and all(isinstance(r, NoScriptError) for r in results):
                # Redis forgot the script (it restarted): nothing was written. Once more.
                await self._redis.script_load(_ADD)
                continue
            for result in results:
                if isinstance(result, Exception):
                    raise result
            return

    async def _ready(self) -> None:
        """The outbox's ping: load the script (Redis forgets it when it restarts)."""
        await self._redis.script_load(_ADD)

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
                    self._attempted.set()
                    # Only now may this process write: what it writes is then read as news,
                    # never mistaken for the history that primed the window.
                    self._tasks.append(asyncio.get_running_loop().create_task(
                        self._outbox.run(self._write, self._ready, self._confirm)
                    ))
                elif failures:
                    await self._check_continuity(hub, last)
                if self._state != "connected":
                    logger.info("sqla_notify is reading Redis stream %r at %s", self.stream, _redacted(self.url))
                    self._state = "connected"
                failures = 0
                entries = await self._xread(last, block=True)
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any error
                self._attempted.set()
                if self._stopping:
                    return
                self._read_errors += 1
                failures += 1
                if self._state != "disconnected":
                    logger.warning("sqla_notify lost Redis (%s); reconnecting with backoff", describe(exc))
                self._state = "disconnected"
                await asyncio.sleep(backoff(failures))
                continue
            # A full read: a backlog (this process was busy, or stalled). Read on without
            # blocking, and hand it all over at once (bounded).
            for reads in range(1, _CATCH_UP_READS + 1):
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    try:
                        self._take(hub, last, fields)
                    except Exception:  # noqa: BLE001 - one bad entry must not stop the reader
                        logger.exception("sqla_notify could not deliver stream entry %s", last)
                if len(entries) < _COUNT or reads == _CATCH_UP_READS:
                    break
                try:
                    entries = await self._xread(last, block=False)
                except Exception:  # noqa: BLE001 - the blocking read that follows will tell
                    break
            self._flush(hub)

    async def _xread(self, last: str, *, block: bool) -> _Entries:
        reply = cast(
            "list[tuple[bytes, _Entries]] | None",
            await self._redis.xread({self.stream: last}, count=_COUNT, block=int(self.block * 1000) if block else None),
        )
        return reply[0][1] if reply else []

    async def _prime(self, hub: Hub) -> str:
        """Fill the hub's replay window from the stream's tail; return the newest id."""
        tail = cast("_Entries", await self._redis.xrevrange(self.stream, count=max(hub.replay, 1)))
        self._n = None
        for entry_id, fields in reversed(tail):
            self._take(hub, entry_id.decode(), fields, live=False)
        self._flush(hub, live=False)
        if tail and not self._primed:
            # Clients connected before this first read (Redis was unreachable when the hub
            # started): what others wrote meanwhile is in this history, not sent to them.
            hub._resync_all(
                "connected before this server could read the Redis stream: "
                "notifications committed meanwhile by other servers may be missing"
            )
        self._primed = True
        return tail[0][0].decode() if tail else "0-0"

    async def _check_continuity(self, hub: Hub, last: str) -> None:
        """After a lost connection: is the last entry read still there? If not, what came
        after it may be gone too (Redis restarted, or trimmed past it)."""
        # Nothing read yet ("0-0"): nothing proves that nobody wrote meanwhile.
        if last == "0-0" or not await self._redis.xrange(self.stream, last, last):
            self._n = None  # numbering starts afresh: do not count this gap twice
            hub._gap(
                "notifications were lost while this server was disconnected from Redis "
                "(Redis restarted without them, or trimmed them before they were read)"
            )

    def _take(self, hub: Hub, entry_id: str, fields: dict[bytes, bytes], *, live: bool = True) -> None:
        """Check one entry's number, then queue its notifications for :meth:`_flush` (or
        deliver the gap it announces)."""
        previous = self._n
        try:
            self._n = n = int(fields[_N])
        except (KeyError, ValueError):
            self._n = None  # an older writer's entry, or not ours: the check starts after it
        else:
            if previous is not None and n > previous + 1:
                self._gap(hub, (
                    f"{n - previous - 1} batch(es) of notifications were trimmed from the Redis "
                    f"stream before this server read them: it fell more than the stream's "
                    f"{self._maxlen} entries behind"
                ), live=live)
            elif previous is not None and n <= previous:
                self._gap(hub, (
                    "the Redis stream started again from scratch (Redis lost its data, or the "
                    "key was deleted): notifications written before that were lost"
                ), live=live)
        if _GAP in fields:
            self._gap(hub, f"another server lost notifications: {fields[_GAP].decode(errors='replace')}", live=live)
            return
        try:
            batch = _batch_decoder.decode(fields[_BATCH])
        except (KeyError, msgspec.DecodeError) as exc:
            logger.error("sqla_notify skipped stream entry %s, which is not a batch: %s", entry_id, exc)
            return
        for index, notification in enumerate(batch):
            key = _key(entry_id, index)
            if key is None:
                logger.error("sqla_notify cut a batch of %d at %d notifications", len(batch), index)
                break
            ident = f"{entry_id}:{index}"
            frame = NotificationFrame(ident, notification.collection, notification.action, notification.data)
            self._batch.append(_Entry(key, ident, notification, encode(frame)))

    def _gap(self, hub: Hub, reason: str, *, live: bool) -> None:
        self._flush(hub, live=live)  # what came before the gap goes first
        hub._gap(reason, live=live)

    def _flush(self, hub: Hub, *, live: bool = True) -> None:
        """Hand what was read to the hub: one hand-over, whole transactions only."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            hub._ingest(batch, live=live)
        except Exception:  # noqa: BLE001 - the reader must outlive any error
            logger.exception("sqla_notify could not deliver %d notification(s) read from Redis", len(batch))
