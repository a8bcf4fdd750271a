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

    Rows of a model with ``NotifyOptions(filter_by=...)`` carry the values of those columns
    before and after the change, for the hub to choose the subscribers whose filters match;
    with ``NotifyOptions(old=True)``, updates carry ``old``. Each of these fields is omitted
    when ``None``, so a notification without them encodes exactly as before they existed.

    Instances are immutable and are not tracked by the garbage collector (``gc=False``): a
    commit of 10,000 rows creates 10,000 of them, and a collector pass over them would cost
    more than building them.
    """

    collection: str
    action: str
    data: dict[str, Any] | None = None
    #: for an update, the previous values (before the transaction) of the columns that
    #: changed, excluded columns and columns whose previous value capture did not know left
    #: out; ``None`` for other actions and for models without ``NotifyOptions(old=True)``
    old: dict[str, Any] | None = None
    #: the ``filter_by`` columns' values before the change (at the start of the transaction),
    #: for updates and deletes. A column that is absent has an unknown value, and so does
    #: every column when the field is ``None`` on an update or delete (a bulk ``UPDATE``
    #: knows only the new values; a statement without ``RETURNING`` knows neither): such a
    #: row must be treated as possibly matching any filter. Inserts have none.
    filter_before: dict[str, Any] | None = None
    #: the ``filter_by`` columns' values after the change, for inserts and updates, with the
    #: same rule for unknown values. Deletes have none.
    filter_after: dict[str, Any] | None = None
    #: the id of the client connection whose request caused the change (its ``welcome``'s
    #: ``connection``), so that the hub does not send it back to that connection (echo
    #: suppression); ``None``: deliver to everyone. Never sent to browsers.
    origin: str | None = None

    def __repr__(self) -> str:
        # The later fields only when set: most notifications read as they always did.
        text = f"Notification(collection={self.collection!r}, action={self.action!r}, data={self.data!r}"
        for name in ("old", "filter_before", "filter_after", "origin"):
            value = getattr(self, name)
            if value is not None:
                text += f", {name}={value!r}"
        return text + ")"


def encode(notification: Notification) -> bytes:
    """Encode ``notification`` as compact JSON.

    Values msgspec cannot encode natively are written as their ``str()``, so encoding never
    fails because of a column's type.
    """
    return ENCODER.encode(notification)
