"""The event loop for ironbook's processes: uvloop where it is installed (a
project dependency on Linux and macOS), else the standard asyncio loop.

uvloop runs the same asyncio code with a faster loop and faster sockets; the
replicas, the gateway and the benchmark clients spend much of their time in
both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

from ironbook.replication.loop_blocks import LoopBlocks

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # noqa: PLC0415 - optional at run time
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


LAG_PROBE_INTERVAL_MS = 10


async def watch_loop_lag(blocks: LoopBlocks) -> NoReturn:
    """Record, as `loop_lag`, how much later than asked the loop wakes this
    task: an upper bound on the longest any other work held the loop, whatever
    that work was (timed or not). The part of that lateness the process spent
    off the CPU (stopped, starved of CPU, or blocked in a call that sleeps) is
    recorded as a stall (`LoopBlocks.record_stall`): work that kept the loop
    busy on the CPU is not a stall."""
    interval_s = LAG_PROBE_INTERVAL_MS / 1000
    while True:
        started = time.monotonic()
        cpu_started = time.process_time()
        await asyncio.sleep(interval_s)
        late_s = time.monotonic() - started - interval_s
        blocks.record("loop_lag", max(0, int(late_s * 1000)))
        off_cpu_s = late_s - (time.process_time() - cpu_started)
        blocks.record_stall(int(off_cpu_s * 1000))
