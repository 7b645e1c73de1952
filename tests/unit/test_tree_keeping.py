"""The replicas' side of the audit trail: the tree kept entry by entry, the
leader's checkpoint schedule, and the tree carried in snapshots."""

from __future__ import annotations

import asyncio

import pytest

from ironbook import core
from ironbook.replication.batch import ReplayState
from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.follower import restore, take_snapshot
from ironbook.replication.interfaces import LogEntry, Snapshot, SnapshotInfo
from ironbook.replication.merkle import Frontier, PartialTree, leaf_hash, log_tag
from ironbook.replication.tree_keeping import CheckpointPolicy, CheckpointSchedule, LogTree


def _tree(count: int, log: int = 0) -> LogTree:
    tree = LogTree(log)
    for seq in range(1, count + 1):
        tree.add(seq, f"entry {seq}".encode())
    return tree


def _checkpoint(tree: LogTree, previous_size: int = 0) -> Checkpoint:
    return Checkpoint(
        partition=tree.log,
        tree_size=tree.size,
        root=tree.root().hex(),
        time_ms=0,
        key_id="00" * 8,
        previous_size=previous_size,
    )


def test_the_tree_is_rfc_9162_over_the_leaves_of_the_log() -> None:
    tree = _tree(13, log=3)
    leaves = [leaf_hash(log_tag(3), seq, f"entry {seq}".encode()) for seq in range(1, 14)]
    assert tree.root() == PartialTree(Frontier(), leaves).root(13)
    resumed = LogTree(3, _tree(7, log=3).frontier)
    for seq in range(8, 14):
        resumed.add(seq, f"entry {seq}".encode())
    assert resumed.root() == tree.root()
    with pytest.raises(ValueError, match="leaf 15 after 13"):
        tree.add(15, b"a gap")


def test_a_checkpoint_falls_due_by_entries_or_by_time_and_chains() -> None:
    tree = _tree(0)
    schedule = CheckpointSchedule(CheckpointPolicy(every_ms=1_000, every_entries=5), tree)
    assert schedule.start(None, now_ms=0) == ""
    assert schedule.due(5_000) is None  # nothing to sign
    for seq in range(1, 5):
        tree.add(seq, b"x")
    assert schedule.due(999) is None
    head = schedule.due(1_000)
    assert head is not None
    assert (head.tree_size, head.previous_size, head.root) == (4, 0, tree.root())
    schedule.signed(_checkpoint(tree), now_ms=1_000)
    tree.add(5, b"x")
    assert schedule.due(1_500) is None
    for seq in range(6, 10):
        tree.add(seq, b"x")
    head = schedule.due(1_500)  # 5 entries past the last checkpoint
    assert head is not None
    assert (head.tree_size, head.previous_size) == (9, 4)


def test_a_tree_that_contradicts_the_last_checkpoint_is_never_signed() -> None:
    signed = _checkpoint(_tree(6))
    policy = CheckpointPolicy(every_ms=1, every_entries=1)
    other = LogTree(0)
    for seq in range(1, 7):
        other.add(seq, b"another history")
    schedule = CheckpointSchedule(policy, other)
    assert "does not match" in schedule.start(signed, now_ms=0)
    other.add(7, b"more")
    assert schedule.due(10_000) is None
    short = CheckpointSchedule(policy, _tree(5))
    assert "signed entries are missing" in short.start(signed, now_ms=0)
    longer = _tree(9)
    schedule = CheckpointSchedule(policy, longer)
    assert schedule.start(signed, now_ms=0) == ""
    head = schedule.due(1)
    assert head is not None and (head.previous_size, head.tree_size) == (6, 9)


class OneSnapshot:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    async def latest(self) -> Snapshot:
        return self.snapshot

    async def put(self, snapshot: Snapshot) -> int:
        raise AssertionError

    async def latest_info(self) -> SnapshotInfo:
        raise AssertionError


def test_a_snapshot_carries_the_tree_and_restores_it() -> None:
    tree = _tree(5)
    replay = ReplayState(core.new_state(), 5, "1:5", verifier=None)
    snapshot = take_snapshot(replay, tree)
    restored, frontier = asyncio.run(restore(OneSnapshot(snapshot), None, verifier=None))
    assert restored.applied_seq == 5
    assert frontier is not None and frontier.root() == tree.root()
    bare = take_snapshot(replay)
    assert bare.tree_nodes is None
    assert asyncio.run(restore(OneSnapshot(bare), None, verifier=None))[1] is None
    wrong = Snapshot(
        seq=snapshot.seq,
        state_hash=snapshot.state_hash,
        state=snapshot.state,
        last_batch_id=snapshot.last_batch_id,
        tree_nodes=[b"\0" * 32],  # 5 leaves need 2 hashes
    )
    assert asyncio.run(restore(OneSnapshot(wrong), None, verifier=None))[1] is None


def test_entries_add_in_order() -> None:
    tree = LogTree(0)
    tree.add_entries([LogEntry(1, "a", b"one"), LogEntry(2, "b", b"two")])
    assert tree.size == 2
