"""The `Lease` contract against a real 3-node JetStream cluster."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NatsClient

from ironbook.adapters.nats.lease import NatsLease, ensure_lease_bucket
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.replication.interfaces import LeaseUnavailable

KEY = "ledger-0"
TTL_MS = 1000
CONTENDERS = 8


async def _clients(cluster: LocalNatsCluster, count: int) -> list[NatsClient]:
    """Connections that can all reach a fresh lease bucket: right after it is
    created, a server may not know yet who serves its subjects (no responders)."""
    clients = [await connect_nats(cluster.url) for _ in range(count)]
    await ensure_lease_bucket(clients[0])
    for index, nc in enumerate(clients):
        warmup = NatsLease(nc, f"warmup-{index}", ttl_ms=TTL_MS)
        deadline = time.monotonic() + 30
        while True:
            try:
                await warmup.acquire("warmup")
                break
            except LeaseUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    return clients


async def _close_all(clients: list[NatsClient]) -> None:
    for nc in clients:
        await close_nats(nc)


async def _acquire_within(lease: NatsLease, holder: str, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            revision = await lease.acquire(holder)
        except LeaseUnavailable:
            revision = None  # the bucket did not answer in time: tried again, as replicas do
        if revision is not None:
            return revision
        await asyncio.sleep(0.05)
    return None


def test_exactly_one_of_many_concurrent_acquirers_wins(nats_cluster: LocalNatsCluster) -> None:
    """Never two winners at once. A contender that cannot read the delete
    marker a release left (its read went to a replica that lags) gives up
    for this try, so on a loaded machine a round can have no winner: the
    contenders then try again, as replicas do, until one wins."""

    async def scenario() -> None:
        clients = await _clients(nats_cluster, CONTENDERS)
        try:
            leases = [NatsLease(nc, KEY, ttl_ms=TTL_MS) for nc in clients]
            for round_number in range(3):
                deadline = time.monotonic() + 30
                winners: list[tuple[int, int]] = []
                while not winners:
                    assert time.monotonic() < deadline, f"round {round_number}: nobody won"
                    revisions = await asyncio.gather(
                        *(lease.acquire(f"r{round_number}-h{i}") for i, lease in enumerate(leases))
                    )
                    winners = [(i, rev) for i, rev in enumerate(revisions) if rev is not None]
                    assert len(winners) <= 1, revisions
                winner, revision = winners[0]
                await leases[winner].release(f"r{round_number}-h{winner}", revision)
        finally:
            await _close_all(clients)

    asyncio.run(scenario())


def test_renewals_keep_the_lease_past_its_ttl(nats_cluster: LocalNatsCluster) -> None:
    async def scenario() -> None:
        holder_nc, rival_nc = await _clients(nats_cluster, 2)
        try:
            holder = NatsLease(holder_nc, KEY, ttl_ms=TTL_MS)
            rival = NatsLease(rival_nc, KEY, ttl_ms=TTL_MS)
            revision = await holder.acquire("holder")
            assert revision is not None
            held_until = time.monotonic() + 3 * TTL_MS / 1000
            while time.monotonic() < held_until:
                await asyncio.sleep(TTL_MS / 1000 / 4)
                renewed = await holder.renew("holder", revision)
                assert renewed is not None and renewed > revision
                revision = renewed
                assert await rival.acquire("rival") is None
            # Somebody else renewing with a revision they never held fails.
            assert await rival.renew("rival", revision - 1) is None
        finally:
            await _close_all([holder_nc, rival_nc])

    asyncio.run(scenario())


def test_a_dead_holders_lease_expires_and_the_next_holder_gets_a_higher_revision(
    nats_cluster: LocalNatsCluster,
) -> None:
    async def scenario() -> None:
        dead_nc, rival_nc = await _clients(nats_cluster, 2)
        try:
            dead = NatsLease(dead_nc, KEY, ttl_ms=TTL_MS)
            rival = NatsLease(rival_nc, KEY, ttl_ms=TTL_MS)
            first = await dead.acquire("dead")
            assert first is not None
            await dead_nc.close()  # the holder dies without releasing

            taken_after = time.monotonic()
            second = await _acquire_within(rival, "rival", timeout_s=30)
            waited_s = time.monotonic() - taken_after
            print(f"\nlease with ttl {TTL_MS} ms taken over after {waited_s:.2f} s")
            assert second is not None and second > first

            # The old holder's revision is worthless now.
            zombie_nc = await connect_nats(nats_cluster.url)
            try:
                zombie = NatsLease(zombie_nc, KEY, ttl_ms=TTL_MS)
                assert await zombie.renew("dead", first) is None
            finally:
                await zombie_nc.close()
        finally:
            await rival_nc.close()

    asyncio.run(scenario())


def test_release_frees_the_lease_at_once(nats_cluster: LocalNatsCluster) -> None:
    async def scenario() -> None:
        a_nc, b_nc = await _clients(nats_cluster, 2)
        try:
            a = NatsLease(a_nc, KEY, ttl_ms=10_000)
            b = NatsLease(b_nc, KEY, ttl_ms=10_000)
            first = await a.acquire("a")
            assert first is not None
            assert await b.acquire("b") is None
            # A release with the wrong revision changes nothing.
            await a.release("a", first + 100)
            assert await b.acquire("b") is None
            await a.release("a", first)
            second = await b.acquire("b")
            assert second is not None and second > first
            assert await a.renew("a", first) is None
        finally:
            await _close_all([a_nc, b_nc])

    asyncio.run(scenario())


def test_a_release_after_a_renewal_whose_ack_was_lost_frees_the_lease(
    nats_cluster: LocalNatsCluster,
) -> None:
    """A graceful stop cancels a renewal in flight: the holder releases with
    the revision before it, and the lease is free at once all the same, but
    never when the newest write is someone else's."""

    async def scenario() -> None:
        a_nc, b_nc = await _clients(nats_cluster, 2)
        try:
            a = NatsLease(a_nc, KEY, ttl_ms=10_000)
            b = NatsLease(b_nc, KEY, ttl_ms=10_000)
            first = await a.acquire("a")
            assert first is not None
            landed = await a.renew("a", first)  # the ack we pretend was lost
            assert landed is not None and landed > first
            twin = NatsLease(b_nc, KEY, ttl_ms=10_000)  # same holder name, not ours
            await twin.release("a", first)
            assert await b.acquire("b") is None
            await a.release("a", first)
            second = await b.acquire("b")
            assert second is not None and second > landed
        finally:
            await _close_all([a_nc, b_nc])

    asyncio.run(scenario())


def test_a_renewal_whose_ack_was_lost_is_recognised(nats_cluster: LocalNatsCluster) -> None:
    """A renewal that landed but whose ack never came back leaves the holder
    with an old revision; the next renewal finds the newest write is its own."""

    async def scenario() -> None:
        holder_nc, rival_nc = await _clients(nats_cluster, 2)
        try:
            holder = NatsLease(holder_nc, KEY, ttl_ms=TTL_MS)
            rival = NatsLease(rival_nc, KEY, ttl_ms=TTL_MS)
            first = await holder.acquire("holder")
            assert first is not None
            landed = await holder.renew("holder", first)  # the ack we pretend was lost
            assert landed is not None and landed > first
            assert await holder.renew("holder", first) == landed
            # Somebody else's stale revision is never adopted, not even by
            # another process using the same holder name.
            assert await rival.renew("rival", first) is None
            twin = NatsLease(rival_nc, KEY, ttl_ms=TTL_MS)
            assert await twin.renew("holder", first) is None
            # And a lease taken over after expiry is not the old holder's.
            taken = await _acquire_within(rival, "rival", timeout_s=30)
            assert taken is not None and taken > landed
            assert await holder.renew("holder", landed) is None
        finally:
            await _close_all([holder_nc, rival_nc])

    asyncio.run(scenario())


def test_an_unreachable_lease_store_raises_lease_unavailable(
    nats_cluster: LocalNatsCluster,
) -> None:
    async def scenario() -> None:
        (nc,) = await _clients(nats_cluster, 1)
        try:
            lease = NatsLease(nc, KEY, ttl_ms=TTL_MS)
            revision = await lease.acquire("holder")
            assert revision is not None
            nats_cluster.stop()
            with pytest.raises(LeaseUnavailable):
                await lease.renew("holder", revision)
            with pytest.raises(LeaseUnavailable):
                await lease.acquire("other")
            await lease.release("holder", revision)  # never raises
        finally:
            await close_nats(nc)

    asyncio.run(scenario())
