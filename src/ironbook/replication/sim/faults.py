"""Seeded fault schedules.

Every run draws a few timed faults (crashes, pauses, partitions, lease
expiry, loss of quorum, a lagging follower) and a set of background rates
(message loss, latency spikes, crashes triggered at the protocol's most
delicate moments: just before an append is sent, just after it lands).
Independently of those (from their own random stream, so that they shift
no other draw), foreign writers publish entries straight onto the log:
garbage, and well-formed batches chained onto the real tip but not signed by
the replicas' key (`plan_foreign_entries`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal[
    "crash_leader",
    "crash_replica",
    "pause_leader",
    "isolate_leader",
    "expire_lease",
    "cluster_down",
    "lag_follower",
    "foreign_entries",
]

FAULT_KINDS: tuple[FaultKind, ...] = (
    "crash_leader",
    "crash_replica",
    "pause_leader",
    "isolate_leader",
    "expire_lease",
    "cluster_down",
    "lag_follower",
)


@dataclass(frozen=True, slots=True)
class Fault:
    at_ms: int
    kind: FaultKind
    duration_ms: int
    """Downtime, pause, partition or lag length; crashed replicas restart
    after it (from the newest snapshot plus the log)."""
    target: int
    """Replica index, where the fault does not pick the leader itself; for
    `foreign_entries`, how many entries are published."""

    def describe(self) -> str:
        return f"{self.kind}@{self.at_ms}ms/{self.duration_ms}ms#{self.target}"


@dataclass(frozen=True, slots=True)
class FaultPlan:
    faults: tuple[Fault, ...]
    loss_rate: float
    spike_rate: float
    crash_before_append_rate: float
    crash_after_append_rate: float
    max_triggered_crashes: int

    def describe(self) -> list[str]:
        rates = (
            f"loss={self.loss_rate} spikes={self.spike_rate} "
            f"crash_before_append={self.crash_before_append_rate} "
            f"crash_after_append={self.crash_after_append_rate}"
        )
        return [rates, *(fault.describe() for fault in self.faults)]


def plan_faults(
    rng: random.Random, *, replicas: int, window_ms: int, lease_ttl_ms: int
) -> FaultPlan:
    faults: list[Fault] = []
    for _ in range(rng.choice((0, 1, 2, 2, 3, 4))):
        kind = rng.choice(FAULT_KINDS)
        if kind in ("pause_leader", "isolate_leader"):
            # Long enough, often, for the lease to lapse and a second leader
            # to start while the first still believes it leads.
            duration_ms = rng.randint(lease_ttl_ms // 4, lease_ttl_ms * 3)
        elif kind == "cluster_down":
            duration_ms = rng.randint(50, lease_ttl_ms * 2)
        else:
            duration_ms = rng.randint(50, lease_ttl_ms * 3)
        faults.append(
            Fault(
                at_ms=rng.randint(0, window_ms),
                kind=kind,
                duration_ms=duration_ms,
                target=rng.randrange(replicas),
            )
        )
    faults.sort(key=lambda fault: (fault.at_ms, fault.kind))
    return FaultPlan(
        faults=tuple(faults),
        loss_rate=rng.choice((0.0, 0.0, 0.01, 0.05)),
        spike_rate=rng.choice((0.0, 0.0, 0.02, 0.1)),
        crash_before_append_rate=rng.choice((0.0, 0.0, 0.0, 0.05)),
        crash_after_append_rate=rng.choice((0.0, 0.0, 0.0, 0.05)),
        max_triggered_crashes=2,
    )


def plan_foreign_entries(rng: random.Random, *, window_ms: int) -> tuple[Fault, ...]:
    """About half the runs: one or two moments at which 1-4 foreign entries
    land in the log (each one's kind is drawn when it is published)."""
    return tuple(
        Fault(at_ms=rng.randint(0, window_ms), kind="foreign_entries", duration_ms=0, target=count)
        for count in (rng.randint(1, 4) for _ in range(rng.choice((0, 0, 1, 2))))
    )
