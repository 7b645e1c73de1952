"""`concurrency.wait_for` keeps a cancellation that arrives in the same loop
iteration as the result it waits for (Python 3.11's `asyncio.wait_for`
returns the result instead, and a loop around it never stops)."""

from __future__ import annotations

import asyncio

import pytest

from ironbook.replication.concurrency import wait_for


def test_a_cancellation_that_races_the_result_is_kept() -> None:
    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[int] = loop.create_future()
        rounds = 0

        async def waits_in_a_loop() -> None:
            nonlocal rounds
            while True:
                rounds += 1
                await wait_for(asyncio.shield(answered), 10)
                await asyncio.sleep(0.01)

        task = loop.create_task(waits_in_a_loop())
        await asyncio.sleep(0)  # the task now waits for the answer
        answered.set_result(1)
        task.cancel()
        try:
            await asyncio.wait_for(task, 5)  # the test's own bound
        except asyncio.CancelledError:
            return f"cancelled after {rounds} round(s)"
        except TimeoutError:
            return "still looping"
        return "returned"

    assert asyncio.run(scenario()) == "cancelled after 1 round(s)"


def test_a_timeout_raises_and_a_result_is_returned() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        never: asyncio.Future[int] = loop.create_future()
        with pytest.raises(TimeoutError):
            await wait_for(never, 0.01)
        assert never.cancelled()
        return await wait_for(asyncio.sleep(0, result=7), 1)

    assert asyncio.run(scenario()) == 7
