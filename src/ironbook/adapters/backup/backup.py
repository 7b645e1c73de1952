"""Taking a backup of a running cluster's ledger to a target.

Per partition: a full backup stores the newest snapshot of the snapshot store
and the log entries after it up to the log's last sequence; an incremental
one stores the entries after the previous backup of its chain. Either way the
state hash at the covered sequence is computed by folding the newest stored
snapshot and the log after it with the pure core, and written in the
manifest. Parts go to the target first; the manifest, last, makes them part
of the backup (a backup cut short leaves only files no manifest names, which
the next run's retention or the operator may delete).
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pyrage
from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.audit.archive import CHECKPOINTS_FILE, ArchiveError, read_checkpoints
from ironbook.adapters.audit.stream import AUDIT_DIR, read_log
from ironbook.adapters.backup.manifest import (
    MANIFEST_FILE,
    Backup,
    BackupKind,
    Chain,
    Manifest,
    ManifestError,
    Part,
    PartitionBackup,
    PartKind,
    decode_manifest,
    encode_manifest,
    record_sha256,
)
from ironbook.adapters.backup.parts import (
    SEGMENT_MAX_BYTES,
    SEGMENT_MAX_ENTRIES,
    seal,
    segment_plain,
    sha256_hex,
    snapshot_plain,
)
from ironbook.adapters.backup.target import MissingFile, Target
from ironbook.adapters.ledger_keys import ledger_verifier
from ironbook.adapters.nats.log import NatsLog
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.adapters.nats.security import NatsCredentials
from ironbook.adapters.nats.snapshots import NatsSnapshotStore
from ironbook.replication.batch import ReplayState
from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.follower import replay_from, take_snapshot
from ironbook.replication.interfaces import LogEntry, Snapshot
from ironbook.replication.point_in_time import entry_time_ms

PROGRESS_EVERY_S = 2.0

Progress = Callable[[str], None]
LedgerConfigOf = Callable[[int], core.LedgerConfig]


class BackupError(Exception):
    """The backup cannot be taken (the message says why); nothing of it is kept."""


@dataclass
class FoldMemory:
    """The states one backup process folded for its last backup, by
    partition. Its next incremental continues from them instead of folding
    the log again from the newest stored snapshot: a scheduled backup then
    costs the new entries, not the history since the snapshot."""

    backup_id: str | None = None
    replays: dict[int, ReplayState] = field(default_factory=dict)

    def at(self, previous: Backup | None, partition: int) -> ReplayState | None:
        if previous is None or previous.id != self.backup_id:
            return None
        replay = self.replays.get(partition)
        covered = previous.partitions[partition].covered_seq
        return replay if replay is not None and replay.applied_seq == covered else None


@dataclass
class BackupSummary:
    target: str
    kind: BackupKind | None
    """None: nothing new since the last backup, nothing written."""
    backup_id: str | None
    chain_id: str | None
    seconds: float = 0.0
    bytes: int = 0
    """Encrypted bytes written by this backup."""
    plain_bytes: int = 0
    parts: int = 0
    partitions: dict[int, dict[str, object]] = field(default_factory=dict)
    deleted_chains: list[str] = field(default_factory=list)


def chain_dir(chain_id: str) -> str:
    return f"chains/{chain_id}"


def read_manifest(target: Target) -> Manifest | None:
    """The target's manifest (None: no backup there yet); `ManifestError` if damaged."""
    try:
        data = target.get(MANIFEST_FILE)
    except MissingFile:
        return None
    return decode_manifest(data)


def new_backup_id(now_ms: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ms / 1000))
    return f"{stamp}-{secrets.token_hex(3)}"


def newest_checkpoint(data_dir: Path, partition: int, covered_seq: int) -> Checkpoint | None:
    """The newest signed checkpoint of `partition` within the covered log."""
    try:
        checkpoints = read_checkpoints(data_dir / AUDIT_DIR / CHECKPOINTS_FILE)
    except ArchiveError:
        return None
    covering = [
        cp for _, cp in checkpoints if cp.partition == partition and cp.tree_size <= covered_seq
    ]
    return max(covering, key=lambda cp: cp.tree_size, default=None)


class _PartWriter:
    """Seals and stores one backup's parts, counting what it wrote."""

    def __init__(
        self, target: Target, directory: str, recipients: Sequence[pyrage.x25519.Recipient]
    ) -> None:
        self._target = target
        self._directory = directory
        self._recipients = recipients
        self.bytes = 0
        self.plain_bytes = 0
        self.parts = 0

    async def write(
        self, name: str, kind: PartKind, plain: bytes, first_seq: int, last_seq: int, entries: int
    ) -> Part:
        sealed = await asyncio.to_thread(seal, plain, self._recipients)
        path = f"{self._directory}/{name}"
        await asyncio.to_thread(self._target.put, path, sealed)
        self.bytes += len(sealed)
        self.plain_bytes += len(plain)
        self.parts += 1
        return Part(
            path=path,
            kind=kind,
            sha256=sha256_hex(sealed),
            bytes=len(sealed),
            plain_bytes=len(plain),
            first_seq=first_seq,
            last_seq=last_seq,
            entries=entries,
        )


@dataclass
class _Plan:
    kind: BackupKind
    chain: Chain | None
    """The chain an incremental extends."""
    previous: Backup | None


def _plan(
    manifest: Manifest | None, recipients: list[str], *, full: bool, chain_length: int
) -> _Plan:
    if manifest is None or not manifest.chains or full:
        return _Plan("full", None, None)
    if sorted(manifest.recipients) != sorted(recipients):
        return _Plan("full", None, None)  # new keys: a new chain, readable by them
    chain = manifest.chains[-1]
    if len(chain.backups) >= chain_length:
        return _Plan("full", None, None)
    return _Plan("incremental", chain, chain.backups[-1])


async def take_backup(
    nats_urls: Sequence[str],
    partitions: int,
    target: Target,
    *,
    recipients: list[str],
    sealed_to: Sequence[pyrage.x25519.Recipient],
    keep: int,
    chain_length: int,
    data_dir: Path,
    ledger_config: LedgerConfigOf,
    replicas: int = 3,
    full: bool = False,
    memory: FoldMemory | None = None,
    progress: Progress = lambda _text: None,
    credentials: NatsCredentials | None = None,
) -> BackupSummary:
    """One backup of every partition to `target` (see the module doc);
    a chain holds at most `chain_length` backups (then a full one starts the
    next); `keep` chains are kept, older ones deleted after the manifest no
    longer names them. `credentials`: the backup identity's, on a secured
    cluster (it only reads)."""
    assert keep >= 1 and partitions >= 1
    started = time.monotonic()
    try:
        manifest = await asyncio.to_thread(read_manifest, target)
    except ManifestError as err:
        raise BackupError(f"{target.name}: {err}; verify it, or back up to a new target") from err
    if manifest is not None and manifest.partitions != partitions:
        raise BackupError(
            f"{target.name} holds backups of {manifest.partitions} partition(s), "
            f"this cluster has {partitions}: use another target"
        )
    plan = _plan(manifest, recipients, full=full, chain_length=chain_length)
    now_ms = time.time_ns() // 1_000_000
    backup_id = new_backup_id(now_ms)
    chain_id = plan.chain.id if plan.chain is not None else backup_id
    directory = f"{chain_dir(chain_id)}/{backup_id}"
    writer = _PartWriter(target, directory, sealed_to)
    summary = BackupSummary(target.name, plan.kind, backup_id, chain_id)
    memory = memory if memory is not None else FoldMemory()
    remembered = {p: memory.at(plan.previous, p) for p in range(partitions)}
    # Cleared until this backup is written: its states are about to move on.
    memory.backup_id, memory.replays = None, {}
    nc = await connect_nats(list(nats_urls), credentials=credentials, name="ironbook-backup")
    try:
        records = []
        replays = {}
        for partition in range(partitions):
            previous = plan.previous.partitions[partition] if plan.previous is not None else None
            record, replays[partition] = await _back_up_partition(
                nc,
                partition,
                writer,
                previous=previous,
                replicas=replicas,
                data_dir=data_dir,
                ledger_config=ledger_config(partition),
                remembered=remembered[partition],
                progress=progress,
            )
            records.append(record)
    except BaseException:
        # What this run wrote: its backup's directory, or its new chain's.
        written = directory if plan.chain is not None else chain_dir(chain_id)
        await asyncio.to_thread(target.delete_tree, written)
        raise
    finally:
        await close_nats(nc)
    if plan.previous is not None and all(
        record.covered_seq == old.covered_seq
        for record, old in zip(records, plan.previous.partitions, strict=True)
    ):
        await asyncio.to_thread(target.delete_tree, directory)
        memory.backup_id, memory.replays = plan.previous.id, replays
        progress("nothing new since the last backup: nothing written")
        summary.kind = summary.backup_id = None
        summary.seconds = time.monotonic() - started
        return summary
    backup = Backup(
        id=backup_id,
        kind=plan.kind,
        created_ms=now_ms,
        parent_id=plan.previous.id if plan.previous is not None else None,
        parent_sha256=record_sha256(plan.previous) if plan.previous is not None else None,
        partitions=records,
    )
    chains = list(manifest.chains) if manifest is not None else []
    if plan.chain is not None:
        chains[-1] = msgspec.structs.replace(plan.chain, backups=[*plan.chain.backups, backup])
    else:
        chains.append(Chain(id=chain_id, backups=[backup]))
    dropped, chains = chains[:-keep], chains[-keep:]
    updated = Manifest(partitions=partitions, recipients=sorted(recipients), chains=chains)
    await asyncio.to_thread(target.put, MANIFEST_FILE, encode_manifest(updated))
    memory.backup_id, memory.replays = backup_id, replays
    for chain in dropped:
        await asyncio.to_thread(target.delete_tree, chain_dir(chain.id))
        summary.deleted_chains.append(chain.id)
    summary.seconds = time.monotonic() - started
    summary.bytes = writer.bytes
    summary.plain_bytes = writer.plain_bytes
    summary.parts = writer.parts
    for record in records:
        summary.partitions[record.partition] = {
            "base_seq": record.base_seq,
            "covered_seq": record.covered_seq,
            "state_hash": record.state_hash,
            "snapshot_seq": record.snapshot.first_seq if record.snapshot else None,
            "log_entries": sum(part.entries for part in record.log),
            "audit_checkpoint_size": record.audit_checkpoint.tree_size
            if record.audit_checkpoint
            else None,
        }
    return summary


async def _back_up_partition(
    nc: NatsClient,
    partition: int,
    writer: _PartWriter,
    *,
    previous: PartitionBackup | None,
    replicas: int,
    data_dir: Path,
    ledger_config: core.LedgerConfig,
    remembered: ReplayState | None,
    progress: Progress,
) -> tuple[PartitionBackup, ReplayState]:
    log = NatsLog(nc, partition)
    # The replicas' fold rule: the manifest's state hashes are theirs.
    verifier = ledger_verifier(data_dir, partition)
    try:
        stored = None
        if previous is not None and remembered is not None:
            replay = remembered
        else:
            # The snapshot first: the log's end is then at or past it.
            store = await NatsSnapshotStore.open(nc, partition, replicas=replicas)
            stored = await store.latest()
        last_seq = await log.last_seq()
        if stored is not None:
            if stored.seq > last_seq:
                raise BackupError(
                    f"partition {partition}: snapshot at {stored.seq} past the log's end"
                )
            replay = await asyncio.to_thread(
                functools.partial(replay_from, stored, verifier=verifier)
            )
        elif previous is None or remembered is None:
            replay = ReplayState.empty(ledger_config, verifier=verifier)
        snapshot_part = None
        if previous is None:
            snapshot: Snapshot = stored if stored is not None else take_snapshot(replay)
            snapshot_part = await writer.write(
                f"p{partition}-snapshot-{snapshot.seq:020d}.age",
                "snapshot",
                await asyncio.to_thread(snapshot_plain, snapshot),
                snapshot.seq,
                snapshot.seq,
                0,
            )
            base_seq = snapshot.seq
        else:
            base_seq = previous.covered_seq
            await _check_continues(log, partition, previous, last_seq)
        base_time_ms = await _time_at(log, base_seq)
        covered = await _copy_log(
            log, partition, writer, replay, base_seq=base_seq, last_seq=last_seq, progress=progress
        )
    finally:
        await log.close()
    state_hash = await asyncio.to_thread(core.state_hash, replay.state)
    record = PartitionBackup(
        partition=partition,
        snapshot=snapshot_part,
        base_seq=base_seq,
        base_time_ms=base_time_ms,
        covered_seq=last_seq,
        covered_time_ms=covered.time_ms if covered.time_ms is not None else base_time_ms,
        covered_batch_id=covered.batch_id
        if covered.batch_id is not None
        else (previous.covered_batch_id if previous is not None else ""),
        state_hash=state_hash,
        log=covered.parts,
        audit_checkpoint=newest_checkpoint(data_dir, partition, last_seq),
    )
    return record, replay


async def _check_continues(
    log: NatsLog, partition: int, previous: PartitionBackup, last_seq: int
) -> None:
    """An incremental extends its chain only on the log that chain holds."""
    if previous.covered_seq == 0:
        return
    if last_seq < previous.covered_seq:
        raise BackupError(
            f"partition {partition}: the log ends at {last_seq}, before the last backup's "
            f"{previous.covered_seq}: this is another log; back up with --full"
        )
    async for entry in read_log(log, previous.covered_seq, previous.covered_seq):
        if entry.batch_id != previous.covered_batch_id:
            raise BackupError(
                f"partition {partition}: entry {entry.seq} is not the one the last backup "
                "ended with: this is another log; back up with --full"
            )


async def _time_at(log: NatsLog, seq: int) -> int | None:
    if seq == 0:
        return None
    async for entry in read_log(log, seq, seq):
        return entry_time_ms(entry)
    return None


@dataclass
class _Covered:
    parts: list[Part] = field(default_factory=list)
    time_ms: int | None = None
    batch_id: str | None = None


async def _copy_log(
    log: NatsLog,
    partition: int,
    writer: _PartWriter,
    replay: ReplayState,
    *,
    base_seq: int,
    last_seq: int,
    progress: Progress,
) -> _Covered:
    """Write entries `base_seq + 1`..`last_seq` in segments, folding every
    entry past `replay`'s sequence into it (the stored snapshot may be older
    or newer than `base_seq`)."""
    covered = _Covered()
    segment: list[LogEntry] = []
    segment_bytes = 0
    from_seq = min(base_seq, replay.applied_seq) + 1
    total = last_seq - from_seq + 1
    reported = time.monotonic()

    async def flush() -> None:
        nonlocal segment, segment_bytes
        if segment:
            first, last = segment[0].seq, segment[-1].seq
            covered.parts.append(
                await writer.write(
                    f"p{partition}-log-{first:020d}-{last:020d}.age",
                    "log",
                    await asyncio.to_thread(segment_plain, partition, segment),
                    first,
                    last,
                    len(segment),
                )
            )
        segment, segment_bytes = [], 0

    async for entry in read_log(log, from_seq, last_seq):
        if entry.seq > replay.applied_seq:
            events = replay.apply(entry)
            at_ms = max((e.at_ms for e in events), default=None) if events else None
            # An entry may hold a thousand bets: let the loop breathe (the
            # process's liveness file is touched from it).
            await asyncio.sleep(0)
        else:
            at_ms = None
        if entry.seq > base_seq:
            if at_ms is None:
                at_ms = entry_time_ms(entry)
            covered.time_ms = at_ms if at_ms is not None else covered.time_ms
            covered.batch_id = entry.batch_id
            segment.append(entry)
            segment_bytes += len(entry.payload)
            if len(segment) >= SEGMENT_MAX_ENTRIES or segment_bytes >= SEGMENT_MAX_BYTES:
                await flush()
        if time.monotonic() - reported >= PROGRESS_EVERY_S:
            reported = time.monotonic()
            done = entry.seq - from_seq + 1
            progress(f"partition {partition}: {done:,} of {total:,} log entries read")
    await flush()
    progress(f"partition {partition}: log {base_seq + 1}..{last_seq} backed up")
    return covered
