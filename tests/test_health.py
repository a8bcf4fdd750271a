"""sqla_notify.health: liveness and readiness, in each state of the hub and its broker."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sqla_notify import Hub
from sqla_notify.health import health_router, readiness
from sqla_notify.redis import RedisBroker

from .support.services import PrivateRedis


def app_for(hub: Hub) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with hub:
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(health_router(hub))
    return app


def check(client: TestClient, path: str) -> tuple[int, dict[str, Any]]:
    response = client.get(path)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens there once it is closed


def test_a_hub_not_started_is_alive_but_not_ready() -> None:
    client = TestClient(app_for(Hub()))  # no "with": the lifespan does not run
    assert check(client, "/livez") == (200, {"status": "ok", "reasons": [], "hub": None, "broker": None})
    status, body = check(client, "/readyz")
    assert status == 503
    assert body["status"] == "unavailable" and body["hub"] == "not running" and body["broker"] == "none"
    assert body["reasons"] == ["the hub is not running: enter `async with hub` in the app's lifespan"]


def test_a_running_hub_without_a_broker_is_ready() -> None:
    with TestClient(app_for(Hub())) as client:
        assert check(client, "/readyz") == (200, {"status": "ok", "reasons": [], "hub": "running", "broker": "none"})
        assert check(client, "/livez")[0] == 200


def test_a_hub_shutting_down_is_not_ready() -> None:
    hub = Hub()
    with TestClient(app_for(hub)) as client:
        client.portal.call(hub.shutdown, 0.1)
        status, body = check(client, "/readyz")
        assert status == 503 and body["reasons"] == [
            "the hub is shutting down: its clients are moving to other processes"
        ]
        assert check(client, "/livez")[0] == 200


def test_a_broker_whose_server_is_down_is_not_ready() -> None:
    hub = Hub(broker=RedisBroker(f"redis://:hunter2@127.0.0.1:{closed_port()}/0", connect_timeout=0.2))
    with TestClient(app_for(hub)) as client:
        status, body = check(client, "/readyz")
        assert status == 503 and body["hub"] == "running"
        assert body["broker"] in ("connecting", "disconnected")
        assert body["reasons"] == [f"the broker (Redis) is {body['broker']}"]
        assert "hunter2" not in str(body) and "127.0.0.1" not in str(body)
        assert check(client, "/livez")[0] == 200  # alive all the same: restarting would not help


def test_readiness_follows_the_broker(private_redis: PrivateRedis) -> None:
    private_redis.start()
    hub = Hub(broker=RedisBroker(private_redis.url, connect_timeout=2))
    with TestClient(app_for(hub)) as client:
        assert check(client, "/readyz") == (200, {"status": "ok", "reasons": [], "hub": "running", "broker": "connected"})
        private_redis.stop()
        deadline = time.monotonic() + 30  # the reader notices at its next read (it blocks 5 s at most)
        while check(client, "/readyz")[0] == 200:
            assert time.monotonic() < deadline, "readiness did not notice that Redis went away"
            time.sleep(0.05)
        status, body = check(client, "/readyz")
        assert status == 503 and body["reasons"] == ["the broker (Redis) is disconnected"]
        private_redis.start()
        deadline = time.monotonic() + 30
        while check(client, "/readyz")[0] != 200:
            assert time.monotonic() < deadline, "readiness did not notice that Redis came back"
            time.sleep(0.05)
    assert readiness(hub).status == "unavailable"  # left: no longer running
    assert not readiness(hub).ok


def test_the_checks_need_a_hub() -> None:
    with pytest.raises(TypeError, match="expected a Hub"):
        health_router(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a Hub"):
        readiness(None)  # type: ignore[arg-type]
