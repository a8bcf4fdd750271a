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
  half a second (retries back off to :data:`~sqla_notify._brokers.outbox.MAX_BACKOFF` at most).
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

import hashlib
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import cast
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

from ._brokers.base import Batch, Broker, Gap, Ready
from ._json import ENCODER
from ._notify.notification import Notification
from ._report import fields as log_fields

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
        super().__init__(max_pending=max_pending, connect_timeout=connect_timeout)
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
            # twice. The base's loops retry where that is safe.
            retry=Retry(NoBackoff(), 0),
        )
        self._maxlen = maxlen or 1
        self._instance = uuid.uuid4().hex[:16]
        self._primed = False  # the reader has read the stream once
        self._last: str | None = None  # the id of the last entry read; None: not primed yet
        self._n: int | None = None  # the number of the last entry read (None: unknown)
        self._read: list[Batch | Gap] = []  # read, not yet handed to the hub
        self._notifications: list[Notification] = []  # the batch being read
        self._ids: list[str] = []
        self._written_at: float | None = None  # when Redis added the first entry of those

    def __repr__(self) -> str:
        return f"RedisBroker({_redacted(self.url)!r}, stream={self.stream!r}, state={self._state!r})"

    # -- Broker ---------------------------------------------------------------------------

    what = "Redis"
    shared_cursors = True

    @property
    def initial_cursor(self) -> str:
        """``"0-0:0"``: before the stream's first entry."""
        return "0-0:0"

    def parse_cursor(self, cursor: str) -> int | None:
        """The ordering key of ``"<entry id>:<index>"``: the entry id's two numbers and the
        index, packed in one int."""
        entry_id, _, index = cursor.rpartition(":")
        return _key(entry_id, int(index)) if index.isdigit() else None

    async def start(self, history: int) -> None:
        """Start reading, priming the replay window with the ``history`` newest entries (see
        :meth:`Broker.start`); ``maxlen`` defaults to ``history``."""
        self._maxlen = self.maxlen or max(history, 1)
        self._last, self._read, self._notifications, self._ids = None, [], [], []  # prime again
        await super().start(history)

    async def close(self) -> None:
        """Close every connection of the pool, including one a cancelled read still holds."""
        # redis-py (8.1) can lose a cancellation that lands while a command is starting, and
        # the call then waits for its reply (a blocking XREAD: seconds). Closing the
        # connections ends it at once.
        await self._redis.connection_pool.disconnect(inuse_connections=True)
        await self._redis.aclose()

    # -- writing --------------------------------------------------------------------------

    async def write(self, batches: list[tuple[int, list[Notification]]], lost: str | None) -> None:
        """Add a gap marker if something was lost, then the batches, in one pipeline. Each
        entry carries a token (this broker, the batch's number) for :meth:`confirm`."""
        adds: list[dict[bytes, bytes | str]] = [] if lost is None else [{_GAP: lost}]
        adds += ({_BATCH: _batch_encoder.encode(batch), _TOKEN: f"{self._instance}:{number}"} for number, batch in batches)
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

    async def ping(self) -> None:
        """Load the script (Redis forgets it when it restarts)."""
        await self._redis.script_load(_ADD)

    async def confirm(self, batches: list[tuple[int, list[Notification]]]) -> int:
        """How many of ``batches`` (a prefix: a pipeline runs in order) are in the stream,
        judged by their tokens among the newest :data:`_CONFIRM_SCAN` entries."""
        tail = cast("_Entries", await self._redis.xrevrange(self.stream, count=_CONFIRM_SCAN))
        tokens = {fields.get(_TOKEN) for _, fields in tail}
        arrived = 0
        for number, _ in batches:
            if f"{self._instance}:{number}".encode() not in tokens:
                break
            arrived += 1
        return arrived

    # -- reading --------------------------------------------------------------------------

    async def read(self, history: int) -> AsyncGenerator[Batch | Gap | Ready, None]:
        """Prime from the stream's tail (first time) or check that nothing was lost while
        disconnected; then ``XREAD`` on from the last entry read."""
        if self._last is None:
            for event in await self._prime(history):
                yield event
        else:
            for event in await self._check_continuity(self._last):
                yield event
            yield Ready()
        last = self._last or "0-0"  # set by now
        while True:
            entries = await self._xread(last, block=True)
            # A full read: a backlog (this process was busy, or stalled). Read on without
            # blocking, and hand it all over at once (bounded).
            for reads in range(1, _CATCH_UP_READS + 1):
                for entry_id, fields in entries:
                    self._last = last = entry_id.decode()
                    try:
                        self._take(last, fields)
                    except Exception:  # noqa: BLE001 - one bad entry must not stop the reader
                        logger.exception("sqla_notify could not read stream entry %s", last,
                                         extra=log_fields("broker_bad_entry", broker=self))
                if len(entries) < _COUNT or reads == _CATCH_UP_READS:
                    break
                try:
                    entries = await self._xread(last, block=False)
                except Exception:  # noqa: BLE001 - the blocking read that follows will tell
                    break
            for event in self._flush():
                yield event

    async def _xread(self, last: str, *, block: bool) -> _Entries:
        reply = cast(
            "list[tuple[bytes, _Entries]] | None",
            await self._redis.xread({self.stream: last}, count=_COUNT, block=int(self.block * 1000) if block else None),
        )
        return reply[0][1] if reply else []

    async def _prime(self, history: int) -> list[Batch | Gap | Ready]:
        """The stream's tail, as history, then :class:`Ready`; remember the newest id."""
        tail = cast("_Entries", await self._redis.xrevrange(self.stream, count=max(history, 1)))
        self._n = None
        for entry_id, fields in reversed(tail):
            self._take(entry_id.decode(), fields, history=True)
        events: list[Batch | Gap | Ready] = list(self._flush(history=True))
        # Clients connected before this first read (Redis was unreachable when the hub
        # started): what others wrote meanwhile is in this history, not sent to them.
        stale = "" if not tail or self._primed else (
            "connected before this server could read the Redis stream: "
            "notifications committed meanwhile by other servers may be missing"
        )
        events.append(Ready(stale))
        self._primed = True
        self._last = tail[0][0].decode() if tail else "0-0"
        return events

    async def _check_continuity(self, last: str) -> list[Gap]:
        """After a lost connection: is the last entry read still there? If not, what came
        after it may be gone too (Redis restarted, or trimmed past it)."""
        # Nothing read yet ("0-0"): nothing proves that nobody wrote meanwhile.
        if last == "0-0" or not await self._redis.xrange(self.stream, last, last):
            self._n = None  # numbering starts afresh: do not count this gap twice
            return [Gap(
                "notifications were lost while this server was disconnected from Redis "
                "(Redis restarted without them, or trimmed them before they were read)"
            )]
        return []

    def _take(self, entry_id: str, fields: dict[bytes, bytes], *, history: bool = False) -> None:
        """Check one entry's number, then keep its notifications for :meth:`_flush` (or the
        gap it announces)."""
        previous = self._n
        try:
            self._n = n = int(fields[_N])
        except (KeyError, ValueError):
            self._n = None  # an older writer's entry, or not ours: the check starts after it
        else:
            if previous is not None and n > previous + 1:
                self._gap((
                    f"{n - previous - 1} batch(es) of notifications were trimmed from the Redis "
                    f"stream before this server read them: it fell more than the stream's "
                    f"{self._maxlen} entries behind"
                ), history)
            elif previous is not None and n <= previous:
                self._gap((
                    "the Redis stream started again from scratch (Redis lost its data, or the "
                    "key was deleted): notifications written before that were lost"
                ), history)
        if _GAP in fields:
            self._gap(f"another server lost notifications: {fields[_GAP].decode(errors='replace')}", history)
            return
        try:
            batch = _batch_decoder.decode(fields[_BATCH])
        except (KeyError, msgspec.DecodeError) as exc:
            logger.error("sqla_notify skipped stream entry %s, which is not a batch: %s", entry_id, exc,
                         extra=log_fields("broker_bad_entry", broker=self))
            return
        if len(batch) > 1 << _INDEX_BITS:
            logger.error("sqla_notify cut a batch of %d at %d notifications", len(batch), 1 << _INDEX_BITS,
                         extra=log_fields("broker_batch_cut", broker=self))
            batch = batch[: 1 << _INDEX_BITS]
        if not self._notifications:  # the hand-over's oldest entry: when Redis added it
            ms = entry_id.partition("-")[0]
            self._written_at = int(ms) / 1000 if ms.isdigit() else None
        self._notifications += batch
        self._ids += [f"{entry_id}:{index}" for index in range(len(batch))]

    def _gap(self, reason: str, history: bool) -> None:
        self._cut(history)  # what came before the gap goes first
        self._read.append(Gap(reason, history))

    def _cut(self, history: bool) -> None:
        if self._notifications:
            self._read.append(Batch(self._notifications, self._ids, history, self._written_at))
            self._notifications, self._ids = [], []

    def _flush(self, *, history: bool = False) -> list[Batch | Gap]:
        """What was read: one hand-over (whole transactions only), with the gaps in place."""
        self._cut(history)
        events, self._read = self._read, []
        return events
