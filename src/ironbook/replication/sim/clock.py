"""Virtual time as one host sees it (implements `interfaces.Clock`)."""

from __future__ import annotations

import asyncio

from ironbook.replication.sim.host import Host
from ironbook.replication.sim.loop import VirtualTimeLoop


class SimClock:
    def __init__(self, loop: VirtualTimeLoop, host: Host) -> None:
        self._loop = loop
        self._host = host

    def now_ms(self) -> int:
        return self._loop.now_ms()

    async def sleep(self, ms: float) -> None:
        await self._host.gate()
        if ms > 0:
            await asyncio.sleep(ms / 1000)
        else:
            await asyncio.sleep(0)
        await self._host.gate()
