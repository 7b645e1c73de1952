"""Structured concurrency with a deterministic cancellation order.

`asyncio.TaskGroup` keeps its children in a set and cancels them in set order,
which depends on memory addresses: two runs of one simulator seed could then
schedule differently. `race` keeps its children in a list, so cancellation
(and therefore every later scheduling decision) is the same in every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


async def race(*coroutines: Coroutine[Any, Any, T]) -> T:
    """Run the coroutines concurrently until the first one finishes.

    The others are then cancelled, in the order given, and waited for. The
    first to finish decides the result: its return value is returned, its
    exception is raised. If the caller is cancelled, every child is cancelled
    and waited for before the cancellation propagates.
    """
    loop = asyncio.get_running_loop()
    first: asyncio.Future[asyncio.Task[T]] = loop.create_future()

    def on_done(task: asyncio.Task[T]) -> None:
        if not first.done():
            first.set_result(task)

    tasks: list[asyncio.Task[T]] = []
    for coroutine in coroutines:
        task = loop.create_task(coroutine)
        task.add_done_callback(on_done)
        tasks.append(task)
    try:
        winner = await first
    finally:
        await cancel_and_wait(tasks)
    return winner.result()


async def wait_for(awaitable: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109 (it is the timeout primitive)
    """`awaitable`'s result, or `TimeoutError` after `timeout` seconds (it is
    then cancelled): `asyncio.wait_for` without its lost cancellation.

    On Python 3.11, `asyncio.wait_for` returns the result instead of raising
    `CancelledError` when its task is cancelled in the same loop iteration as
    the awaitable completes: the cancellation is lost, and a `while True` loop
    around it runs on after its owner cancelled it, which waits forever for
    it. `asyncio.timeout` keeps the cancellation. Measured: replicas whose
    log reads and command intake waited this way failed to stop within 5 s
    (killed instead, a leader without handing its lease over) in about one
    stop in three under load.
    """
    async with asyncio.timeout(timeout):
        return await awaitable


async def cancel_and_wait(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel the tasks in order and wait until all are done.

    Exceptions of the tasks are retrieved and dropped: the caller has already
    decided what the outcome is. Waiting is shielded from a second cancellation
    so no child outlives its owner.
    """
    for task in tasks:
        task.cancel()
    pending = [task for task in tasks if not task.done()]
    if pending:
        loop = asyncio.get_running_loop()
        all_done: asyncio.Future[None] = loop.create_future()
        remaining = len(pending)

        def on_done(_: asyncio.Future[Any]) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0 and not all_done.done():
                all_done.set_result(None)

        for task in pending:
            task.add_done_callback(on_done)
        cancelled_again = False
        while not all_done.done():
            try:
                await asyncio.shield(all_done)
            except asyncio.CancelledError:
                cancelled_again = True
        if cancelled_again:
            _retrieve(tasks)
            raise asyncio.CancelledError
    _retrieve(tasks)


def _retrieve(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()
