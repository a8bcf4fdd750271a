"""Learning of a server's shutdown before it closes the WebSockets itself.

uvicorn, on SIGTERM or Ctrl+C, sets ``should_exit``; within 0.1 s its main loop stops
listening and closes every open WebSocket with 1012, dropping what was queued for it, and
only then runs the app's lifespan shutdown (``async with hub`` ends too late to flush
anything). So the router puts a hook in front of the server's signal handler: the first
signal starts :meth:`Hub.shutdown` (each client is sent what waits for it, then closed with
1001), and the server's own handler runs when that is done, at most ``grace`` seconds
later. uvicorn then finds no WebSocket left to close. A second signal goes through at once
(uvicorn: a second Ctrl+C quits without waiting).

The hook is put in place from the loop, on the main thread only (signal handlers can be set
nowhere else), in front of a handler written in Python that is not the interpreter's default
``KeyboardInterrupt``: uvicorn's ``Server.handle_exit``, whether it runs alone, as a
``--workers`` child or under gunicorn. Elsewhere (a server in a thread, as in tests, or one
with its own loop signal handling) nothing changes: call :meth:`Hub.shutdown` yourself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType
from typing import Any, Callable

from .._hub.hub import Hub

__all__ = ("ShutdownHook",)

logger = logging.getLogger("sqla_notify")

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))
_Handler = Callable[[int, "FrameType | None"], Any]


class ShutdownHook:
    """Runs ``hub.shutdown(grace)`` when the server is told to stop, before it acts on it."""

    __slots__ = ("grace", "hub", "installed", "passed", "started", "task")

    def __init__(self, hub: Hub, grace: float) -> None:
        self.hub = hub
        self.grace = grace
        self.installed = False
        self.started = False  # a signal came: the shutdown runs
        self.passed = False  # the server's own handler was called: never twice for one signal
        self.task: asyncio.Future[None] | None = None

    def install(self) -> None:
        """Put the hook in front of the server's handlers, once; on the loop."""
        if self.installed:
            return
        self.installed = True
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            current = signal.getsignal(sig)
            if callable(current) and current is not signal.default_int_handler:
                signal.signal(sig, self._handler(loop, current))

    def _handler(self, loop: asyncio.AbstractEventLoop, original: _Handler) -> _Handler:
        def handle(signum: int, frame: FrameType | None) -> None:
            if self.started:  # a second signal: the server decides, now
                self.passed = True
                original(signum, frame)
                return
            self.started = True
            try:
                loop.call_soon_threadsafe(self._start, original, signum, frame)
            except RuntimeError:  # the loop is closed: nothing left to flush
                self.passed = True
                original(signum, frame)

        return handle

    def _start(self, original: _Handler, signum: int, frame: FrameType | None) -> None:
        self.task = asyncio.ensure_future(self.hub.shutdown(self.grace))
        self.task.add_done_callback(lambda done: self._pass_on(done, original, signum, frame))

    def _pass_on(self, task: asyncio.Future[None], original: _Handler, signum: int, frame: FrameType | None) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("sqla_notify could not let its clients go before shutdown", exc_info=task.exception())
        if not self.passed:
            self.passed = True
            original(signum, frame)
