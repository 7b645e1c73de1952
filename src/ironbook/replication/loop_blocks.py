"""The longest time one piece of CPU work held a replica's event loop, per
kind of work.

A replica does all its work on one event loop: while a decide, an encode or a
snapshot runs, nothing else does, not even the lease renewal. The sequencer
and the follower time their work by kind (`decide`, `settle_slice`, `encode`,
`apply`, `snapshot`); the process adds the loop's own lateness (`loop_lag`,
measured by a task that asks to wake up every few milliseconds). Heartbeats
and the chaos report carry the longest of each. The same probe adds up the
stalls, lateness spent off the CPU (`ironbook_replica_loop_stalled_seconds_total`):
a stopped or starved replica stalls, a busy one does not.
"""

from __future__ import annotations

STALL_MIN_MS = 50
"""A wake-up at least this late, off the CPU, counts as a stall; scheduling
jitter below it does not."""


class LoopBlocks:
    """The longest milliseconds per kind of work, and the total time the loop
    stood still while the process was off the CPU."""

    def __init__(self) -> None:
        self._longest_ms: dict[str, int] = {}
        self._stalled_ms = 0

    def record_stall(self, off_cpu_ms: int) -> None:
        """A wake-up `off_cpu_ms` late beyond the CPU the process used
        meanwhile: the process was stopped, starved or blocked sleeping."""
        if off_cpu_ms >= STALL_MIN_MS:
            self._stalled_ms += off_cpu_ms

    def stalled_s(self) -> float:
        """Seconds of stalls recorded so far (only ever grows)."""
        return self._stalled_ms / 1000

    def record(self, kind: str, elapsed_ms: int) -> None:
        if elapsed_ms > self._longest_ms.get(kind, -1):
            self._longest_ms[kind] = elapsed_ms

    def longest_ms(self) -> dict[str, int]:
        """kind -> the longest block seen, in milliseconds."""
        return dict(sorted(self._longest_ms.items()))
