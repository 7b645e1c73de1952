"""The leader's side of the audit trail: every replica keeps its partition's
Merkle tree (`merkle.py`) as it applies the log, and the leader signs a
checkpoint of it at least every `every_ms` and every `every_entries` entries.

Every replica computes the same root at the same position, because a leaf
is the log entry's exact bytes at its sequence. The tree covers the log as
stored: a void or quarantined entry (`batch.py`) is a leaf like any other,
so the tree, the stream and `audit verify` agree byte for byte. Followers
add leaves as they fold entries; the leader adds its own batches once the
log acknowledges them, and the foreign entries it passes, so a checkpoint
never covers an entry that is not durable. The tree
survives restarts in the snapshot (its frontier, O(log n) hashes) and is
rebuilt from the log when a snapshot carries none.

Signing and publishing are I/O: the replica hands a `TreeHead` to a
`CheckpointPort`, which the services layer implements (key, stream,
off-site copy). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.interfaces import LogEntry, ReplicationError
from ironbook.replication.merkle import Frontier, LogName, leaf_hash, log_tag


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    every_ms: int = 1_000
    """A leader whose tree grew signs at least this often..."""
    every_entries: int = 10_000
    """...and as soon as this many entries are past its last checkpoint."""
    tick_ms: int = 100
    """How often the leader looks whether a checkpoint is due."""

    def __post_init__(self) -> None:
        if min(self.every_ms, self.every_entries, self.tick_ms) < 1:
            raise ValueError("checkpoint intervals are positive")


@dataclass(frozen=True, slots=True)
class TreeHead:
    """What a checkpoint signs, before it is signed."""

    log: LogName
    tree_size: int
    root: bytes
    time_ms: int
    previous_size: int
    """The tree size of the log's last checkpoint (0: none), whoever signed it."""


class CheckpointUnavailable(ReplicationError):
    """The checkpoint could not be signed or published now (stream, disk)."""


class CheckpointSuperseded(ReplicationError):
    """Another signer published a checkpoint of this log since the one this
    leader chains to (a rival or deposed leader): re-read the last one."""


class CheckpointPort(Protocol):
    """Where a leader's checkpoints go: signed, published, copied off-site."""

    @property
    def log(self) -> LogName:
        """The log this port signs for."""
        ...

    async def last_signed(self) -> Checkpoint | None:
        """The newest published checkpoint of this log, by any leader
        (raises `CheckpointUnavailable`)."""
        ...

    async def publish(self, head: TreeHead) -> Checkpoint:
        """Sign `head`, publish it after the log's last checkpoint (raises
        `CheckpointSuperseded` if that is no longer the one at
        `head.previous_size`) and copy it off-site; returns it signed."""
        ...


class LogTree:
    """A log's Merkle tree, leaf by leaf, in sequence order."""

    __slots__ = ("_tag", "frontier", "log")

    def __init__(self, log: LogName, frontier: Frontier | None = None) -> None:
        self.log = log
        self._tag = log_tag(log)
        self.frontier = frontier.copy() if frontier is not None else Frontier()

    @property
    def size(self) -> int:
        return self.frontier.size

    def add(self, seq: int, payload: bytes) -> None:
        if seq != self.frontier.size + 1:
            raise ValueError(f"log {self.log}: leaf {seq} after {self.frontier.size}")
        self.frontier.append(leaf_hash(self._tag, seq, payload))

    def add_entries(self, entries: Sequence[LogEntry]) -> None:
        for entry in entries:
            self.add(entry.seq, entry.payload)

    def root(self) -> bytes:
        return self.frontier.root()


class CheckpointSchedule:
    """When a leader's tree is due for a checkpoint, and what it chains to.

    `start` takes the log's last published checkpoint and refuses (returns
    why) when this replica's tree contradicts it: a log shorter than what
    was signed, or a different root at the signed size. A leader then signs
    nothing in its term: re-signing another history would hide the fork.
    """

    def __init__(self, policy: CheckpointPolicy, tree: LogTree) -> None:
        self._policy = policy
        self._tree = tree
        self.signed_size = 0
        self._signed_at_ms = 0
        self.refused = ""

    def start(self, last: Checkpoint | None, now_ms: int) -> str:
        """Chain to `last`; returns why this tree must not be signed ("" if it may)."""
        self.signed_size = last.tree_size if last is not None else 0
        self._signed_at_ms = now_ms
        tree = self._tree
        if last is None:
            self.refused = ""
        elif last.tree_size > tree.size:
            self.refused = (
                f"log {tree.log} holds {tree.size} entries, but a checkpoint was signed at "
                f"tree size {last.tree_size}: signed entries are missing"
            )
        elif last.tree_size == tree.size and last.root != tree.root().hex():
            self.refused = (
                f"log {tree.log}: the tree at size {tree.size} does not match the checkpoint "
                "signed at that size: the log was rewritten"
            )
        else:
            self.refused = ""
        return self.refused

    def due(self, now_ms: int) -> TreeHead | None:
        """The head to sign now, if one is due."""
        policy, tree = self._policy, self._tree
        if self.refused or tree.size <= self.signed_size:
            return None
        if (
            tree.size - self.signed_size < policy.every_entries
            and now_ms - self._signed_at_ms < policy.every_ms
        ):
            return None
        return TreeHead(tree.log, tree.size, tree.root(), now_ms, self.signed_size)

    def signed(self, checkpoint: Checkpoint, now_ms: int) -> None:
        assert checkpoint.tree_size > self.signed_size
        self.signed_size = checkpoint.tree_size
        self._signed_at_ms = now_ms
