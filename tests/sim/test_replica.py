"""One replica's role loop against the simulated cluster."""

from __future__ import annotations

import asyncio
import random

from ironbook import core
from ironbook.replication.batch import encode_batch
from ironbook.replication.checker import replay_hash
from ironbook.replication.concurrency import race
from ironbook.replication.interfaces import Snapshot
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

SIGNER = MacSigner(b"test replicas' key")


def _seed_log(service: LogService) -> None:
    """Unsigned entries, as written before batches were signed: a replica
    with a key still replays them."""
    state = core.new_state()
    prev = ""
    commands: list[core.AnyCommand] = [
        core.OpenAccount(request_id="open", account_id="alice"),
        core.Deposit(request_id="dep", account_id="alice", amount_minor=700),
        core.Withdraw(request_id="wd", account_id="alice", amount_minor=200),
    ]
    for seq, command in enumerate(commands, start=1):
        outcome = core.decide(state, command, seq)
        for event in outcome.events:
            core.apply(state, event)
        batch_id = f"1:{seq}"
        service.append("old-leader", encode_batch(prev, list(outcome.events)), seq - 1, batch_id)
        prev = batch_id


def test_a_corrupt_snapshot_is_refused_and_the_whole_log_replayed() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[Replica, LogService, int, str | None]:
        rng = random.Random(1)
        network = Network(loop, rng)
        service = LogService(loop, now_ms=loop.now_ms, dedupe_window_ms=120_000)
        _seed_log(service)
        snapshots = SnapshotService()
        empty = core.new_state()
        snapshots.put(
            Snapshot(
                seq=2, state_hash="0" * 64, state=core.snapshot_bytes(empty), last_batch_id="1:2"
            )
        )
        host = Host("r0", 1)
        replica = Replica(
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
            config=ReplicaConfig(lease_ttl_ms=1_000, lease_renew_interval_ms=250),
        )

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
