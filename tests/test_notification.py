"""The Notification record and its JSON encoding."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import msgspec
import pytest

from sqla_notify import Notification, encode


def test_json_shape() -> None:
    assert encode(Notification("forums", "insert", {"id": 7})) == (
        b'{"collection":"forums","action":"insert","data":{"id":7}}'
    )
    assert encode(Notification("forums", "reload")) == b'{"collection":"forums","action":"reload"}'


def test_immutable_and_hashable_by_value() -> None:
    n = Notification("forums", "insert", {"id": 7})
    with pytest.raises(AttributeError):
        n.action = "delete"  # type: ignore[misc]
    assert n == Notification("forums", "insert", {"id": 7})


def test_rich_values() -> None:
    n = Notification("e", "insert", {
        "at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "day": dt.date(2026, 1, 2),
        "amount": Decimal("1.10"),
        "uid": uuid.UUID(int=255),
        "raw": b"\x00\x01",
        "tags": {"a"},
    })
    assert msgspec.json.decode(encode(n))["data"] == {
        "at": "2026-01-02T03:04:05Z", "day": "2026-01-02", "amount": "1.10",
        "uid": "00000000-0000-0000-0000-0000000000ff", "raw": "AAE=", "tags": ["a"],
    }


def test_unencodable_value_falls_back_to_str() -> None:
    class Point:
        def __str__(self) -> str:
            return "POINT(1 2)"

    assert encode(Notification("geo", "insert", {"where": Point(), "id": 1})) == (
        b'{"collection":"geo","action":"insert","data":{"where":"POINT(1 2)","id":1}}'
    )


def test_plain_msgspec_round_trip() -> None:
    n = Notification("forums", "delete", {"id": 1})
    assert msgspec.json.decode(msgspec.json.encode(n), type=Notification) == n


def test_old_and_filter_values_are_encoded_when_present_and_left_out_of_repr_when_absent() -> None:
    n = Notification("posts", "update", {"id": 1}, {"forum_id": 7}, {"forum_id": 7}, {"forum_id": 8})
    assert encode(n) == (
        b'{"collection":"posts","action":"update","data":{"id":1},"old":{"forum_id":7},'
        b'"filter_before":{"forum_id":7},"filter_after":{"forum_id":8}}'
    )
    assert msgspec.json.decode(encode(n), type=Notification) == n
    assert repr(n) == (
        "Notification(collection='posts', action='update', data={'id': 1}, old={'forum_id': 7}, "
        "filter_before={'forum_id': 7}, filter_after={'forum_id': 8})"
    )
    assert repr(Notification("f", "reload")) == "Notification(collection='f', action='reload', data=None)"
