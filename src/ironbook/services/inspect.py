"""Reading a live cluster for verification: the whole log of a partition, and
every replica's state hash once they have all caught up.

Used by the integration tests, the benchmarks and the chaos checker, which
then hand what they read to `replication.checker.check_history`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client as NatsClient

from ironbook.adapters.nats.log import NatsLog
from ironbook.replication.interfaces import LogEntry
from ironbook.services.status import (
    StateHashReply,
    decode_state_hash_reply,
    replica_admin_subject,
)

READ_CHUNK_ENTRIES = 256


async def read_whole_log(
    nc: NatsClient, partition: int, *, timeout_ms: int = 60_000
) -> list[LogEntry]:
    """Every entry of the partition's log, from 1 to its last sequence."""
    log = NatsLog(nc, partition)
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        last_seq = await log.last_seq()
        entries: list[LogEntry] = []
        while len(entries) < last_seq:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read {len(entries)} of {last_seq} log entries in {timeout_ms} ms"
                )
            chunk = await log.read(len(entries) + 1, max_entries=READ_CHUNK_ENTRIES, wait_ms=1_000)
            entries.extend(chunk)
        return entries
    finally:
        await log.close()


async def state_hash_of(nc: NatsClient, node_id: str, *, timeout_ms: int = 5_000) -> StateHashReply:
    reply = await nc.request(replica_admin_subject(node_id), b"", timeout=timeout_ms / 1000)
    return decode_state_hash_reply(reply.data)


async def converged_hashes(
    nc: NatsClient,
    partition: int,
    node_ids: Sequence[str],
    *,
    timeout_ms: int = 60_000,
) -> dict[str, str]:
    """Each replica's state hash, once every one of them has applied the
    whole log (and the leader has nothing in flight). Raises TimeoutError,
    naming the replicas that did not catch up."""
    log = NatsLog(nc, partition)
    deadline = time.monotonic() + timeout_ms / 1000
    lagging: dict[str, str] = {}
    while time.monotonic() < deadline:
        last_seq = await log.last_seq()
        hashes: dict[str, str] = {}
        lagging = {}
        for node_id in node_ids:
            try:
                reply = await state_hash_of(nc, node_id)
            except (nats.errors.Error, OSError) as err:
                lagging[node_id] = f"no answer ({type(err).__name__})"
                continue
            if reply.state_hash is None or reply.applied_seq != last_seq:
                lagging[node_id] = f"{reply.role} at {reply.applied_seq} of {last_seq}"
                continue
            hashes[node_id] = reply.state_hash
        if not lagging:
            return hashes
        await asyncio.sleep(0.2)
    raise TimeoutError(f"replicas did not converge in {timeout_ms} ms: {lagging}")
