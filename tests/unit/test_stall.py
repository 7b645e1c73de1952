"""A quiet run names what it waits on (`chaos.stall`)."""

from __future__ import annotations

import asyncio

import pytest

from ironbook.chaos.stall import StallWatch


async def _wait_for_the_peer(gate: asyncio.Event) -> None:
    await gate.wait()


async def _a_stuck_step(gate: asyncio.Event, say: object) -> str:
    await _wait_for_the_peer(gate)
    return "done"


def test_a_quiet_run_shows_the_awaits_it_is_suspended_in() -> None:
    lines: list[str] = []

    async def main() -> str:
        gate = asyncio.Event()

        def out(line: str) -> None:  # the step goes on once the stall was shown
            lines.append(line)
            if "_a_stuck_step" in line:
                gate.set()

        stall = StallWatch(out, quiet_s=0.2)
        return await stall.around(_a_stuck_step(gate, stall.say))

    assert asyncio.run(main()) == "done"
    assert any(line.startswith("no step for") for line in lines), lines
    chain = next(line for line in lines if "_a_stuck_step" in line)
    # Outermost first, down to the innermost function and its line.
    assert chain.index("_a_stuck_step") < chain.index("_wait_for_the_peer")
    assert "test_stall.py:" in chain


def test_a_run_that_speaks_is_not_reported() -> None:
    lines: list[str] = []

    async def main() -> None:
        stall = StallWatch(lines.append, quiet_s=5.0)

        async def chatty() -> None:
            for step in range(8):
                stall.say(f"step {step}")
                await asyncio.sleep(0.1)

        await stall.around(chatty())

    asyncio.run(main())
    assert lines == [f"step {step}" for step in range(8)]


def test_the_works_own_error_is_raised_as_it_is() -> None:
    async def broken() -> None:
        raise FileExistsError("not empty")

    with pytest.raises(FileExistsError, match="not empty"):
        asyncio.run(StallWatch(lambda _: None).around(broken()))
