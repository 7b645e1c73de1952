"""Folding a log up to a point: a sequence, a time, or its end.

A restore folds a snapshot and the log entries after it, in order, with the
chain rule (`replication.batch.ReplayState`), and stops at the point asked
for. The point in time of an entry is its events' `at_ms` (the leader's
clock when it decided them): the fold stops before the first entry whose
events are later than the time asked for, so what it keeps is a prefix of the
log, as every replica saw it. Leaders' clocks may disagree a little across a
failover; a prefix never skips an entry to take a later one.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ironbook import core
from ironbook.replication.batch import ReplayState, decode_batch
from ironbook.replication.interfaces import LogEntry


@dataclass(frozen=True, slots=True)
class RestorePoint:
    """Where a fold stops: at `to_seq`, before the first entry later than
    `to_time_ms`, or (both None) at the end of what it is given."""

    to_seq: int | None = None
    to_time_ms: int | None = None

    def __post_init__(self) -> None:
        assert self.to_seq is None or self.to_seq >= 0
        assert self.to_seq is None or self.to_time_ms is None


def entry_time_ms(entry: LogEntry) -> int | None:
    """The time of an entry: its newest event's `at_ms` (None: no events, or
    an entry that does not decode, which every fold quarantines)."""
    try:
        events = core.decode_events(decode_batch(entry.payload).events)
    except msgspec.MsgspecError:
        return None
    return max((event.at_ms for event in events), default=None)


class PointInTimeFold:
    """Feeds entries to a `ReplayState` until the point is reached."""

    def __init__(self, replay: ReplayState, point: RestorePoint) -> None:
        assert point.to_seq is None or replay.applied_seq <= point.to_seq
        self.replay = replay
        self.point = point
        self.reached = point.to_seq is not None and replay.applied_seq == point.to_seq
        self.applied_entries = 0
        self.last_time_ms: int | None = None
        """The time of the newest entry folded in (None: none with events yet)."""

    def apply(self, entry: LogEntry) -> bool:
        """Fold `entry` in, or return False (and ignore it) once the point
        is reached; the caller stops feeding."""
        if self.reached:
            return False
        point = self.point
        if point.to_time_ms is not None:
            at_ms = entry_time_ms(entry)
            if at_ms is not None and at_ms > point.to_time_ms:
                self.reached = True
                return False
            if at_ms is not None:
                self.last_time_ms = at_ms
        self.replay.apply(entry)
        self.applied_entries += 1
        if point.to_seq is not None and entry.seq >= point.to_seq:
            self.reached = True
        return True
