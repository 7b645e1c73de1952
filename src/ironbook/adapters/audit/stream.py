"""The audit tools on a running cluster: read partition logs from JetStream to
export them as an archive, to sign checkpoints over them, or to build proofs.

Reads go through `NatsLog` (batched direct gets). A replica that lags can only
return fewer entries, never different ones, so a read that comes back short
is retried until `READ_DEADLINE_MS` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NatsClient

from ironbook.adapters.audit.archive import (
    CHECKPOINTS_FILE,
    ArchiveWriter,
    entry_line,
    frontier_line,
    read_checkpoints,
)
from ironbook.adapters.audit.keys import PUBKEY_FILE, checkpoint_problem, public_key_pem
from ironbook.adapters.audit.proofs import (
    ConsistencyProof,
    Receipt,
    build_consistency_proof,
    build_receipt,
)
from ironbook.adapters.audit.signer import DEFAULT_EVERY_ENTRIES, HistoryRewritten, LogSigner
from ironbook.adapters.clock import SystemClock
from ironbook.adapters.nats.log import NatsLog
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.replication.checkpoint import Checkpoint, encode_checkpoint
from ironbook.replication.interfaces import Clock, LogEntry, LogUnavailable
from ironbook.replication.merkle import Frontier, leaf_hash, log_tag

READ_BATCH_ENTRIES = 1_000
READ_WAIT_MS = 500
READ_DEADLINE_MS = 30_000

AUDIT_DIR = "audit"
"""Under the data directory: the signer's `checkpoints.jsonl` and `pubkey`."""


async def read_log(log: NatsLog, from_seq: int, to_seq: int) -> AsyncIterator[LogEntry]:
    """Entries `from_seq`..`to_seq` in order (LogUnavailable if they do not come)."""
    seq = from_seq
    deadline = time.monotonic() + READ_DEADLINE_MS / 1000
    while seq <= to_seq:
        entries = await log.read(
            seq, max_entries=min(READ_BATCH_ENTRIES, to_seq - seq + 1), wait_ms=READ_WAIT_MS
        )
        if not entries and time.monotonic() > deadline:
            raise LogUnavailable(f"{log.stream}: seq {seq} not readable by its deadline")
        for entry in entries:
            if entry.seq != seq:
                raise LogUnavailable(f"{log.stream}: read seq {entry.seq}, expected {seq}")
            yield entry
            seq += 1
        if entries:
            deadline = time.monotonic() + READ_DEADLINE_MS / 1000


def _append_lines(path: Path, lines: Sequence[bytes]) -> None:
    """Append and fsync: a checkpoint is kept once this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class SignResult:
    signed: list[Checkpoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Partitions whose log no longer matches what was signed."""
    unavailable: list[str] = field(default_factory=list)
    """Partitions whose log could not be read this run."""


class CheckpointSigner:
    """Signs checkpoints over partition logs, run after run: the first run of a
    partition rebuilds its tree from sequence 1 and checks it against the last
    checkpoint in `audit_dir`; later runs read only the new entries. Each run
    appends its checkpoints to `audit_dir` (and `offsite`) and fsyncs them."""

    def __init__(
        self,
        key: Ed25519PrivateKey,
        audit_dir: Path,
        *,
        offsite: Path | None = None,
        every_entries: int = DEFAULT_EVERY_ENTRIES,
        clock: Clock | None = None,
    ) -> None:
        self._key = key
        self._clock = clock or SystemClock()
        self._audit_dir = audit_dir
        self._offsite = offsite
        self._every_entries = every_entries
        self._signers: dict[int, LogSigner] = {}
        pem = public_key_pem(key.public_key())
        for target in (audit_dir, offsite):
            if target is not None:
                target.mkdir(parents=True, exist_ok=True)
                (target / PUBKEY_FILE).write_bytes(pem)

    async def sign(self, nc: NatsClient, partitions: Sequence[int]) -> SignResult:
        """One run over `partitions`. A partition that no longer matches what
        was signed is a problem; one whose log cannot be read is skipped. Either
        way nothing of it is signed, and it starts over from the checkpoint file
        on the next run (so an unwritten checkpoint never becomes a link)."""
        result = SignResult()
        for partition in partitions:
            try:
                signed = await self._sign_partition(nc, partition)
                lines = [encode_checkpoint(checkpoint) for checkpoint in signed]
                if lines:
                    _append_lines(self._audit_dir / CHECKPOINTS_FILE, lines)
                    if self._offsite is not None:
                        _append_lines(self._offsite / CHECKPOINTS_FILE, lines)
            except HistoryRewritten as err:
                self._signers.pop(partition, None)
                result.problems.append(str(err))
            except LogUnavailable as err:
                self._signers.pop(partition, None)
                result.unavailable.append(f"partition {partition}: {err}")
            except OSError:
                self._signers.pop(partition, None)
                raise
            else:
                result.signed.extend(signed)
        return result

    async def _sign_partition(self, nc: NatsClient, partition: int) -> list[Checkpoint]:
        signer = self._signers.get(partition) or self._start(partition)
        log = NatsLog(nc, partition)
        signed: list[Checkpoint] = []
        try:
            last_seq = await log.last_seq()
            async for entry in read_log(log, signer.frontier.size + 1, last_seq):
                checkpoint = signer.add(entry.seq, entry.payload, self._clock.now_ms())
                if checkpoint is not None:
                    signed.append(checkpoint)
        finally:
            await log.close()
        final = signer.finish(self._clock.now_ms())
        self._signers[partition] = signer
        return [*signed, final] if final is not None else signed

    def _start(self, partition: int) -> LogSigner:
        existing = read_checkpoints(self._audit_dir / CHECKPOINTS_FILE)
        previous = [cp for _, cp in existing if cp.partition == partition]
        last = previous[-1] if previous else None
        if last is not None and (problem := checkpoint_problem(self._key.public_key(), last)):
            raise HistoryRewritten(f"partition {partition}: the last checkpoint is {problem}")
        return LogSigner(self._key, partition, previous=last, every_entries=self._every_entries)


async def sign_checkpoints(
    nats_urls: Sequence[str],
    partitions: Sequence[int],
    signer: CheckpointSigner,
    *,
    every_s: float | None = None,
    stop: asyncio.Event | None = None,
    report: Callable[[SignResult], None] | None = None,
) -> SignResult:
    """One run of `signer` over `partitions`, or with `every_s`, a run every
    `every_s` seconds until one finds a problem (which it returns) or `stop`
    is set (checked between runs, so a run's checkpoints are always written)."""
    stop = stop or asyncio.Event()
    nc = await connect_nats(list(nats_urls), name="ironbook-audit-signer")
    try:
        while True:
            result = await signer.sign(nc, partitions)
            if report is not None:
                report(result)
            if every_s is None or result.problems:
                return result
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            if stop.is_set():
                return result
    finally:
        await close_nats(nc)


@dataclass
class ExportResult:
    entries: int = 0
    checkpoints: int = 0
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per partition, the sequences exported (first, last)."""


async def export_archive(
    nats_urls: Sequence[str],
    partitions: Sequence[int],
    audit_dir: Path,
    out: Path,
    *,
    from_seq: int = 1,
    to_seq: int | None = None,
) -> ExportResult:
    """Write partitions' entries `from_seq`..`to_seq` (default: to the end), the
    frontier before `from_seq`, and the checkpoints in `audit_dir` that bear on
    them. Without `to_seq`, every later checkpoint is included too, so entries
    missing from the end of a log show up as a truncation."""
    assert from_seq >= 1
    result = ExportResult()
    all_checkpoints = [cp for _, cp in read_checkpoints(audit_dir / CHECKPOINTS_FILE)]
    pubkey = audit_dir / PUBKEY_FILE
    checkpoints: list[Checkpoint] = []
    frontiers = []
    nc = await connect_nats(list(nats_urls), name="ironbook-audit-export")
    try:
        with ArchiveWriter(out, pubkey.read_bytes() if pubkey.exists() else b"") as writer:
            for partition in partitions:
                log = NatsLog(nc, partition)
                try:
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
                finally:
                    await log.close()
                result.ranges[partition] = (from_seq, end)
                checkpoints += [
                    cp
                    for cp in all_checkpoints
                    if cp.partition == partition
                    and cp.tree_size >= from_seq - 1
                    and (to_seq is None or cp.tree_size <= end)
                ]
            writer.finish(checkpoints, frontiers)
    finally:
        await close_nats(nc)
    result.checkpoints = len(checkpoints)
    return result


async def _read_tail(
    nats_urls: Sequence[str], partition: int, frontier_size: int, to_seq: int
) -> tuple[Frontier, list[bytes]]:
    """The frontier of seq 1..`frontier_size` and the payloads after it up to
    `to_seq` (fewer if the log is shorter): memory for the tail only."""
    nc = await connect_nats(list(nats_urls), name="ironbook-audit-proofs")
    try:
        log = NatsLog(nc, partition)
        try:
            last = min(to_seq, await log.last_seq())
            frontier = Frontier()
            tag = log_tag(partition)
            async for entry in read_log(log, 1, min(frontier_size, last)):
                frontier.append(leaf_hash(tag, entry.seq, entry.payload))
            payloads = [entry.payload async for entry in read_log(log, frontier.size + 1, last)]
        finally:
            await log.close()
    finally:
        await close_nats(nc)
    return frontier, payloads


def _signed_checkpoints(audit_dir: Path, partition: int) -> list[Checkpoint]:
    return [
        cp for _, cp in read_checkpoints(audit_dir / CHECKPOINTS_FILE) if cp.partition == partition
    ]


async def receipt_from_log(
    nats_urls: Sequence[str], partition: int, seq: int, audit_dir: Path
) -> Receipt:
    """The receipt of entry `seq` of `partition`, read from the live log
    (raises `ProofBuildError` when it is not yet checkpointed)."""
    checkpoints = _signed_checkpoints(audit_dir, partition)
    covering = [cp.tree_size for cp in checkpoints if cp.tree_size >= seq]
    frontier, payloads = await _read_tail(
        nats_urls, partition, seq - 1, min(covering) if covering else seq
    )
    return build_receipt(
        partition, seq, frontier=frontier, payloads=payloads, checkpoints=checkpoints
    )


async def consistency_from_log(
    nats_urls: Sequence[str], partition: int, old_size: int, new_size: int, audit_dir: Path
) -> ConsistencyProof:
    """Proof, from the live log, that the checkpoint at `new_size` extends the
    one at `old_size` (raises `ProofBuildError`)."""
    frontier, payloads = await _read_tail(nats_urls, partition, old_size, new_size)
    return build_consistency_proof(
        partition,
        old_size,
        new_size,
        frontier=frontier,
        payloads=payloads,
        checkpoints=_signed_checkpoints(audit_dir, partition),
    )
