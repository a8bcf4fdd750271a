"""The contract between a :class:`~sqla_notify.Hub` and a broker that shares it across processes.

With a broker, the hub does not deliver what its own process commits: it hands each batch to
the broker, and every process (this one included) delivers what it reads back. Each
notification is so delivered once per process, in the broker's order, with the broker's
cursor: a client may resume on any process.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from ._notification import Notification

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ("Broker",)


class Broker(abc.ABC):
    """Carries committed batches between the hubs of several processes.

    The hub calls every method on its event loop. A broker must never block or fail a
    commit: :meth:`publish` only queues, and a broker that loses notifications says so with
    :meth:`Hub._gap` (connected clients get ``resync``) rather than staying silent.
    """

    @abc.abstractmethod
    async def start(self, hub: Hub) -> None:
        """Begin reading into ``hub`` (with ``hub._ingest``); return at once, even if the
        broker is unreachable (connect in the background, with backoff)."""

    @abc.abstractmethod
    def publish(self, notifications: list[Notification]) -> None:
        """Queue one committed batch, keeping the order of calls. Must not block."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop reading and writing; what is still queued may be dropped."""

    @abc.abstractmethod
    def parse_cursor(self, cursor: str) -> int | None:
        """The ordering key of one of this broker's cursors, or ``None`` if it is not one."""

    @property
    @abc.abstractmethod
    def initial_cursor(self) -> str:
        """The cursor to report before anything was read."""

    @property
    @abc.abstractmethod
    def state(self) -> str:
        """A short word for :attr:`HubStats.broker`, e.g. ``"connected"``."""
