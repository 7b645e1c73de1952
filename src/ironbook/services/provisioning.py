"""Creating every JetStream asset the services use, as `ops`.

Services may read and write the streams, buckets and object stores their
identity names, but never create, change, purge or delete a stream: that is
`ops`'s alone. So a cluster is provisioned once, before its services start
(`ironbook up` does it; on another cluster run
`python -m ironbook.bootstrap provision --nats URL --partitions N` with the
ops credentials). Provisioning is idempotent: what exists is kept as it is.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client as NatsClient

from ironbook.adapters.audit.checkpoint_stream import ensure_checkpoint_stream
from ironbook.adapters.audit.events import ensure_events_stream
from ironbook.adapters.feed.nats_stream import NatsFeedStream
from ironbook.adapters.nats.lease import ensure_lease_bucket
from ironbook.adapters.nats.log import NatsLog
from ironbook.adapters.nats.snapshots import NatsSnapshotStore
from ironbook.services.feed.provider import open_worlds
from ironbook.services.gateway.idempotency import ClaimStore
from ironbook.services.gateway.odds import ensure_odds_stream
from ironbook.services.gateway.revocation import RevocationStore

log = logging.getLogger("ironbook.provisioning")


async def provision(
    nc: NatsClient,
    *,
    partitions: int,
    replicas: int,
    producer: str | None,
    revocation_retention_s: int,
) -> None:
    """Every partition's log and snapshot store, the lease bucket, the
    gateway's Idempotency-Key bucket, odds store and token revocations (kept
    `revocation_retention_s`), the audit checkpoints and significant-event
    log, and, for a feed `producer`, its stream and the
    simulator's worlds bucket."""
    for partition in range(partitions):
        await NatsLog.open(nc, partition, replicas=replicas)
        await NatsSnapshotStore.open(nc, partition, replicas=replicas)
    await ensure_lease_bucket(nc, replicas=replicas)
    await ClaimStore.open(nc.jetstream(), replicas=replicas)
    await ensure_odds_stream(nc, replicas=replicas)
    await RevocationStore.open(nc, replicas=replicas, retention_s=revocation_retention_s)
    await ensure_checkpoint_stream(nc, replicas=replicas)
    await ensure_events_stream(nc, replicas=replicas)
    if producer is not None:
        await NatsFeedStream.open(nc, producer, replicas=replicas)
        await open_worlds(nc, replicas=replicas)
    log.info("provisioned %d partition(s), producer %s", partitions, producer)
