"""The one JSON encoder: lenient, built once, shared by every part that writes JSON."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ("ENCODER", "lenient")


def lenient(value: Any) -> Any:
    """msgspec's ``enc_hook``: a value msgspec cannot encode becomes its ``str()``.

    msgspec natively handles datetime, date, time, timedelta, Decimal, UUID, Enum, bytes, set
    and friends. Anything else becomes its ``str()`` rather than failing the whole batch: one
    odd column type must not cost every client its notification.
    """
    return str(value)


#: Encodes notifications, wire messages and broker payloads alike (one per process: msgspec
#: encoders are reusable and cheap to call, expensive to build).
ENCODER = msgspec.json.Encoder(enc_hook=lenient)
