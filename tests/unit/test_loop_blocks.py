"""The loop-lag probe sees a block it did not time: a callback that holds the
event loop shows up as the probe waking late."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ironbook.adapters.eventloop import watch_loop_lag
from ironbook.replication.loop_blocks import STALL_MIN_MS, LoopBlocks


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


def _spin_on_the_cpu(cpu_seconds: float) -> None:
    """CPU work holding the loop until the process has used `cpu_seconds`."""
    until = time.process_time() + cpu_seconds
    while time.process_time() < until:
        pass


def _probe_around(block: Callable[[], None], blocks: LoopBlocks | None = None) -> LoopBlocks:
    blocks = blocks or LoopBlocks()

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            probe = group.create_task(watch_loop_lag(blocks))
            await asyncio.sleep(0.05)
            block()
            await asyncio.sleep(0.05)
            probe.cancel()

    asyncio.run(main())
    return blocks


def test_a_loop_standing_still_off_the_cpu_is_a_stall() -> None:
    # Sleeping stands for a process stopped, starved or blocked: the loop is
    # late and the process used no CPU meanwhile.
    blocks = _probe_around(lambda: _hold_the_loop(0.3))
    assert blocks.stalled_s() >= 0.25


class _EachWake(LoopBlocks):
    """Each of the probe's wake-ups: (how late, how much of it off the CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.wakes: list[tuple[int, int]] = []

    def record(self, kind: str, elapsed_ms: int) -> None:
        super().record(kind, elapsed_ms)
        if kind == "loop_lag":
            self.wakes.append((elapsed_ms, 0))

    def record_stall(self, off_cpu_ms: int) -> None:
        super().record_stall(off_cpu_ms)
        late_ms, _ = self.wakes[-1]
        self.wakes[-1] = (late_ms, off_cpu_ms)


def test_a_loop_kept_busy_on_the_cpu_is_not_a_stall() -> None:
    blocks = _EachWake()
    _probe_around(lambda: _spin_on_the_cpu(0.3), blocks)
    late_ms, off_cpu_ms = max(blocks.wakes)  # the wake-up the spin delayed
    assert late_ms >= 250
    # Whatever the machine's load, the 0.3 s of CPU the spin used are not
    # counted (only time off the CPU beyond it may be).
    assert off_cpu_ms <= late_ms - 290


def test_stalls_add_up_and_jitter_below_the_floor_does_not_count() -> None:
    blocks = LoopBlocks()
    for off_cpu_ms in (STALL_MIN_MS - 1, 0, -5, STALL_MIN_MS, 400):
        blocks.record_stall(off_cpu_ms)
    assert blocks.stalled_s() == (STALL_MIN_MS + 400) / 1000
