from __future__ import annotations

import asyncio

import pytest

from ironbook.replication.concurrency import race
from ironbook.replication.sim.loop import SimDeadlock, SimTimeLimit, VirtualTimeLoop, run_virtual


def test_an_hour_of_sleep_takes_no_time_and_is_exact() -> None:
    async def main(loop: VirtualTimeLoop) -> list[int]:
        seen: list[int] = []
        for delay_ms in (1, 250, 3_600_000):
            await asyncio.sleep(delay_ms / 1000)
            seen.append(loop.now_ms())
        return seen

    assert run_virtual(main, max_virtual_ms=10**8) == [1, 251, 3_600_251]


def test_timers_fire_in_deadline_order() -> None:
    async def main(loop: VirtualTimeLoop) -> list[str]:
        order: list[str] = []
        for name, delay_s in (("c", 0.003), ("a", 0.001), ("b", 0.002)):
            loop.call_later(delay_s, order.append, name)
        await asyncio.sleep(0.01)
        return order

    assert run_virtual(main, max_virtual_ms=1_000) == ["a", "b", "c"]


def test_waiting_forever_is_a_deadlock_not_a_hang() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(SimDeadlock):
        run_virtual(main, max_virtual_ms=1_000)


def test_virtual_time_limit() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        while True:  # noqa: ASYNC110 (the point: a loop that never ends)
            await asyncio.sleep(1)

    with pytest.raises(SimTimeLimit):
        run_virtual(main, max_virtual_ms=10_000)


def test_race_returns_the_first_and_cancels_the_rest_in_order() -> None:
    cancelled: list[str] = []

    async def sleeper(name: str, seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        return name

    async def main(loop: VirtualTimeLoop) -> str:
        return await race(sleeper("slow", 5), sleeper("fast", 1), sleeper("slower", 9))

    assert run_virtual(main, max_virtual_ms=60_000) == "fast"
    assert cancelled == ["slow", "slower"]


def test_race_raises_the_first_failure() -> None:
    async def boom() -> None:
        await asyncio.sleep(0.1)
        raise ValueError("boom")

    async def main(loop: VirtualTimeLoop) -> None:
        await race(boom(), asyncio.sleep(10))

    with pytest.raises(ValueError, match="boom"):
        run_virtual(main, max_virtual_ms=60_000)
