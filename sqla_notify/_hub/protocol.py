"""The wire protocol between the hub and its clients: its messages, as msgspec structs.

The protocol itself (messages both ways, cursors, resync, limits, close codes) is described
once, in the docs: ``docs/protocol.md``.

Encoders and the decoder are built once (msgspec's advice); each notification is encoded once
for every client, never once per client.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from typing import Any, Union

import msgspec

from .._json import ENCODER

__all__ = (
    "ClientMessage", "Filtered", "MAX_ERROR_LENGTH", "SubscriptionEntry", "clip", "decode_client_message",
    "decode_entries", "encode", "quote_names",
)

#: the longest ``error`` message, in characters: an error quotes what the client sent, cut
#: short, so that a client cannot make the server hold copies of its input
MAX_ERROR_LENGTH = 400
_QUOTED_NAMES = 5  # names an error quotes, at most
_QUOTED_NAME_LENGTH = 40  # characters of each


class NotificationFrame(msgspec.Struct, omit_defaults=True, gc=False):
    """A notification as sent: its cursor first. Filter values stay on the server."""

    id: str
    collection: str
    action: str
    data: Union[dict[str, Any], None] = None
    old: Union[dict[str, Any], None] = None
    #: ``"enter"`` or ``"leave"``: an update that moved the row into or out of the client's
    #: filtered subscription to this collection
    move: Union[str, None] = None
    #: ``True``: sent to catch up a subscription made with ``since`` (older than frames
    #: already sent: it does not move the connection's position)
    replay: Union[bool, None] = None


class Welcome(msgspec.Struct, tag="welcome", tag_field="type"):
    cursor: str
    #: this connection's id, for the ``X-Notify-Connection`` header (echo suppression)
    connection: str


class Subscribed(msgspec.Struct, tag="subscribed", tag_field="type"):
    collections: Union[list[Union[str, dict[str, Any]]], None]


class Error(msgspec.Struct, tag="error", tag_field="type"):
    message: str


class Resync(msgspec.Struct, tag="resync", tag_field="type"):
    cursor: str
    reason: str


Scalar = Union[str, int, float, bool, None]


class Filtered(msgspec.Struct, forbid_unknown_fields=True):
    """A subscription entry naming a filter: ``{"collection": ..., "where": {...}}``;
    without ``where``, the whole collection."""

    collection: str
    where: Union[dict[str, Union[Scalar, list[Scalar]]], msgspec.UnsetType] = msgspec.UNSET


#: one entry of ``collections``: a name, or a filter
SubscriptionEntry = Union[str, Filtered]


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type", forbid_unknown_fields=True):
    collections: list[SubscriptionEntry]
    since: Union[str, None] = None


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type", forbid_unknown_fields=True):
    collections: list[SubscriptionEntry]


ClientMessage = Union[Subscribe, Unsubscribe]

_encoder = ENCODER
_decoder: msgspec.json.Decoder[Subscribe | Unsubscribe] = msgspec.json.Decoder(ClientMessage)
_entries_decoder = msgspec.json.Decoder(list[SubscriptionEntry])


def encode(message: msgspec.Struct) -> str:
    """Encode a server message as the text of one WebSocket frame."""
    return _encoder.encode(message).decode()


#: ``encode`` without the ``str``: for the hub's per-notification path (one call less)
encode_bytes = _encoder.encode


def decode_client_message(text: str | bytes) -> Subscribe | Unsubscribe:
    """Decode one client message.

    :raises ValueError: with msgspec's description of what was expected and what arrived,
        e.g. ``Expected `array`, got `str` - at `$.collections```.
    """
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ValueError(str(exc)) from None


def decode_entries(text: str) -> list[SubscriptionEntry]:
    """Decode the JSON form of the ``collections=`` query parameter: a list of entries.

    :raises ValueError: with msgspec's description of what was expected and what arrived.
    """
    try:
        return _entries_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with ``…`` where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def quote_names(names: Collection[str]) -> str:
    """``names`` as an error message quotes them: the first few, each cut short, and how many
    more there were, e.g. ``['aaaa…', 'b'] and 3 more``."""
    shown = [clip(n, _QUOTED_NAME_LENGTH) for n in itertools.islice(names, _QUOTED_NAMES)]
    more = len(names) - len(shown)
    return f"{shown!r}" + (f" and {more} more" if more else "")
