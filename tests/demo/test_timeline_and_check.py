"""Per-second samples, the longest write stall, and how a multi-partition
run's history is split between the partitions' checks and combined."""

from __future__ import annotations

import random

from ironbook import core
from ironbook.chaos.faults import FaultInjector
from ironbook.chaos.partitions import combine_reports, operations_of_partition
from ironbook.demo.raceday import PlannedFault, available_kind
from ironbook.demo.timeline import SecondCounter, longest_stall_ms, percentile
from ironbook.replication.checker import CheckReport
from ironbook.replication.history import Operation

START_MS = 1_000_000


def op(
    request_id: str,
    complete_ms: int,
    *,
    kind: str = "place_bet",
    outcome: str = "ok",
    account: str = "punter-1",
    latency_ms: int = 10,
    reply_hex: str = "aa",
) -> Operation:
    return Operation(
        client="c0",
        request_id=request_id,
        kind=kind,
        invoke_ns=(complete_ms - latency_ms) * 1_000_000,
        complete_ns=complete_ms * 1_000_000,
        invoke_wall_ms=START_MS + complete_ms - latency_ms,
        complete_wall_ms=START_MS + complete_ms,
        outcome=outcome,  # type: ignore[arg-type]
        account_id=account,
        reply_hex=reply_hex,
    )


def test_operations_fold_into_one_sample_per_second() -> None:
    operations = [op(f"b{i}", 100 + i, latency_ms=i + 1) for i in range(100)]
    operations += [
        op("d1", 500, kind="deposit"),
        op("r1", 600, outcome="fail"),
        op("x1", 700, outcome="info", reply_hex=""),
        op("late", 1_500, latency_ms=40),
    ]
    counter = SecondCounter(START_MS)
    counter.take(operations[:50])
    counter.take(operations)  # only what is new is read
    first = counter.sample(0, clients=8)
    assert first.bets_ok == 100  # the refused and the unknown one are not accepted bets
    assert first.ops == 103
    assert first.refused == 1 and first.unknown == 1
    assert first.latency_ms_p50 == 49.0  # nearest rank 52 of 103
    assert first.latency_ms_p99 == 99.0
    second = counter.sample(1, clients=8)
    assert (second.bets_ok, second.latency_ms_p99) == (1, 40.0)
    empty = counter.sample(2, clients=8)
    assert (empty.ops, empty.latency_ms_p50) == (0, None)


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([1.0], 0.99) == 1.0
    assert percentile([float(v) for v in range(1, 101)], 0.99) == 99.0


def account_in(partition: int, partitions: int = 2) -> str:
    return next(
        f"punter-{i}"
        for i in range(1_000)
        if core.partition_of(f"punter-{i}", partitions) == partition
    )


def test_the_longest_stall_counts_only_the_faulted_partition() -> None:
    p0, p1 = account_in(0), account_in(1)
    operations = [
        op("a", 1_000, account=p0),
        op("b", 1_500, account=p1),
        op("c", 2_000, account=p1),
        op("d", 4_000, account=p0),
        op("e", 4_500, account=p0, outcome="fail"),
        op("f", 5_000, account=p0, kind="get_account"),
    ]
    assert longest_stall_ms(operations, 0, 2, START_MS + 500, START_MS + 6_000) == 3_000
    assert longest_stall_ms(operations, 1, 2, START_MS + 500, START_MS + 6_000) == 4_000
    assert longest_stall_ms(operations, 0, 2, START_MS + 7_000, START_MS + 8_000) is None


def test_each_partition_is_judged_on_its_accounts_and_every_market_command() -> None:
    p0, p1 = account_in(0), account_in(1)
    operations = [
        op("bet-0", 100, account=p0),
        op("bet-1", 200, account=p1),
        op("settle", 300, kind="settle_market", account=""),
        op("close", 400, kind="close_market", account="", outcome="info", reply_hex=""),
    ]
    mine0 = list(operations_of_partition(operations, 0, 2))
    mine1 = list(operations_of_partition(operations, 1, 2))
    assert [o.request_id for o in mine0] == ["bet-0", "settle", "close"]
    # An unknown market outcome is resolved (and counted) in partition 0 only.
    assert [o.request_id for o in mine1] == ["bet-1", "settle"]
    # The merged reply of a broadcast command is not any one log's reply.
    assert mine0[1].reply_hex == "" and mine0[1].outcome == "ok"
    assert list(operations_of_partition(operations, 0, 1)) == operations


def report(verdict: str, **counts: int) -> CheckReport:
    return CheckReport(
        verdict=verdict,  # type: ignore[arg-type]
        ops=0,
        ok=0,
        fail=0,
        info=0,
        reads=0,
        info_applied=counts.get("info_applied", 0),
        info_absent=0,
        lost=counts.get("lost", 0),
        duplicated=0,
        conserved=True,
        no_negative_balance=True,
        replicas_agree=verdict == "pass",
        reads_consistent=True,
        log_entries=counts.get("log_entries", 0),
        void_entries=0,
        replica_hashes={},
        log_hash=None,
        violations=[],
        violation_counts={"lost": counts["lost"]} if counts.get("lost") else {},
    )


def test_partition_verdicts_combine() -> None:
    operations = [op("a", 1), op("b", 2, outcome="fail"), op("q", 3, kind="get_account")]
    passed = combine_reports(
        [report("pass", log_entries=10), report("pass", log_entries=5)], operations
    )
    assert passed.verdict == "pass"
    assert (passed.ops, passed.ok, passed.fail, passed.reads) == (3, 1, 1, 1)
    assert passed.log_entries == 15
    failed = combine_reports([report("pass", log_entries=10), report("fail", lost=2)], operations)
    assert failed.verdict == "fail"
    assert failed.lost == 2 and not failed.replicas_agree
    assert failed.violation_counts == {"lost": 2}


class LoopbackCluster:
    """What `FaultInjector.unavailable` looks at: no network namespaces."""

    network = None


def test_a_fault_the_cluster_cannot_take_falls_back_and_says_why() -> None:
    injector = FaultInjector(LoopbackCluster(), random.Random(1))  # type: ignore[arg-type]
    planned = PlannedFault("a node cut off", ("teleport", "partition", "leader_pause"), 0)
    kind, notes = available_kind(planned, injector)
    assert kind == "leader_pause"
    assert notes[0] == "teleport: not available in this fault injector"
    assert notes[1].startswith("partition: ") and "namespaces" in notes[1]
    assert available_kind(PlannedFault("x", ("leader_kill",), 0), injector) == ("leader_kill", [])
    assert available_kind(PlannedFault("x", ("partition",), 0), injector)[0] is None
