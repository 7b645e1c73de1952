"""The audit tools on a running cluster: read partition logs and their
checkpoints (`AUDIT_CHECKPOINTS`) from JetStream to export them as an
archive or to build proofs.

Reads are batched direct gets. A replica that lags can only
return fewer entries, never different ones, so a read that comes back short
is retried until `READ_DEADLINE_MS` passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import nats.errors
import nats.js.errors
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient

from ironbook.adapters.audit.archive import (
    ArchiveWriter,
    entry_line,
    frontier_line,
)
from ironbook.adapters.audit.checkpoint_stream import (
    publish_epoch,
    read_chains,
    read_checkpoint_stream,
)
from ironbook.adapters.audit.events import EVENTS_STREAM
from ironbook.adapters.audit.keys import key_id, sign_epoch
from ironbook.adapters.audit.proofs import (
    ConsistencyProof,
    Receipt,
    build_consistency_proof,
    build_receipt,
)
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.nats.provision import (
    DirectGetFailed,
    NatsEndpoint,
    close_nats,
    direct_get_batch,
)
from ironbook.replication.audit_epoch import EpochStart, epoch_start
from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.interfaces import LogEntry, LogUnavailable
from ironbook.replication.merkle import EVENTS_LOG, Frontier, LogName, leaf_hash, log_tag

READ_BATCH_ENTRIES = 1_000
READ_MAX_BYTES = 8 * 1024 * 1024
READ_TIMEOUT_S = 2.0
READ_RETRY_S = 0.1
READ_WAIT_MS = 500
READ_DEADLINE_MS = 30_000

AUDIT_DIR = "audit"
"""Under the data directory: `pubkey`, written by the replicas that sign."""


class AuditedLog:
    """An audited log read as its tree's leaves: a partition's `LEDGER_<p>`,
    or `AUDIT_EVENTS` for the log `events`. Entries carry the stored
    message body exactly (the leaf's payload)."""

    def __init__(self, nc: NatsClient, log: LogName) -> None:
        self._nc = nc
        self.log = log
        self.stream = EVENTS_STREAM if log == EVENTS_LOG else stream_name(int(log))

    async def last_seq(self) -> int:
        """0 when the stream is empty or does not exist yet."""
        try:
            info = await self._nc.jetstream().stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            return 0
        except (nats.errors.Error, OSError) as err:
            raise LogUnavailable(f"{self.stream}: stream info: {err!r}") from err
        return int(info.state.last_seq)

    async def read(self, from_seq: int, *, max_entries: int, wait_ms: int = 0) -> list[LogEntry]:
        """Up to `max_entries` from `from_seq` (fewer from a lagging replica;
        `wait_ms` is not waited: `read_log` retries a short read)."""
        try:
            messages = await direct_get_batch(
                self._nc,
                self.stream,
                from_seq,
                max_entries,
                max_bytes=READ_MAX_BYTES,
                timeout_s=READ_TIMEOUT_S,
            )
        except DirectGetFailed as err:
            raise LogUnavailable(str(err)) from err
        return [
            LogEntry(
                seq=from_seq + index,
                batch_id=(msg.headers or {}).get("Nats-Msg-Id", ""),
                payload=msg.data,
            )
            for index, msg in enumerate(messages)
        ]


class ReadableLog(Protocol):
    """A log `read_log` reads: `AuditedLog`, or a partition's `NatsLog`."""

    stream: str

    async def read(
        self, from_seq: int, *, max_entries: int, wait_ms: int
    ) -> Sequence[LogEntry]: ...


async def read_log(log: ReadableLog, from_seq: int, to_seq: int) -> AsyncIterator[LogEntry]:
    """Entries `from_seq`..`to_seq` in order (LogUnavailable if they do not come)."""
    seq = from_seq
    deadline = time.monotonic() + READ_DEADLINE_MS / 1000
    while seq <= to_seq:
        entries = await log.read(
            seq, max_entries=min(READ_BATCH_ENTRIES, to_seq - seq + 1), wait_ms=READ_WAIT_MS
        )
        if not entries:
            if time.monotonic() > deadline:
                raise LogUnavailable(f"{log.stream}: seq {seq} not readable by its deadline")
            await asyncio.sleep(READ_RETRY_S)
            continue
        for entry in entries:
            yield entry
            seq += 1
        deadline = time.monotonic() + READ_DEADLINE_MS / 1000


@dataclass
class ExportResult:
    entries: int = 0
    checkpoints: int = 0
    ranges: dict[LogName, tuple[int, int]] = field(default_factory=dict)
    """Per partition, the sequences exported (first, last)."""


def checkpoints_of(checkpoints: Sequence[Checkpoint], log: LogName) -> list[Checkpoint]:
    return [cp for cp in checkpoints if cp.partition == log]


async def export_archive(
    endpoint: NatsEndpoint,
    partitions: Sequence[LogName],
    pubkey_pem: bytes,
    out: Path,
    *,
    from_seq: int = 1,
    to_seq: int | None = None,
) -> ExportResult:
    """Write partitions' entries `from_seq`..`to_seq` (default: to the end), the
    frontier before `from_seq`, and the published checkpoints that bear on
    them. Without `to_seq`, every later checkpoint is included too, so entries
    missing from the end of a log show up as a truncation. The checkpoints are
    read first: a checkpoint published meanwhile covers entries read later."""
    assert from_seq >= 1
    result = ExportResult()
    checkpoints: list[Checkpoint] = []
    epochs: list[EpochStart] = []
    frontiers = []
    nc = await endpoint.connect("ironbook-audit-export")
    try:
        published = await read_chains(nc)
        with ArchiveWriter(out, pubkey_pem) as writer:
            for partition in partitions:
                log = AuditedLog(nc, partition)
                last = await log.last_seq()
                end = last if to_seq is None else min(to_seq, last)
                frontier = Frontier()
                tag = log_tag(partition)
                async for entry in read_log(log, 1, min(from_seq - 1, end)):
                    frontier.append(leaf_hash(tag, entry.seq, entry.payload))
                if frontier.size:
                    frontiers.append(frontier_line(partition, frontier))
                async for entry in read_log(log, from_seq, end):
                    writer.entry(entry_line(partition, entry.seq, entry.payload))
                    result.entries += 1
                result.ranges[partition] = (from_seq, end)
                checkpoints += [
                    cp
                    for cp in published.of(partition)
                    if cp.tree_size >= from_seq - 1 and (to_seq is None or cp.tree_size <= end)
                ]
                epochs += published.epochs_of(partition)
            writer.finish(checkpoints, frontiers, epochs)
    finally:
        await close_nats(nc)
    result.checkpoints = len(checkpoints)
    return result


async def _read_tail(
    nc: NatsClient, partition: LogName, frontier_size: int, to_seq: int
) -> tuple[Frontier, list[bytes]]:
    """The frontier of seq 1..`frontier_size` and the payloads after it up to
    `to_seq` (fewer if the log is shorter): memory for the tail only."""
    log = AuditedLog(nc, partition)
    last = min(to_seq, await log.last_seq())
    frontier = Frontier()
    tag = log_tag(partition)
    async for entry in read_log(log, 1, min(frontier_size, last)):
        frontier.append(leaf_hash(tag, entry.seq, entry.payload))
    payloads = [entry.payload async for entry in read_log(log, frontier.size + 1, last)]
    return frontier, payloads


async def receipt_from_log(nc: NatsClient, partition: LogName, seq: int) -> Receipt:
    """The receipt of entry `seq` of `partition`, read from the live log and
    the checkpoint stream (raises `ProofBuildError` when it is not yet
    checkpointed)."""
    published = await read_checkpoint_stream(nc)
    checkpoints = checkpoints_of(published, partition)
    covering = [cp.tree_size for cp in checkpoints if cp.tree_size >= seq]
    frontier, payloads = await _read_tail(
        nc, partition, seq - 1, min(covering) if covering else seq
    )
    return build_receipt(
        partition, seq, frontier=frontier, payloads=payloads, checkpoints=checkpoints
    )


async def consistency_from_log(
    nc: NatsClient, partition: LogName, old_size: int, new_size: int
) -> ConsistencyProof:
    """Proof, from the live log, that the checkpoint at `new_size` extends the
    one at `old_size` (raises `ProofBuildError`)."""
    published = await read_checkpoint_stream(nc)
    frontier, payloads = await _read_tail(nc, partition, old_size, new_size)
    return build_consistency_proof(
        partition,
        old_size,
        new_size,
        frontier=frontier,
        payloads=payloads,
        checkpoints=checkpoints_of(published, partition),
    )


async def start_epochs(
    nc: NatsClient,
    key: Ed25519PrivateKey,
    logs: Sequence[LogName],
    *,
    epoch: int,
    site: str,
    origin_gaps: Mapping[LogName, int],
    now_ms: int,
) -> list[EpochStart]:
    """After a DR takeover, sign and publish an epoch record for each log
    (`replication/audit_epoch.py`): the chain goes on from its last
    checkpoint at or below the log's size here, and the checkpoints signed
    past it are abandoned. `origin_gaps`: for each log whose old primary
    answered (sealed), how many entries it held past this site's copy. A log
    that already has an epoch this high is skipped. Returns the records
    published."""
    published = await read_chains(nc)
    records = []
    for log in logs:
        if any(started.epoch >= epoch for started in published.epochs_of(log)):
            continue
        tree_size = await AuditedLog(nc, log).last_seq()
        gap = origin_gaps.get(log)
        record = sign_epoch(
            key,
            epoch_start(
                published.of(log),
                log=log,
                epoch=epoch,
                site=site,
                tree_size=tree_size,
                origin_size=0 if gap is None else tree_size + gap,
                time_ms=now_ms,
                key_id=key_id(key.public_key()),
            ),
        )
        await publish_epoch(nc, record)
        records.append(record)
    return records
