"""Write gaps from a history: the longest stretch of a window without an
acknowledged write, edges included; reads and unanswered writes do not count."""

from __future__ import annotations

from ironbook.chaos.write_gaps import GapStats, gaps_by_kind, gaps_by_step, write_gap_ms
from ironbook.replication.history import Operation


def _op(at_ms: int, kind: str = "place_bet", outcome: str = "ok") -> Operation:
    return Operation(
        client="c1",
        request_id=f"r{at_ms}",
        kind=kind,
        invoke_ns=0,
        complete_ns=0,
        invoke_wall_ms=at_ms - 5,
        complete_wall_ms=at_ms,
        outcome=outcome,  # type: ignore[arg-type]
    )


def test_the_longest_stretch_counts_the_edges() -> None:
    assert write_gap_ms([1_100, 1_200, 1_900], 1_000, 2_000) == 700
    assert write_gap_ms([1_050, 1_100], 1_000, 2_000) == 900  # the last to the end
    assert write_gap_ms([], 1_000, 2_000) == 1_000
    assert write_gap_ms([500, 2_500], 1_000, 2_000) == 1_000  # outside the window


def test_gaps_by_kind_ignore_reads_and_unanswered_writes() -> None:
    operations = [
        _op(1_100),
        _op(1_500, kind="get_account"),  # a read is not a write
        _op(1_600, outcome="info"),  # gave up: not acknowledged
        _op(1_700, outcome="fail"),  # refused by the ledger: the log took it
        _op(5_200),
        _op(5_300),
    ]
    gaps = gaps_by_kind(
        [("drain", 1_000, 2_000), ("drain", 5_000, 5_400), ("nats_leader_kill", 1_000, 5_400)],
        operations,
    )
    assert gaps == {
        "drain": GapStats(max=600, median=400),
        "nats_leader_kill": GapStats(max=3_500, median=3_500),
    }


def test_each_step_is_judged_from_the_end_of_the_one_before() -> None:
    operations = [_op(1_100), _op(2_900), _op(3_050)]
    steps = [(2_000, "n1 restarted"), (3_000, "n2 restarted"), (3_100, "p0-r1 restarted")]
    assert gaps_by_step(1_000, steps, operations) == [
        ("n1 restarted", 900),
        ("n2 restarted", 900),
        ("p0-r1 restarted", 50),
    ]
