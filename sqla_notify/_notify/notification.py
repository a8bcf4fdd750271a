"""The notification record and its JSON encoding."""

from __future__ import annotations

from typing import Any

import msgspec

from .._json import ENCODER

__all__ = ("Notification", "encode")


class Notification(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One change to announce: *what* (``collection``), *how* (``action``) and an optional payload.

    Notifications from change capture use the actions ``"insert"``, ``"update"`` and
    ``"delete"``; manual ones (:meth:`Notifier.notify`) may use any action. ``data`` is the
    payload chosen by the model's :class:`NotifyOptions` (by default the primary key); it is
    ``None`` and omitted from JSON when the rows affected are not known, e.g. for a bulk
    ``UPDATE`` on a database without ``RETURNING``, which means "reload the collection".

    >>> encode(Notification("forums", "insert", {"id": 7}))
    b'{"collection":"forums","action":"insert","data":{"id":7}}'

    Instances are immutable and are not tracked by the garbage collector (``gc=False``): a
    commit of 10,000 rows creates 10,000 of them, and a collector pass over them would cost
    more than building them.
    """

    collection: str
    action: str
    data: dict[str, Any] | None = None


def encode(notification: Notification) -> bytes:
    """Encode ``notification`` as compact JSON.

    Values msgspec cannot encode natively are written as their ``str()``, so encoding never
    fails because of a column's type.
    """
    return ENCODER.encode(notification)
