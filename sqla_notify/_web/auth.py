"""``authenticate``, in either of its forms, as one FastAPI dependency that fails closed.

The result is an :class:`Admission`: the principal (and when its credentials expire), or
why the connection is refused. The hook never stalls the server: a sync one runs in a
worker thread (as FastAPI runs sync dependencies), and either kind is given ``timeout``
seconds. A sync call that times out cannot be stopped: its thread runs on, abandoned, and
its result is ignored.

Also here: how a token reaches ``authenticate`` without travelling in the URL
(:func:`bearer_token`), and :class:`Credentials`, a principal that expires.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import logging
import math
import time
from collections.abc import Awaitable
from datetime import datetime
from functools import partial
from typing import Any, Callable, NamedTuple, Union

import anyio
import anyio.to_thread
from fastapi import Depends, HTTPException, WebSocket, WebSocketException, params
from starlette.requests import HTTPConnection

from .._report import HookErrors
from ..types import Authenticate
from .gate import PROTOCOL, Gate

__all__ = ("Admission", "Credentials", "authentication", "bearer_token")

logger = logging.getLogger("sqla_notify")

# How a token travels in the browser client's handshake (see _gate.PROTOCOL).
_BEARER = PROTOCOL + ".bearer."


class Credentials:
    """A principal whose credentials expire: what ``authenticate`` returns for a token or
    session with a lifetime.

    The router passes ``principal`` on (to ``authorize``), and at ``expires_at`` ends the
    connection: a WebSocket is closed with **4401**, after which the browser client fetches
    fresh credentials and reconnects; an SSE stream ends with ``{"type": "expired"}``.
    Credentials that have already expired refuse the connection (4401; SSE: 401).

    :param principal: who the client is; a false value refuses the connection, as usual.
    :param expires_at: when the credentials stop being valid: seconds since the Unix epoch
        (a JWT's ``exp``), or a timezone-aware :class:`~datetime.datetime`.
    :raises TypeError: if ``expires_at`` is neither a number nor a ``datetime``.
    :raises ValueError: for a naive ``datetime`` or a number that is not finite.
    """

    __slots__ = ("expires_at", "principal")

    def __init__(self, principal: Any, expires_at: datetime | float) -> None:
        if isinstance(expires_at, datetime):
            if expires_at.utcoffset() is None:
                raise ValueError(
                    f"Credentials(expires_at=...) expected a timezone-aware datetime, got a naive one: "
                    f"{expires_at!r}; use datetime.now(timezone.utc) + ..., or seconds since the epoch"
                )
            when = expires_at.timestamp()
        elif isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool):
            when = float(expires_at)
            if not math.isfinite(when):
                raise ValueError(f"Credentials(expires_at=...) expected a finite number, got {expires_at!r}")
        else:
            raise TypeError(
                f"Credentials(expires_at=...) expected seconds since the epoch or an aware datetime, "
                f"got {type(expires_at).__name__}: {expires_at!r}"
            )
        self.principal = principal
        #: seconds since the Unix epoch
        self.expires_at = when

    def __repr__(self) -> str:
        return f"Credentials({self.principal!r}, expires_at={self.expires_at!r})"


def bearer_token(conn: HTTPConnection, *, query: str | None = None) -> str | None:
    """The token a client sent, or ``None``; call it from ``authenticate``.

    Looked for, in order: in the ``Sec-WebSocket-Protocol`` offer of the browser client
    (``connect(url, {auth: async () => ({token})})``), in an ``Authorization: Bearer ...``
    header (clients that are not browsers; ``EventSource`` cannot send one), and, only if
    ``query`` names a parameter, in the query string. **A token in the query string is
    written to access logs** (uvicorn's included) and proxy logs: opt in only if you must.

    :param conn: the WebSocket or the request.
    :param query: the query parameter that may carry a token, e.g. ``"token"``; ``None``
        (the default) ignores the query.
    """
    if isinstance(conn, WebSocket):
        for offered in conn.scope.get("subprotocols") or ():
            if offered.startswith(_BEARER):
                encoded = offered[len(_BEARER):]
                try:
                    token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
                except (binascii.Error, ValueError):
                    return None  # malformed: no token, not another one
                return token or None
    scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if query is not None:
        return conn.query_params.get(query) or None
    return None


# anyio 4.1 renamed the flag that lets a thread be abandoned when its caller is cancelled.
_ABANDON: dict[str, Any] = (
    {"abandon_on_cancel": True}
    if "abandon_on_cancel" in inspect.signature(anyio.to_thread.run_sync).parameters
    else {"cancellable": True}
)


class Admission(NamedTuple):
    """The verdict on a connection."""

    principal: Any
    #: ``None``: admitted; else ``"unauthenticated"``, ``"expired"`` (credentials that had
    #: expired), ``"error"`` (the hook raised) or ``"timeout"``
    refusal: str | None
    #: when the credentials expire (seconds since the epoch), if they do
    expires_at: float | None = None


ANYONE = Admission(None, None)
#: The parameter through which the wrapper of a ``Depends(...)`` gets the connection.
_CONNECTION = "sqla_notify_connection"
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _is_async(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(getattr(call, "__call__", None))


async def _call(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``call``'s answer: awaited if it is async, else from a worker thread (abandoned if
    the handshake's time runs out)."""
    if _is_async(call):
        return await call(*args, **kwargs)
    principal = await anyio.to_thread.run_sync(partial(call, *args, **kwargs), **_ABANDON)
    if inspect.isawaitable(principal):
        principal = await principal
    return principal


def authentication(
    authenticate: Authenticate | params.Depends | None, timeout: float, gate: Gate, errors: HookErrors
) -> Any:
    """A dependency (``Depends(...)``) that resolves to the :class:`Admission` of a connection.

    :param authenticate: ``None`` (everyone is admitted, as ``principal=None``), a callable
        taking the connection, or ``Depends(get_current_user)``: a FastAPI dependency, whose
        own parameters (``Cookie``, ``Header``, sub-dependencies) FastAPI resolves.
    :raises TypeError: for anything else, or a dependency with ``yield``.
    """

    async def run(
        call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], conn: HTTPConnection
    ) -> Admission:
        # In a task of its own, not under an anyio cancel scope in the connection's task: a
        # scope (``to_thread`` enters one too) leaves state keyed by the task it ran in for
        # as long as that task lives, about 300 bytes per connection.
        attempt = asyncio.ensure_future(_call(call, args, kwargs))
        try:
            with gate.authenticating(conn):
                principal = await asyncio.wait_for(attempt, timeout)
        except (HTTPException, WebSocketException):
            principal = None  # the dependency's way of saying no
        except Exception as exc:  # noqa: BLE001 - fail closed, and never log what it said
            if attempt.cancelled():  # by wait_for: the time was up
                gate.authentication_timeouts += 1
                gate.note("authenticate_timeout", "authenticate did not answer within handshake_timeout=%s s; refused",
                          timeout)
                return Admission(None, "timeout")
            errors.record(exc, "the connection was refused")
            return Admission(None, "error")
        expires_at = None
        if isinstance(principal, Credentials):
            principal, expires_at = principal.principal, principal.expires_at
        if not principal:
            gate.refused_authentication += 1
            return Admission(None, "unauthenticated")
        if expires_at is not None and expires_at <= time.time():
            gate.expired += 1
            return Admission(None, "expired")
        return Admission(principal, None, expires_at)

    if authenticate is None:

        async def anyone() -> Admission:
            return ANYONE

        return Depends(anyone)

    if isinstance(authenticate, params.Depends):
        function = authenticate.dependency
        if function is None:
            raise TypeError("notify_router(authenticate=Depends(...)) expected a dependency, got Depends() with none")
        if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
            raise TypeError(
                f"notify_router(authenticate=Depends(...)) expected a dependency that returns the "
                f"principal, got {function.__qualname__}, a dependency with yield"
            )
        try:
            signature = inspect.signature(function, eval_str=True)
        except NameError:  # an annotation that names something not importable here
            signature = inspect.signature(function)

        async def dependency(**kwargs: Any) -> Admission:
            conn = kwargs.pop(_CONNECTION)
            return await run(function, (), kwargs, conn)

        # FastAPI reads the parameters to resolve from here: the user's own, keyword-only.
        # And the connection, under a name of ours, for the limits (Gate.authenticating).
        parameters = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind in _POSITIONAL else p
            for p in signature.parameters.values()
        ]
        connection = inspect.Parameter(_CONNECTION, inspect.Parameter.KEYWORD_ONLY, annotation=HTTPConnection)
        variadic = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
        dependency.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for p in parameters if p not in variadic] + [connection] + variadic,
            return_annotation=Admission,
        )
        return Depends(dependency, use_cache=authenticate.use_cache)

    if not callable(authenticate):
        raise TypeError(
            f"notify_router(authenticate=...) expected a callable taking the connection, or "
            f"Depends(a dependency), got {type(authenticate).__name__}: {authenticate!r}"
        )
    hook = authenticate

    async def from_connection(conn: HTTPConnection) -> Admission:
        return await run(hook, (conn,), {}, conn)

    return Depends(from_connection)
