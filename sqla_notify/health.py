"""Liveness and readiness checks for a load balancer or an orchestrator.

.. code-block:: python

    from sqla_notify.health import health_router

    app.include_router(health_router(hub))  # GET /livez, GET /readyz

**Liveness** (``/livez``): the process and its event loop answer. The route is ``async``:
it runs on the loop, so a loop blocked by a sync call in an ``async def`` does not answer
(and the orchestrator restarts the process). **Readiness** (``/readyz``): the hub is running
(``async with hub`` entered in the lifespan, not left) and its broker, if it has one, is
connected. Both answer JSON: 200 when all is well, 503 with the ``reasons`` otherwise. Neither
names a host, a URL or a client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import msgspec

from ._hub.hub import Hub

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ("Health", "health_router", "liveness", "readiness")


class Health(msgspec.Struct, frozen=True):
    """The answer of a check (its JSON body)."""

    #: ``"ok"`` or ``"unavailable"``
    status: str
    #: why it is unavailable (empty when ``"ok"``)
    reasons: list[str] = []
    #: ``"running"`` or ``"not running"`` (readiness only)
    hub: Union[str, None] = None
    #: the broker's state (``"none"`` without one; readiness only)
    broker: Union[str, None] = None

    @property
    def ok(self) -> bool:
        """Whether the check passes (HTTP 200)."""
        return self.status == "ok"


def liveness() -> Health:
    """The process answers (call it on the event loop: then the loop answers too)."""
    return Health("ok")


def readiness(hub: Hub) -> Health:
    """Whether ``hub`` is running and its broker (if any) connected.

    :raises TypeError: if ``hub`` is not a :class:`~sqla_notify.Hub`.
    """
    if not isinstance(hub, Hub):
        raise TypeError(f"readiness() expected a Hub, got {type(hub).__name__}: {hub!r}")
    reasons = []
    if not hub.running:
        reasons.append("the hub is not running: enter `async with hub` in the app's lifespan")
    elif hub.closing:
        reasons.append("the hub is shutting down: its clients are moving to other processes")
    broker = hub.broker
    state = "none" if broker is None else broker.state
    if broker is not None and state != "connected":
        reasons.append(f"the broker ({broker.what}) is {state}")
    return Health(
        "unavailable" if reasons else "ok", reasons, "running" if hub.running else "not running", state,
    )


def health_router(hub: Hub, *, live: str = "/livez", ready: str = "/readyz") -> APIRouter:
    """A FastAPI router serving the two checks: ``GET live`` and ``GET ready``, each
    answering :class:`Health` as JSON, with 200 or 503.

    :param hub: the hub whose readiness to report.
    :param live: the liveness route's path.
    :param ready: the readiness route's path.
    :raises TypeError: if ``hub`` is not a :class:`~sqla_notify.Hub`.
    """
    if not isinstance(hub, Hub):
        raise TypeError(f"health_router() expected a Hub, got {type(hub).__name__}: {hub!r}")
    try:
        from fastapi import APIRouter, Response  # noqa: PLC0415 - the fastapi extra
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f'sqla_notify.health needs FastAPI ({exc.name} is missing): pip install "sqla_notify[fastapi]"'
        ) from exc

    def answer(health: Health) -> Any:
        return Response(
            msgspec.json.encode(health), status_code=200 if health.ok else 503, media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    checks = APIRouter()

    @checks.get(live, include_in_schema=False)
    async def livez() -> Response:  # async: answered on the loop, so the loop answers
        return answer(liveness())  # type: ignore[no-any-return]

    @checks.get(ready, include_in_schema=False)
    async def readyz() -> Response:
        return answer(readiness(hub))  # type: ignore[no-any-return]

    return checks
