"""The real clocks behind the replication layer's `Clock` interface."""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    """Wall-clock milliseconds (log time is stamped from it) and asyncio sleeps."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(max(0.0, ms) / 1000)


class MonotonicClock:
    """Milliseconds that never jump (the event loop's own timebase): for
    deadlines and backoff, which a wall-clock step must not stretch or cut."""

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(max(0.0, ms) / 1000)
