"""`ironbook bench restore` end to end at a tiny N: a history synthesised by
the pure core, its snapshot and a tail loaded into a real cluster, restored
by the follower's path in process and by a real replica process, whose state
hash must be the synthesised one; a damaged snapshot fails the run."""

from __future__ import annotations

import json

import msgspec
import pytest

from ironbook.benchmarks import restore as bench_restore
from ironbook.replication.batch import ReplayState
from ironbook.replication.follower import SnapshotCorrupt, take_snapshot
from ironbook.replication.interfaces import Snapshot
from ironbook.replication.tree_keeping import LogTree

pytestmark = pytest.mark.slow

TINY = [
    "--bets",
    "2000",
    "--accounts",
    "200",
    "--bets-per-day",
    "1000",
    "--open-markets",
    "4",
    "--bets-per-market",
    "100",
    "--tail-entries",
    "20",
    "--tail-batch",
    "20",
    "--resettle-window-days",
    "0.25",
    "--retention-days",
    "0.5",
]


def test_restores_a_synthesised_history(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_restore.main([*TINY, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "restore"
    assert result["bets"] == 2_000
    assert result["history_days"] == pytest.approx(2.0)
    # Markets were settled along the way, and the last ones are still open.
    assert result["markets_settled"] >= 15
    assert 0 < result["open_bets"] < 2_000
    assert 0 < result["snapshot_bytes"] < result["state_bytes"]
    assert result["replay_entries"] >= 20
    tail_end = result["snapshot_seq"] + result["replay_entries"]
    assert result["restore_heartbeat_seq"] >= tail_end
    assert result["restore_s"] > 0
    assert result["in_process"]["quarantined"] == 0
    assert result["hash_check"]["ok"] is True
    assert result["hash_check"]["replica_seq"] >= tail_end
    assert result["rss_bytes"]["replica"] > 0
    # Markets resulted half a day before the end, and their bets, were archived.
    assert result["config"]["retention_days"] == 0.5
    assert result["archived_markets"] > 0 and result["archive_commands"] > 0
    assert result["archived_bets"] + result["bets_in_state"] == 2_000


def test_a_damaged_snapshot_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def damaged(replay: ReplayState, tree: LogTree | None = None) -> Snapshot:
        """Stored with a hash its state does not have."""
        return msgspec.structs.replace(take_snapshot(replay, tree), state_hash="0" * 64)

    monkeypatch.setattr("ironbook.benchmarks.restore.take_snapshot", damaged)
    with pytest.raises(SnapshotCorrupt):
        bench_restore.main(TINY)
