"""What gets published: secret primary keys never leave, excluded names are matched as
attribute keys and column names alike, and the router sends browsers only the collections
the app made public."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from sqla_notify import Hub
from sqla_notify.fastapi import ALL, notify_router

from . import rawws
from .models import Account, ApiKey, ResetCode
from .support.recording import Recorder
from .support.servers import Server

pytestmark = pytest.mark.anyio


def test_an_excluded_primary_key_never_leaves(factory: sessionmaker[Session], sink: Recorder) -> None:
    with factory.begin() as session:
        session.add(ApiKey(key="sk-SECRET", owner="ann"))
        session.add(ResetCode(code="RESET-SECRET", user="ann"))
    with factory.begin() as session:
        api_key = session.get(ApiKey, "sk-SECRET")
        assert api_key is not None
        api_key.owner = "bob"
        reset = session.get(ResetCode, "RESET-SECRET")
        session.delete(reset)
    batches = sink.take()
    assert "SECRET" not in repr(batches)
    # The rest of the payload, or no data at all ("reload the collection").
    assert batches == [
        [("api_keys", "insert", {"owner": "ann"}), ("reset_codes", "insert", None)],
        [("api_keys", "update", {"owner": "bob"}), ("reset_codes", "delete", None)],
    ]


def test_payload_functions_lose_excluded_keys_and_column_names(
    factory: sessionmaker[Session], sink: Recorder
) -> None:
    with factory.begin() as session:
        session.add(Account(id=1, name="ann", secret="HASH-SECRET"))
    assert sink.take() == [[("accounts", "insert", {"id": 1, "name": "ann"})]]


def test_the_router_needs_to_be_told_what_is_public() -> None:
    with pytest.raises(TypeError, match=r"needs collections=.*collections=ALL"):
        notify_router(Hub())
    with pytest.raises(TypeError, match=r"expected a collection of non-empty names or ALL, got 'forums'"):
        notify_router(Hub(), collections="forums")
    assert notify_router(Hub(), collections=ALL) is not None


async def test_browsers_receive_only_public_collections(tmp_path: Path) -> None:
    server = Server(tmp_path, APP_COLLECTIONS="forums")
    everything = rawws.connect(server.port)  # asks for nothing in particular
    asking = rawws.connect(server.port, "/notify/ws?collections=api_keys")
    try:
        assert rawws.read_message(everything)["type"] == "welcome"
        assert rawws.read_message(asking)["type"] == "welcome"
        error = rawws.read_message(asking)
        assert error["type"] == "error" and "unknown collection" in error["message"], error
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            await http.post("/burst", params={"count": 3, "collection": "api_keys", "name": "SECRET"})
            await http.post("/burst", params={"count": 1, "collection": "forums", "name": "public"})
        first = rawws.read_message(everything)  # nothing of api_keys came before it
        assert (first["collection"], first["data"]["name"]) == ("forums", "public")
    finally:
        everything.close()
        asking.close()
        server.stop()
