"""A simulated machine: one incarnation of a process that can crash or pause.

Every call a replica makes through a simulated interface passes its host's
gate, so a paused host (think SIGSTOP or a long GC pause) stops making
progress at its next await, and a crashed one does nothing at all. A restart
is a new `Host` with the same name.
"""

from __future__ import annotations

import asyncio


class HostDown(Exception):
    """The calling host has crashed; its calls have no effect."""


class Host:
    def __init__(self, name: str, incarnation: int) -> None:
        self.name = name
        self.incarnation = incarnation
        self.alive = True
        self._running = asyncio.Event()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def crash(self) -> None:
        self.alive = False
        self._running.set()

    async def gate(self) -> None:
        """Wait while paused; raise `HostDown` once crashed."""
        if not self._running.is_set():
            await self._running.wait()
        if not self.alive:
            raise HostDown(self.name)

    def __repr__(self) -> str:
        return f"Host({self.name}#{self.incarnation})"
