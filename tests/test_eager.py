"""sqla_notify._web.eager: a coroutine runs in the caller's step, and only one that waits
costs a task, which then behaves as the coroutine's own task would."""

from __future__ import annotations

import asyncio

import pytest

from sqla_notify._web import eager

pytestmark = pytest.mark.anyio


async def test_a_coroutine_that_never_waits_runs_to_the_end_at_once() -> None:
    ran: list[str] = []

    async def send() -> None:
        ready = asyncio.Event()
        ready.set()
        await ready.wait()  # set already: no wait (uvicorn's ``writable.wait()``)
        ran.append("sent")

    assert eager.start(send()) is None
    assert ran == ["sent"]  # before anything else ran on the loop


async def test_a_coroutine_that_waits_is_finished_by_a_task() -> None:
    ran: list[object] = []
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def send() -> None:
        ran.append("first")
        ran.append(await future)
        await asyncio.sleep(0)  # a bare yield on the way
        ran.append("last")

    task = eager.start(send())
    assert task is not None and ran == ["first"]
    future.set_result(7)
    await asyncio.wait_for(task, 5)
    assert ran == ["first", 7, "last"]


async def test_an_exception_of_what_it_waited_for_is_raised_inside_the_coroutine() -> None:
    seen: list[BaseException] = []
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def send() -> None:
        try:
            await future
        except OSError as exc:
            seen.append(exc)

    task = eager.start(send())
    assert task is not None
    future.set_exception(OSError("gone"))
    await asyncio.wait_for(task, 5)
    assert [str(e) for e in seen] == ["gone"] and task.exception() is None


async def test_cancelling_the_task_cancels_the_wait_and_raises_inside_the_coroutine() -> None:
    seen: list[str] = []
    event = asyncio.Event()

    async def send() -> None:
        try:
            await event.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("finally")

    task = eager.start(send())
    assert task is not None
    await asyncio.sleep(0)  # the task waits on the event's future
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled() and seen == ["cancelled", "finally"]
    event.set()  # the cancelled waiter is gone: nothing is resumed twice
    await asyncio.sleep(0)
    assert seen == ["cancelled", "finally"]


async def test_a_coroutine_may_absorb_a_cancellation_and_carry_on() -> None:
    seen: list[str] = []
    later: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def send() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("absorbed")
        seen.append(await later)

    task = eager.start(send())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    later.set_result("went on")
    await asyncio.wait_for(task, 5)
    assert seen == ["absorbed", "went on"]


async def test_an_exception_before_the_first_wait_reaches_the_caller() -> None:
    async def send() -> None:
        raise KeyError("at once")

    with pytest.raises(KeyError, match="at once"):
        eager.start(send())


async def test_an_exception_after_a_wait_ends_the_task_with_it() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def send() -> None:
        await future
        raise ValueError("later")

    task = eager.start(send())
    assert task is not None
    future.set_result(None)
    with pytest.raises(ValueError, match="later"):
        await asyncio.wait_for(task, 5)
