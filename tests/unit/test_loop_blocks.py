"""The loop-lag probe sees a block it did not time: a callback that holds the
event loop shows up as the probe waking late."""

from __future__ import annotations

import asyncio
import time

from ironbook.adapters.eventloop import watch_loop_lag
from ironbook.replication.loop_blocks import LoopBlocks


def _hold_the_loop(seconds: float) -> None:
    """CPU work holding the loop, timed by nobody."""
    time.sleep(seconds)


def test_the_probe_records_a_block_of_the_loop_as_lag() -> None:
    blocks = LoopBlocks()

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            probe = group.create_task(watch_loop_lag(blocks))
            await asyncio.sleep(0.05)
            _hold_the_loop(0.3)
            await asyncio.sleep(0.05)
            probe.cancel()

    asyncio.run(main())
    # A lower bound only: a slow machine makes the lag longer, never shorter.
    assert blocks.longest_ms()["loop_lag"] >= 250


def test_the_longest_block_per_kind_is_kept() -> None:
    blocks = LoopBlocks()
    for kind, elapsed_ms in (("decide", 5), ("decide", 30), ("decide", 7), ("encode", 0)):
        blocks.record(kind, elapsed_ms)
    assert blocks.longest_ms() == {"decide": 30, "encode": 0}
