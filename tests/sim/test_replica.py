"""One replica's role loop against the simulated cluster."""

from __future__ import annotations

import asyncio
import random

from ironbook import core
from ironbook.core import acting, issued
from ironbook.replication.batch import ReplayState, encode_batch
from ironbook.replication.checker import replay_hash
from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.concurrency import race
from ironbook.replication.follower import take_snapshot
from ironbook.replication.interfaces import LogEntry, Snapshot
from ironbook.replication.merkle import Frontier, leaf_hash, log_tag
from ironbook.replication.replica import Replica, ReplicaConfig
from ironbook.replication.sim.clock import SimClock
from ironbook.replication.sim.host import Host
from ironbook.replication.sim.lease import LeaseService, SimLease
from ironbook.replication.sim.log import LogService, SimLog
from ironbook.replication.sim.loop import VirtualTimeLoop, run_virtual
from ironbook.replication.sim.network import Network
from ironbook.replication.sim.signing import MacSigner
from ironbook.replication.sim.snapshots import SimSnapshotStore, SnapshotService
from ironbook.replication.sim.transport import RequestBus, SimRequestServer
from ironbook.replication.tree_keeping import (
    CheckpointPolicy,
    CheckpointUnavailable,
    LogTree,
    TreeHead,
)

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


SIGNER = MacSigner(b"test replicas' key")


def _seed_log(service: LogService) -> None:
    """Unsigned entries, as written before batches were signed: a replica
    with a key still replays them."""
    state = core.new_state()
    prev = ""
    commands: list[core.AnyCommand] = [
        core.OpenAccount(request_id="open", account_id="alice"),
        core.Deposit(request_id="dep", account_id="alice", amount_minor=700, reason="test top-up"),
        core.Withdraw(request_id="wd", account_id="alice", amount_minor=200),
    ]
    for seq, command in enumerate(commands, start=1):
        outcome = core.decide(state, issued(command, PEOPLE), seq)
        for event in outcome.events:
            core.apply(state, event)
        batch_id = f"1:{seq}"
        service.append("old-leader", encode_batch(prev, list(outcome.events)), seq - 1, batch_id)
        prev = batch_id


def _replica(
    loop: VirtualTimeLoop,
    service: LogService,
    snapshots: SnapshotService,
    checkpoints: MemoryCheckpoints | None = None,
) -> Replica:
    rng = random.Random(1)
    network = Network(loop, rng)
    host = Host("r0", 1)
    return Replica(
        "r0",
        log=SimLog(service, network, host, now_ms=loop.now_ms, request_timeout_ms=100),
        lease=SimLease(
            LeaseService(now_ms=loop.now_ms, ttl_ms=1_000),
            network,
            host,
            request_timeout_ms=100,
        ),
        snapshots=SimSnapshotStore(snapshots, network, host, request_timeout_ms=100),
        server=SimRequestServer(
            RequestBus(loop, network, rng, inbox_capacity=8), host, inbox_capacity=8
        ),
        clock=SimClock(loop, host),
        rng=rng,
        signer=SIGNER,
        verifier=SIGNER,
        config=ReplicaConfig(
            lease_ttl_ms=1_000,
            lease_renew_interval_ms=250,
            checkpoints=CheckpointPolicy(every_ms=500, every_entries=100),
        ),
        checkpoints=checkpoints,
    )


class MemoryCheckpoints:
    """A `CheckpointPort` that keeps the heads it is given (unsigned); its
    first `unreadable` reads of the last checkpoint fail, as during a NATS
    outage."""

    log = 0

    def __init__(self, last: Checkpoint | None = None, unreadable: int = 0) -> None:
        self.published: list[TreeHead] = []
        self.last = last
        self.unreadable = unreadable

    async def last_signed(self) -> Checkpoint | None:
        if self.unreadable:
            self.unreadable -= 1
            raise CheckpointUnavailable("the checkpoint stream does not answer")
        return self.last

    async def publish(self, head: TreeHead) -> Checkpoint:
        self.published.append(head)
        self.last = Checkpoint(
            partition=0,
            tree_size=head.tree_size,
            root=head.root.hex(),
            time_ms=head.time_ms,
            key_id="00" * 8,
            previous_size=head.previous_size,
        )
        return self.last


def _root(entries: list[LogEntry]) -> bytes:
    frontier = Frontier()
    for entry in entries:
        frontier.append(leaf_hash(log_tag(0), entry.seq, entry.payload))
    return frontier.root()


def test_a_corrupt_snapshot_is_refused_and_the_whole_log_replayed() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[Replica, LogService, int, str | None]:
        service = LogService(loop, now_ms=loop.now_ms, dedupe_window_ms=120_000)
        _seed_log(service)
        snapshots = SnapshotService()
        empty = core.new_state()
        snapshots.put(
            Snapshot(
                seq=2, state_hash="0" * 64, state=core.snapshot_bytes(empty), last_batch_id="1:2"
            )
        )
        replica = _replica(loop, service, snapshots)

        async def until_leading() -> tuple[int, str | None]:
            while replica.status().role != "leader":  # noqa: ASYNC110 (virtual time)
                await asyncio.sleep(0.01)
            return replica.status().applied_seq, replica.state_hash()

        applied_seq, state_hash = await race(replica.run(), until_leading())
        return replica, service, applied_seq, state_hash

    replica, service, applied_seq, state_hash = run_virtual(main, max_virtual_ms=60_000)
    assert "hashes to" in replica.last_restore_problem
    assert applied_seq == 3
    assert state_hash == replay_hash(service.entries)


def _lead_until_signed(
    snapshot_tree: bool, last: Checkpoint | None = None, unreadable: int = 0
) -> tuple[MemoryCheckpoints, list[LogEntry], Replica]:
    """A replica restored from a snapshot at seq 2 (with the tree's frontier,
    or without: then hashed from the log) leads and signs the log's 3 entries."""

    async def main(loop: VirtualTimeLoop) -> tuple[MemoryCheckpoints, list[LogEntry], Replica]:
        service = LogService(loop, now_ms=loop.now_ms, dedupe_window_ms=120_000)
        _seed_log(service)
        replay = ReplayState.empty(None, verifier=SIGNER)
        tree = LogTree(0)
        for entry in service.entries[:2]:
            replay.apply(entry)
            tree.add(entry.seq, entry.payload)
        snapshots = SnapshotService()
        snapshots.put(take_snapshot(replay, tree if snapshot_tree else None))
        port = MemoryCheckpoints(last, unreadable)
        replica = _replica(loop, service, snapshots, port)

        async def until_signed() -> None:
            while not port.published and not replica.checkpoint_refusal:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        await race(replica.run(), until_signed())
        return port, list(service.entries), replica

    return run_virtual(main, max_virtual_ms=60_000)


def test_a_leader_signs_the_tree_it_restored_from_a_snapshot_or_the_log() -> None:
    for snapshot_tree in (True, False):
        port, entries, _ = _lead_until_signed(snapshot_tree)
        head = port.published[0]
        assert (head.tree_size, head.previous_size) == (3, 0)
        assert head.root == _root(entries)


def test_a_leader_chains_to_the_last_checkpoint_or_refuses_a_contradicting_one() -> None:
    port, entries, _ = _lead_until_signed(True)
    good = port.published[0]
    earlier = Checkpoint(
        partition=0,
        tree_size=2,
        root=_root(entries[:2]).hex(),
        time_ms=0,
        key_id="00" * 8,
        previous_size=0,
    )
    chained, _, _ = _lead_until_signed(True, last=earlier)
    assert (chained.published[0].previous_size, chained.published[0].root) == (2, good.root)
    # The last checkpoint could not be read at first: the leader signs only
    # once it could, chained to it (never as the first of a new chain).
    retried, _, _ = _lead_until_signed(True, last=earlier, unreadable=2)
    assert (retried.published[0].previous_size, retried.published[0].root) == (2, good.root)
    forged = Checkpoint(
        partition=0, tree_size=3, root="11" * 32, time_ms=0, key_id="00" * 8, previous_size=0
    )
    refused, _, replica = _lead_until_signed(True, last=forged)
    assert refused.published == []
    assert "does not match" in replica.checkpoint_refusal


def test_a_leader_stopped_gracefully_releases_its_lease() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[LeaseService, str | None]:
        rng = random.Random(2)
        network = Network(loop, rng)
        service = LogService(loop, now_ms=loop.now_ms, dedupe_window_ms=120_000)
        leases = LeaseService(now_ms=loop.now_ms, ttl_ms=1_000)
        host = Host("r0", 1)
        replica = Replica(
            "r0",
            log=SimLog(service, network, host, now_ms=loop.now_ms, request_timeout_ms=100),
            lease=SimLease(leases, network, host, request_timeout_ms=100),
            snapshots=SimSnapshotStore(SnapshotService(), network, host, request_timeout_ms=100),
            server=SimRequestServer(
                RequestBus(loop, network, rng, inbox_capacity=8), host, inbox_capacity=8
            ),
            clock=SimClock(loop, host),
            rng=rng,
            signer=SIGNER,
            verifier=SIGNER,
            config=ReplicaConfig(lease_ttl_ms=1_000, lease_renew_interval_ms=250),
        )

        async def until_leading() -> str | None:
            while replica.status().role != "leader":  # noqa: ASYNC110 (virtual time)
                await asyncio.sleep(0.01)
            return leases.holder

        holder = await race(replica.run(), until_leading())  # then cancels run()
        return leases, holder

    leases, holder_while_leading = run_virtual(main, max_virtual_ms=60_000)
    assert holder_while_leading == "r0"
    assert leases.holder is None
