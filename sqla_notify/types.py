"""The shapes of the callables that sqla_notify calls: one place for every hook's type.

Like :mod:`starlette.types`: import these to annotate your own hooks.

* :data:`SinkCallable` receives committed batches (:class:`~sqla_notify.Notifier`'s sink);
* :class:`PayloadFunction` computes a row's ``data`` (:class:`~sqla_notify.NotifyOptions`);
* :class:`Authorize` filters what one client sees (:meth:`~sqla_notify.Hub.subscribe`);
* :data:`Authenticate` admits a connection (:func:`~sqla_notify.fastapi.notify_router`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, Union

from ._notify.notification import Notification

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = ("Authenticate", "Authorize", "PayloadFunction", "PayloadMode", "SinkCallable")

#: Any plain callable taking one transaction's notifications can serve as a sink.
SinkCallable = Callable[[list[Notification]], object]

#: What a notification's ``data`` holds: see :class:`~sqla_notify.NotifyOptions`.
PayloadMode = Literal["pk", "changes", "row"]


class PayloadFunction(Protocol):
    """Computes a custom payload for one captured row.

    Called during the flush (the only time the row's values are safe to read; the session
    may run SQL here if it must, e.g. to load a relationship) with the ORM instance, the
    row's net action within the transaction and the attribute keys that changed (every
    loaded column for an insert, none for a delete). Return a mapping, or ``None`` for no
    payload. Keys listed in :attr:`NotifyOptions.exclude` are removed from the result.
    """

    def __call__(
        self, obj: Any, action: str, changed: frozenset[str], /
    ) -> Mapping[str, Any] | None: ...


class Authorize(Protocol):
    """Decides whether ``principal`` may see ``notification``; must be fast and not block."""

    def __call__(self, principal: Any, notification: Notification, /) -> bool: ...


#: Returns the principal for a connection (any object, or a
#: :class:`~sqla_notify.fastapi.Credentials` for one that expires), or ``None`` (``False``,
#: ``""``, any false value) to refuse it. May be ``async``. It sees the headers, cookies and
#: query of the handshake or request.
Authenticate = Callable[["HTTPConnection"], Union[Any, Awaitable[Any]]]
