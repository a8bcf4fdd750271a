"""Share notifications across processes through PostgreSQL ``LISTEN``/``NOTIFY``.

.. code-block:: python

    hub = Hub(broker="postgresql://127.0.0.1/test")          # or:
    hub = Hub(broker=PostgresBroker("postgresql://...", channel="myapp"))
    notifier = Notifier(hub)                                  # as always

**Atomic with the data.** For a session attached to ``Notifier(hub)``, the batch is sent
with ``SELECT pg_notify(...)`` *inside* the committing transaction, on its own connection,
just before ``COMMIT`` (after the last flush). PostgreSQL delivers it if and only if the
transaction commits: nothing is announced for a rollback, and nothing is lost if the process
dies right after the commit. Every process (this one included) ``LISTEN``\\s on a connection
of its own and delivers what arrives, so each client gets each notification once. What the
ORM does not see, ``notify()`` without a session, goes out on a separate connection.

**A commit stores and announces, or raises.** If ``pg_notify`` fails inside the transaction
(no ``EXECUTE`` privilege on it, a full notification queue, a lost connection), the error
propagates and ``commit()`` raises it: nothing is stored, nothing is announced. Swallowing
it is not an option: a failed statement aborts a PostgreSQL transaction, and PostgreSQL then
turns its ``COMMIT`` into a ``ROLLBACK`` *without an error*, so ``commit()`` would return
normally without the data. Running the ``NOTIFY``\\s under a ``SAVEPOINT`` would keep the
transaction alive instead, for two more round trips on every commit, and it would still
raise for a lost connection; failures that no payload can avoid are rare enough that
failing the commit is the right price. What can fail before any SQL runs (encoding the
batch) does not fail the commit: that batch is published after it instead, as for SQLite.

**Encoding and the 8,000-byte limit.** A ``NOTIFY`` payload must stay under 8,000 bytes *in
the server's encoding*, and a character that encoding cannot represent (``'€'`` in a
``LATIN1`` database) makes ``pg_notify`` fail. Payloads are therefore pure-ASCII JSON (other
characters escaped as ``\\uXXXX``, surrogate pairs beyond the BMP): the same bytes in every
server encoding, so their size is their length and conversion cannot fail. A batch larger
than one payload is split into several ``NOTIFY``\\s of the same transaction, which
PostgreSQL delivers together and in order; each part carries the batch's size, and every
listener reassembles the parts and hands the whole transaction to the hub at once. A part
that breaks the sequence (the listener lost its connection halfway) is never delivered
silently: the incomplete batch is dropped and clients are told to ``resync``. A single
notification that is larger on its own (a big ``"row"`` payload) is sent without its
``data``: a collection-level notification, which clients treat as "reload the collection".
Nothing is dropped and the commit never fails because of size.

**Cost.** At commit, ``NOTIFY`` takes a lock that serialises the commits of every
transaction that notified, database-wide, while their notifications are queued: fine for
hundreds of commits per second, a ceiling for thousands. Listeners must keep up, or the
notification queue (8 GB) fills and ``NOTIFY`` (so the commit) fails. Prefer
:mod:`sqla_notify.redis` for high commit rates, or when clients should resume on any process.

**Cursors.** Every listener receives the notifications in commit order, and each batch
carries a random id, so every process names a notification alike (``"<batch id>:<index>"``):
a client may resume on any process whose replay window holds its last id. ``LISTEN``/
``NOTIFY`` keeps no log, though: a process started after that id, or a window that has moved
past it, answers ``resync``.

**Who may write to the channel.** PostgreSQL has no privileges on channels: *any* role
that can connect to the database can ``LISTEN`` on the channel (and read every payload) and
``NOTIFY`` on it (and make every process deliver notifications it made up, to every
client). With ``secret=``, every payload carries an HMAC-SHA256 tag (see
:mod:`sqla_notify._brokers.mac`) over the channel and its exact text, and a listener drops a payload
whose tag is missing or wrong, and a copy of one of the last :data:`~sqla_notify._brokers.mac.SEEN`
payloads it accepted: forged batches and gap markers are never delivered, and are counted
(:attr:`PostgresBroker.rejected`) and logged at most once a minute per kind, without the
payload. The secret does not hide payloads from roles that can ``LISTEN``, nor stop one from
sending a copy of an older payload again (beyond that window), nor from filling the
notification queue.

**Starting and reconnecting.** ``start()`` waits for the listener's first attempt, at most
``connect_timeout`` seconds, so that normally the process listens before it serves. If a
client connected before the first ``LISTEN`` succeeded (PostgreSQL was down at start), it
cannot know what was committed meanwhile: it is told to ``resync`` then. After the
listening connection is lost (a restart, ``pg_terminate_backend``), notifications sent
meanwhile are gone: on reconnection every client is told to ``resync``, with the cause and
the length of the outage in the reason (``hub.stats().gaps`` counts both).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Union

import msgspec
from sqlalchemy import text

try:
    import psycopg
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f'sqla_notify.postgres needs psycopg 3 ({exc.name} is missing): pip install "sqla_notify[postgres]"'
    ) from exc

from ._brokers.base import Batch, Broker, Gap, Ready
from ._brokers.mac import TAG_LEN, Secret, Seen, Signer, untagged
from ._brokers.outbox import describe
from ._json import ENCODER
from ._notify.notification import Notification
from ._report import fields
from ._report import Throttle

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ("PostgresBroker",)

logger = logging.getLogger("sqla_notify")

#: PostgreSQL refuses payloads of 8,000 bytes or more.
MAX_PAYLOAD = 7999
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
_encoder = ENCODER
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _escape(match: re.Match[str]) -> str:
    # The json module's own C escaper: "\u20ac", surrogate pairs beyond the BMP.
    return encode_basestring_ascii(match.group())[1:-1]


def _ascii(encoded: bytes) -> bytes:
    """JSON ``encoded`` with every non-ASCII character escaped. Outside strings, JSON is
    ASCII already; inside, ``\\uXXXX`` means the same character."""
    if encoded.isascii():
        return encoded
    return _NON_ASCII.sub(_escape, encoded.decode()).encode()


class _Payload(msgspec.Struct):
    """One NOTIFY payload: part of a batch (``i``: its id, ``o``: the offset of ``b``, ``n``:
    the batch's size, 0 from versions that did not send it), or a gap marker (``gap``: why
    notifications were lost; ``i``: its own id, or none from older versions)."""

    i: str = ""
    #: when the batch was sent (``time.time()`` of the sender, just before its COMMIT)
    t: float = 0.0
    o: int = 0
    n: int = 0
    b: list[Notification] = []
    gap: Union[str, None] = None


_decoder = msgspec.json.Decoder(_Payload)
#: Bytes of a payload's envelope with 16 hex digits of id, offset and size of up to 9 digits.
_ENVELOPE = len('{"i":"0123456789abcdef","t":1234567890.123456,"o":123456789,"n":123456789,"b":[]}')


class PostgresBroker(Broker):
    """Carry committed batches between processes with PostgreSQL ``LISTEN``/``NOTIFY``.

    :param url: where to ``LISTEN``: a libpq URL or conninfo. A SQLAlchemy URL
        (``postgresql+psycopg://...``) is accepted too. Use the database your sessions
        commit to: ``NOTIFY`` is per database.
    :param channel: the channel name; one per application (all its processes share it).
    :param max_pending: ``notify()`` batches kept while PostgreSQL is unreachable; beyond
        it the oldest are dropped and clients are told to ``resync``.
    :param connect_timeout: seconds before an attempt to connect counts as failed.
    :param secret: authenticate payloads: a str or bytes of at least 16 bytes, the same in
        every process (e.g. ``os.environ["SQLA_NOTIFY_SECRET"]``, made once with
        ``secrets.token_urlsafe(32)``), or a list of them to change secrets (the first signs,
        all are accepted). Payloads without a valid tag are dropped, as are copies of recent
        ones (see the module's documentation). ``None``: any role that can connect to the
        database can make every process deliver what it likes.
    :raises ValueError, TypeError: for a bad channel name, ``max_pending`` or ``secret``.
    """

    transactional = True
    what = "PostgreSQL"

    def __init__(
        self,
        url: str = "postgresql://127.0.0.1/postgres",
        *,
        channel: str = "sqla_notify",
        max_pending: int = 10_000,
        connect_timeout: float = 2.0,
        secret: Secret | None = None,
    ) -> None:
        if not isinstance(channel, str) or not channel or len(channel.encode()) > 63:
            raise ValueError(f"PostgresBroker(channel=...) expected a name of 1 to 63 bytes, got {channel!r}")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"PostgresBroker(max_pending=...) expected an int >= 1, got {max_pending!r}")
        scheme, sep, rest = url.partition("://")
        self.url = f"{scheme.split('+')[0]}{sep}{rest}" if sep else url  # drop "+psycopg"
        super().__init__(max_pending=max_pending, connect_timeout=connect_timeout)
        self.channel = channel
        self._conn: psycopg.AsyncConnection[Any] | None = None  # for notify() batches
        self._listened = False  # once listening, a lost connection means missed notifications
        self._down_since, self._cause = 0.0, ""  # when and why the listener was lost
        self._partial: tuple[str, int, list[Notification]] | None = None  # id, size, parts so far
        self._signer = None if secret is None else Signer(
            secret, domain=f"sqla_notify postgres {channel}", owner="PostgresBroker(secret=...)"
        )
        self._seen = Seen()  # "<batch id>:<offset>" of the payloads accepted lately (with a secret)
        self._rejected = 0
        self._throttle = Throttle()

    def __repr__(self) -> str:
        return f"PostgresBroker(channel={self.channel!r}, state={self._state!r})"

    @property
    def rejected(self) -> int:
        """Payloads dropped so far because their tag was missing or wrong, or because they
        were copies of payloads already delivered (only with ``secret``)."""
        return self._rejected

    # -- writing --------------------------------------------------------------------------

    def payloads(self, notifications: list[Notification]) -> list[str]:
        """``notifications`` as ``NOTIFY`` payloads, each under :data:`MAX_PAYLOAD` bytes and
        pure ASCII: ``{"i": batch id, "t": when it was sent (the sender's ``time.time()``),
        "o": offset of the first, "n": size of the batch, "b": [notifications]}``, with its
        tag in front if there is a ``secret``. The batch id, random, names the batch the same
        way in every process.

        :raises TypeError: for data that cannot be encoded at all (a dict with tuple keys).
        """
        batch_id = uuid.uuid4().hex[:16]
        stamp = time.time()  # just before the COMMIT: for the broker lag (docs/operations.md)
        total = len(notifications)
        room = MAX_PAYLOAD - (TAG_LEN if self._signer is not None else 0)
        encoded = []
        for n in notifications:
            one = _ascii(_encoder.encode(n))
            if len(one) > room - _ENVELOPE:
                logger.info("sqla_notify sent a %s %s without its data, too large for NOTIFY", n.collection, n.action,
                            extra=fields("payload_too_large", collection=n.collection, broker=self))
                # Filter values are small and tell the hub whom the row concerns; without
                # them every filtered subscriber would get it. old goes with data.
                one = _ascii(_encoder.encode(Notification(
                    n.collection, n.action, filter_before=n.filter_before, filter_after=n.filter_after,
                    origin=n.origin,
                )))
                if len(one) > room - _ENVELOPE:  # huge filter values: "some row changed"
                    one = _ascii(_encoder.encode(Notification(n.collection, n.action, origin=n.origin)))
            encoded.append(one)
        out: list[str] = []
        start = 0
        while start < len(encoded):
            end, size = start, _ENVELOPE
            while end < len(encoded) and size + len(encoded[end]) + 1 <= room:
                size += len(encoded[end]) + 1
                end += 1
            end = max(end, start + 1)  # one always fits: see above
            body = b",".join(encoded[start:end]).decode()
            out.append(self._sign(f'{{"i":"{batch_id}","t":{stamp:.6f},"o":{start},"n":{total},"b":[{body}]}}'))
            start = end
        return out

    def _sign(self, payload: str) -> str:
        return payload if self._signer is None else self._signer.sign(payload)

    def _gap_payload(self, lost: str) -> str:
        """A gap marker: other processes lost notifications because of ``lost``."""
        marker = {"gap": lost, "i": uuid.uuid4().hex[:16]}  # named, to tell a copy
        return self._sign(_ascii(_encoder.encode(marker)).decode())

    def publish_in_transaction(self, connection: Connection, notifications: list[Notification]) -> bool:
        """``pg_notify`` on the committing transaction's connection (PostgreSQL only).

        :raises sqlalchemy.exc.DBAPIError: if a ``pg_notify`` failed. The transaction is
            aborted then, and its ``COMMIT`` would be a silent ``ROLLBACK``: ``commit()``
            must raise this instead of returning without the data.
        """
        if connection.dialect.name != "postgresql":
            return False  # e.g. a SQLite session: published after its commit instead
        try:
            payloads = self.payloads(notifications)
        except Exception:  # noqa: BLE001 - no SQL ran: the transaction is intact
            logger.exception("sqla_notify could not encode a batch for NOTIFY; publishing it after the commit",
                             extra=fields("broker_encode_error", broker=self))
            return False
        for payload in payloads:
            connection.execute(_NOTIFY, {"channel": self.channel, "payload": payload})
        return True

    async def write(self, batches: list[tuple[int, list[Notification]]], lost: str | None) -> None:
        """``pg_notify`` a gap marker (if ``lost``) and the batches, in one transaction:
        listeners receive them together, in order."""
        conn = await self._writer_connection()
        async with conn.transaction():  # one transaction: delivered together, in order
            if lost is not None:
                await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, self._gap_payload(lost)))
            for _, batch in batches:
                for payload in self.payloads(batch):
                    await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    async def ping(self) -> None:
        """``SELECT 1`` on the connection for ``notify()`` batches."""
        conn = await self._writer_connection()
        await conn.execute("SELECT 1")

    async def _writer_connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._conn.close()  # broken: release what is left of it
            self._conn = await self._connect()
        return self._conn

    async def close(self) -> None:
        """Close the connection for ``notify()`` batches (the listener's closes with
        :meth:`read`)."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        # TCP keep-alives: a listener on a silently dead connection would wait forever.
        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=max(1, round(self.connect_timeout)),
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
            application_name=f"sqla_notify {self.channel}",  # to find it in pg_stat_activity
        )

    # -- reading --------------------------------------------------------------------------

    async def start(self, history: int) -> None:
        """Start listening and writing in the background (see :meth:`Broker.start`)."""
        self._listened, self._partial = False, None  # clients that come first will be told
        await super().start(history)

    async def read(self, history: int) -> AsyncGenerator[Batch | Gap | Ready, None]:
        """``LISTEN`` on a connection of its own and yield what arrives. ``LISTEN``/``NOTIFY``
        keeps no log: no history, and what was sent while the listener was away is a gap."""
        self._partial = None  # what a cancelled read left
        async with await self._connect() as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            if not self._listened:
                yield Ready("clients connected before the PostgreSQL listener was up; "
                            "what was committed meanwhile was not received")
            else:
                yield Gap(f"the PostgreSQL listener was disconnected for "
                          f"{time.monotonic() - self._down_since:.1f} s ({self._cause}); "
                          f"notifications sent meanwhile were lost")
                yield Ready()
            self._listened = True
            try:
                async for notify in conn.notifies():
                    try:
                        events = self._deliver(notify.payload)
                    except Exception:  # noqa: BLE001 - one bad payload must not stop the listener
                        logger.exception("sqla_notify could not deliver a NOTIFY payload",
                                         extra=fields("broker_bad_entry", broker=self))
                        continue
                    for event in events:
                        yield event
                raise psycopg.OperationalError("the listening connection ended")  # as if lost
            except Exception as exc:  # the outage begins: say why in the gap that ends it
                self._down_since, self._cause = time.monotonic(), " ".join(describe(exc).split())  # one line
                if self._partial is not None:
                    batch_id, size, got = self._partial
                    self._cause += f"; {len(got)} of the {size} notifications of batch {batch_id} had arrived"
                    self._partial = None
                raise

    def _deliver(self, payload: str) -> list[Batch | Gap]:
        """What one payload means: nothing yet (a part of a batch), a batch, or gaps."""
        if self._signer is None:
            payload = untagged(payload)  # signed by a process with a secret: unchecked here
        else:
            text = self._signer.verify(payload)
            if text is None:
                self._reject("its tag was missing or wrong (forged, or sent without this secret)")
                return []
            payload = text
        try:
            part = _decoder.decode(payload)
        except msgspec.DecodeError as exc:
            logger.error("sqla_notify skipped a NOTIFY payload on %r that is not a batch: %s", self.channel, exc,
                         extra=fields("broker_bad_entry", broker=self))
            return []
        if self._signer is not None and not self._seen.add(f"{part.i}:{part.o}"):
            self._reject("it was a copy of a payload delivered already")
            return []
        events: list[Batch | Gap] = []
        partial = self._partial
        if partial is not None and (part.gap is not None or part.i != partial[0] or part.o != len(partial[2])):
            # The parts of one transaction arrive together and in order; anything else means
            # some went missing. Delivering the rest would tear the transaction apart.
            self._partial = None
            batch_id, size, got = partial
            events.append(Gap(f"only {len(got)} of the {size} notifications of batch {batch_id} arrived "
                     f"(then {'a gap marker' if part.gap is not None else f'batch {part.i} at {part.o}'})"))
        if part.gap is not None:
            events.append(Gap(f"another process lost notifications: {part.gap}"))
            return events
        if part.n == 0 or (part.o == 0 and len(part.b) == part.n):
            # All of a batch (or a part from a version that did not send sizes: as it is).
            events.append(self._batch(part.i, part.o, part.b, part.t))
            return events
        if self._partial is None:
            if part.o != 0:
                events.append(Gap(f"batch {part.i} arrived from its notification {part.o} on, not from the first"))
                return events
            self._partial = (part.i, part.n, list(part.b))
            return events
        _, size, got = self._partial
        got += part.b
        if len(got) >= size:
            self._partial = None
            events.append(self._batch(part.i, 0, got, part.t))
        return events

    def _reject(self, why: str) -> None:
        # Anyone who can connect to the database can send these, as often as they like.
        self._rejected += 1
        missed = self._throttle.due(why)
        if missed is not None:
            logger.warning("sqla_notify dropped a NOTIFY payload on channel %r: %s%s", self.channel, why,
                           f" ({missed} more since the last report)" if missed else "",
                           extra=fields("broker_rejected", broker=self))

    @staticmethod
    def _batch(batch_id: str, offset: int, notifications: list[Notification], written_at: float) -> Batch:
        # Every process receives the parts in commit order, so these names are the same
        # everywhere: a client may resume on another process (within its window). One batch
        # per transaction: the hub never splits it (a client too far behind gets resync).
        return Batch(
            notifications, [f"{batch_id}:{offset + k}" for k in range(len(notifications))],
            written_at=written_at or None,  # 0.0: sent by a version that did not say
        )
