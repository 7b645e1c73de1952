"""The longest time one piece of CPU work held a replica's event loop, per
kind of work.

A replica does all its work on one event loop: while a decide, an encode or a
snapshot runs, nothing else does, not even the lease renewal. The sequencer
and the follower time their work by kind (`decide`, `settle_slice`, `encode`,
`apply`, `snapshot`); the process adds the loop's own lateness (`loop_lag`,
measured by a task that asks to wake up every few milliseconds). Heartbeats
and the chaos report carry the longest of each.
"""

from __future__ import annotations


class LoopBlocks:
    """The longest milliseconds per kind of work."""

    def __init__(self) -> None:
        self._longest_ms: dict[str, int] = {}

    def record(self, kind: str, elapsed_ms: int) -> None:
        if elapsed_ms > self._longest_ms.get(kind, -1):
            self._longest_ms[kind] = elapsed_ms

    def longest_ms(self) -> dict[str, int]:
        """kind -> the longest block seen, in milliseconds."""
        return dict(sorted(self._longest_ms.items()))
