"""Write gaps: how long the ledger acknowledged no write while a fault (or a
maintenance step) was under way, from the recorded history.

A write is acknowledged when a client hears the ledger's answer to a
command (applied or refused: either way the log took it). Within a window
[start, end], the gap is the longest stretch without such an answer: from
the start to the first, between two in a row, and from the last to the end.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

import msgspec

from ironbook.replication.history import Operation


class GapStats(msgspec.Struct, frozen=True):
    max: int
    median: int


def acknowledged_writes_ms(operations: Sequence[Operation]) -> list[int]:
    """When each write was answered by the ledger (wall ms), in order."""
    return sorted(
        op.complete_wall_ms for op in operations if not op.is_query and op.outcome in ("ok", "fail")
    )


def write_gap_ms(acknowledged: Sequence[int], start_ms: int, end_ms: int) -> int:
    """The longest stretch of [start_ms, end_ms] without an acknowledged
    write (`acknowledged`: sorted wall ms)."""
    previous = start_ms
    longest = 0
    for at in acknowledged:
        if at < start_ms:
            continue
        if at > end_ms:
            break
        longest = max(longest, at - previous)
        previous = at
    return max(longest, end_ms - previous)


def gaps_by_kind(
    windows: Sequence[tuple[str, int, int]], operations: Sequence[Operation]
) -> dict[str, GapStats]:
    """kind -> the max and median write gap over its windows (kind, start, end)."""
    acknowledged = acknowledged_writes_ms(operations)
    gaps: dict[str, list[int]] = defaultdict(list)
    for kind, start_ms, end_ms in windows:
        gaps[kind].append(write_gap_ms(acknowledged, start_ms, end_ms))
    return {
        kind: GapStats(max=max(values), median=int(statistics.median(values)))
        for kind, values in sorted(gaps.items())
    }


def gaps_by_step(
    start_ms: int, steps: Sequence[tuple[int, str]], operations: Sequence[Operation]
) -> list[tuple[str, int]]:
    """(step, its write gap) for steps done one after another from
    `start_ms`: each step's window runs from the end of the one before."""
    acknowledged = acknowledged_writes_ms(operations)
    gaps = []
    previous = start_ms
    for at_ms, what in steps:
        gaps.append((what, write_gap_ms(acknowledged, previous, at_ms)))
        previous = at_ms
    return gaps
