"""``authenticate``, in either of its forms, as one FastAPI dependency that fails closed.

The result is an :class:`Admission`: the principal, or why the connection is refused. The
hook never stalls the server: a sync one runs in a worker thread (as FastAPI runs sync
dependencies), and either kind is given ``timeout`` seconds. A sync call that times out
cannot be stopped: its thread runs on, abandoned, and its result is ignored.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from functools import partial
from typing import Any, Callable, NamedTuple, Union

import anyio
import anyio.to_thread
from fastapi import Depends, HTTPException, WebSocketException, params
from starlette.requests import HTTPConnection

from ._gate import Gate
from ._report import HookErrors

__all__ = ("Admission", "Authenticate", "authentication")

logger = logging.getLogger("sqla_notify")

#: Returns the principal for a connection (any object), or ``None`` (``False``, ``""``, any
#: false value) to refuse it. May be ``async``. It sees the headers, cookies and query of the
#: handshake or request.
Authenticate = Callable[[HTTPConnection], Union[Any, Awaitable[Any]]]

# anyio 4.1 renamed the flag that lets a thread be abandoned when its caller is cancelled.
_ABANDON: dict[str, Any] = (
    {"abandon_on_cancel": True}
    if "abandon_on_cancel" in inspect.signature(anyio.to_thread.run_sync).parameters
    else {"cancellable": True}
)


class Admission(NamedTuple):
    """The verdict on a connection."""

    principal: Any
    #: ``None``: admitted; else ``"unauthenticated"``, ``"error"`` (the hook raised) or ``"timeout"``
    refusal: str | None


ANYONE = Admission(None, None)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _is_async(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(getattr(call, "__call__", None))


def authentication(
    authenticate: Authenticate | params.Depends | None, timeout: float, gate: Gate, errors: HookErrors
) -> Any:
    """A dependency (``Depends(...)``) that resolves to the :class:`Admission` of a connection.

    :param authenticate: ``None`` (everyone is admitted, as ``principal=None``), a callable
        taking the connection, or ``Depends(get_current_user)``: a FastAPI dependency, whose
        own parameters (``Cookie``, ``Header``, sub-dependencies) FastAPI resolves.
    :raises TypeError: for anything else, or a dependency with ``yield``.
    """

    async def run(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Admission:
        principal = None
        try:
            with anyio.move_on_after(timeout) as deadline:
                if _is_async(call):
                    principal = await call(*args, **kwargs)
                else:
                    principal = await anyio.to_thread.run_sync(partial(call, *args, **kwargs), **_ABANDON)
                    if inspect.isawaitable(principal):
                        principal = await principal
        except (HTTPException, WebSocketException):
            principal = None  # the dependency's way of saying no
        except Exception as exc:  # noqa: BLE001 - fail closed, and never log what it said
            errors.record(exc, "the connection was refused")
            return Admission(None, "error")
        if deadline.cancelled_caught:
            gate.authentication_timeouts += 1
            gate.note("timeout", "authenticate did not answer within handshake_timeout=%s s; refused", timeout)
            return Admission(None, "timeout")
        if not principal:
            gate.refused_authentication += 1
            return Admission(None, "unauthenticated")
        return Admission(principal, None)

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
            return await run(function, (), kwargs)

        # FastAPI reads the parameters to resolve from here: the user's own, keyword-only.
        dependency.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[
                p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind in _POSITIONAL else p
                for p in signature.parameters.values()
            ],
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
        return await run(hook, (conn,), {})

    return Depends(from_connection)
