"""What a race day run produced, second by second, as plain data.

The runner fills a `Timeline` while it runs; the dashboard, the report
writer and the chart only read one. Times are seconds since the workload
started (`t_s`); latencies are milliseconds from a command's invocation to
its durable outcome, as the client saw it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import msgspec

from ironbook import core
from ironbook.replication.history import Operation


class Sample(msgspec.Struct, frozen=True):
    """One second of client traffic (operations that completed in it)."""

    t_s: int
    clients: int
    """Clients placing bets during that second."""
    bets_ok: int
    """Bets accepted (durably logged) in that second: the bets/s."""
    ops: int
    """Operations of any kind that completed (accepted, refused or unknown)."""
    refused: int
    """Definite rejections by a ledger rule (market closed, funds...): not errors."""
    unknown: int
    """Operations whose client gave up (timeout): outcome unknown until checked."""
    latency_ms_p50: float | None
    latency_ms_p99: float | None


class PhaseMark(msgspec.Struct, frozen=True):
    name: str
    start_s: float
    end_s: float


class FaultMark(msgspec.Struct, frozen=True):
    kind: str
    target: str
    partition: int
    start_s: float
    end_s: float
    """When the cluster was whole again (every process up, a leader per partition)."""
    detail: str
    stall_ms: int | None
    """The longest wait between two acknowledged writes on the faulted partition
    while the fault lasted: what a punter felt. None if no write was acknowledged."""
    alerts: list[str] = msgspec.field(default_factory=list)
    """With monitoring: the alerts that detected it, each with the seconds
    from the injection to its notification (`IronbookReplicaDown +4.1 s`)."""


class AlertMark(msgspec.Struct, frozen=True):
    """One alert as the receiver got it: fired, and resolved (or not by the end)."""

    alertname: str
    severity: str
    about: str
    """What it is about (`name=p0-r1`, `partition=0`), or ""."""
    fired_s: float
    resolved_s: float | None


class Timeline(msgspec.Struct):
    samples: list[Sample] = msgspec.field(default_factory=list)
    phases: list[PhaseMark] = msgspec.field(default_factory=list)
    faults: list[FaultMark] = msgspec.field(default_factory=list)
    skipped_faults: list[str] = msgspec.field(default_factory=list)
    """Fault kinds that were wanted but not available, with the reason."""
    alerts: list[AlertMark] = msgspec.field(default_factory=list)
    """With monitoring: every alert the receiver got, in the order they fired."""


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (None if empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class SecondCounter:
    """Folds completed operations into one `Sample` per second.

    Fed the recorder's operation list incrementally (`take(operations)` reads
    only what was appended since the last call), so a long run costs O(ops).
    """

    def __init__(self, start_wall_ms: int) -> None:
        self.start_wall_ms = start_wall_ms
        self._read = 0
        self._seconds: dict[int, _Second] = {}

    def take(self, operations: Sequence[Operation]) -> None:
        for op in operations[self._read :]:
            second = (op.complete_wall_ms - self.start_wall_ms) // 1000
            if second < 0:
                continue
            bucket = self._seconds.get(second)
            if bucket is None:
                bucket = self._seconds[second] = _Second()
            bucket.add(op)
        self._read = len(operations)

    def sample(self, t_s: int, clients: int) -> Sample:
        bucket = self._seconds.get(t_s) or _Second()
        return bucket.sample(t_s, clients)


class _Second:
    __slots__ = ("bets_ok", "latencies_ms", "ops", "refused", "unknown")

    def __init__(self) -> None:
        self.bets_ok = 0
        self.ops = 0
        self.refused = 0
        self.unknown = 0
        self.latencies_ms: list[float] = []

    def add(self, op: Operation) -> None:
        self.ops += 1
        if op.outcome == "ok" and op.kind == "place_bet":
            self.bets_ok += 1
        elif op.outcome == "fail":
            self.refused += 1
        elif op.outcome == "info":
            self.unknown += 1
        self.latencies_ms.append((op.complete_ns - op.invoke_ns) / 1e6)

    def sample(self, t_s: int, clients: int) -> Sample:
        latencies = sorted(self.latencies_ms)
        p50 = percentile(latencies, 0.50)
        p99 = percentile(latencies, 0.99)
        return Sample(
            t_s=t_s,
            clients=clients,
            bets_ok=self.bets_ok,
            ops=self.ops,
            refused=self.refused,
            unknown=self.unknown,
            latency_ms_p50=None if p50 is None else round(p50, 2),
            latency_ms_p99=None if p99 is None else round(p99, 2),
        )


def longest_stall_ms(
    operations: Iterable[Operation], partition: int, partitions: int, start_ms: int, end_ms: int
) -> int | None:
    """The longest gap between acknowledged writes to accounts of `partition`
    within [start_ms, end_ms] (wall clock), the window's edges included:
    how long a punter on that partition waited for the ledger at worst."""
    acked = sorted(
        op.complete_wall_ms
        for op in operations
        if op.outcome == "ok"
        and not op.is_query
        and op.account_id
        and start_ms <= op.complete_wall_ms <= end_ms
        and core.partition_of(op.account_id, partitions) == partition
    )
    if not acked:
        return None
    points = [start_ms, *acked, end_ms]
    return max(b - a for a, b in itertools.pairwise(points))
