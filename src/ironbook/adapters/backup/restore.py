"""Checking a backup, and writing one partition of it into a JetStream cluster.

`verify_backup` reads the manifest and every part it names and compares each
part's size and SHA-256 with the manifest, without decrypting anything.

`restore_partition` writes one partition of a chain into a cluster that does
not have its stream yet: the stream is created to start right after the
snapshot's sequence (`first_seq`), the entries are appended as they were
stored (same sequences, same batch ids, each appended only if the stream ends
where it should), and the snapshot is put in the snapshot store. The state is
folded with the pure core as the entries go in, up to the restore point; at
the end it must match the state hash the manifest recorded at that point (when
it recorded one) and the ledger's invariants, and a fold of the stream read
back from the cluster must give the same hash.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pyrage
from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.audit.stream import read_log
from ironbook.adapters.backup.backup import PROGRESS_EVERY_S
from ironbook.adapters.backup.manifest import Chain, Manifest, Part, PartitionBackup
from ironbook.adapters.backup.parts import read_segment, read_snapshot, unseal
from ironbook.adapters.backup.target import MissingFile, Target, TargetError
from ironbook.adapters.nats.log import NatsLog, ledger_stream_config
from ironbook.adapters.nats.provision import ensure_stream
from ironbook.adapters.nats.snapshots import NatsSnapshotStore
from ironbook.replication.follower import SnapshotCorrupt, replay_from
from ironbook.replication.interfaces import (
    AppendUnknown,
    LogUnavailable,
    Snapshot,
    SnapshotUnavailable,
)
from ironbook.replication.point_in_time import PointInTimeFold, RestorePoint

RETRY_ATTEMPTS = 6
RETRY_BACKOFF_S = 0.2


T = TypeVar("T")


async def _retrying(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """`call`, again after a short pause when NATS did not answer in time
    (the new cluster is busy); an append is idempotent by its batch id."""
    for attempt in range(RETRY_ATTEMPTS):
        try:
            return await call()
        except (AppendUnknown, LogUnavailable, SnapshotUnavailable) as err:
            if attempt == RETRY_ATTEMPTS - 1:
                raise RestoreError(f"{what}: {err}") from err
            await asyncio.sleep(RETRY_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


class RestoreError(Exception):
    """The backup cannot be restored as asked (the message says why)."""


@dataclass
class VerifyResult:
    parts: int = 0
    bytes: int = 0
    bad: list[str] = field(default_factory=list)
    """One line per damaged or missing part: its path and what is wrong."""


def check_part(part: Part, data: bytes) -> str | None:
    """What is wrong with `data` as `part` (None: it is the part)."""
    if len(data) != part.bytes:
        return f"{part.path}: {len(data)} bytes, the manifest says {part.bytes}"
    if hashlib.sha256(data).hexdigest() != part.sha256:
        return f"{part.path}: SHA-256 does not match the manifest"
    return None


def fetch_part(target: Target, part: Part) -> tuple[bytes | None, str | None]:
    """(its bytes, None) when it is whole, (None, what is wrong) otherwise."""
    try:
        data = target.get(part.path)
    except MissingFile:
        return None, f"{part.path}: missing"
    except TargetError as err:
        return None, f"{part.path}: {err}"
    problem = check_part(part, data)
    return (None, problem) if problem else (data, None)


def verify_backup(
    target: Target, manifest: Manifest, progress: Callable[[str], None] = lambda _t: None
) -> VerifyResult:
    result = VerifyResult()
    parts = manifest.parts()
    reported = time.monotonic()
    for number, part in enumerate(parts, 1):
        data, problem = fetch_part(target, part)
        result.parts += 1
        if problem is not None:
            result.bad.append(problem)
        elif data is not None:
            result.bytes += len(data)
        if time.monotonic() - reported >= PROGRESS_EVERY_S:
            reported = time.monotonic()
            progress(f"{number} of {len(parts)} parts checked")
    return result


def choose_chain(manifest: Manifest, point: RestorePoint) -> Chain:
    """The newest chain whose full backup is at or before `point`."""
    for chain in reversed(manifest.chains):
        bases = chain.backups[0].partitions
        if point.to_seq is not None and any(p.base_seq > point.to_seq for p in bases):
            continue
        if point.to_time_ms is not None and any(
            p.base_time_ms is not None and p.base_time_ms > point.to_time_ms for p in bases
        ):
            continue
        return chain
    oldest = manifest.chains[0].backups[0].partitions if manifest.chains else []
    reach = ", ".join(
        f"partition {p.partition}: seq {p.base_seq} (log time {p.base_time_ms} ms)" for p in oldest
    )
    raise RestoreError(f"no backup reaches back that far; the oldest points are {reach}")


def partition_point(point: RestorePoint, backups: Sequence[PartitionBackup]) -> RestorePoint:
    """`point` for one partition: a sequence past its backup's end is its end."""
    covered = backups[-1].covered_seq
    if point.to_seq is not None and point.to_seq > covered:
        return RestorePoint(to_seq=covered)
    return point


@dataclass
class PartitionRestored:
    partition: int
    snapshot_seq: int
    restored_seq: int
    state_hash: str
    entries: int
    """Entries appended to the new stream."""
    checked_against: str
    """`manifest`: equal to the state hash recorded at that sequence;
    `fold`: no hash recorded there, equal to the fold of the backup."""
    last_time_ms: int | None
    audit_checkpoint_size: int | None

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


async def restore_partition(
    nc: NatsClient,
    partition: int,
    backups: Sequence[PartitionBackup],
    read_part: Callable[[Part], bytes],
    identity: pyrage.x25519.Identity,
    point: RestorePoint,
    *,
    replicas: int,
    progress: Callable[[str], None] = lambda _t: None,
) -> PartitionRestored:
    """Restore one partition of a chain (its backups, oldest first, the full
    one first) into the cluster `nc` is connected to; see the module doc."""
    full = backups[0]
    assert full.snapshot is not None
    what = full.snapshot.path
    snapshot = read_snapshot(unseal(read_part(full.snapshot), identity, what), what)
    if snapshot.seq != full.base_seq:
        raise RestoreError(f"{full.snapshot.path}: snapshot at {snapshot.seq}, not {full.base_seq}")
    try:
        # The restored cluster's key is not the one that signed the log (the
        # backup does not carry secrets): signatures are trusted unchecked.
        fold = PointInTimeFold(replay_from(snapshot, verifier=None), point)
    except SnapshotCorrupt as err:
        raise RestoreError(f"{full.snapshot.path}: {err}") from err
    config = dataclasses.replace(
        ledger_stream_config(partition, replicas=replicas), first_seq=snapshot.seq + 1
    )
    await ensure_stream(nc.jetstream(), config)
    log = NatsLog(nc, partition)
    try:
        appended = await _append_parts(log, partition, backups, read_part, identity, fold, progress)
        if snapshot.seq > 0:
            store = await NatsSnapshotStore.open(nc, partition, replicas=replicas)
            await _retrying("snapshot upload", lambda: store.put(snapshot))
        state_hash = core.state_hash(fold.replay.state)
        checked_against = _check_state(partition, backups, fold, state_hash)
        await _check_read_back(log, partition, snapshot, fold.replay.applied_seq, state_hash)
    finally:
        await log.close()
    restored_seq = fold.replay.applied_seq
    checkpoints = [
        b.audit_checkpoint
        for b in backups
        if b.audit_checkpoint is not None and b.audit_checkpoint.tree_size <= restored_seq
    ]
    return PartitionRestored(
        partition=partition,
        snapshot_seq=snapshot.seq,
        restored_seq=restored_seq,
        state_hash=state_hash,
        entries=appended,
        checked_against=checked_against,
        last_time_ms=fold.last_time_ms,
        audit_checkpoint_size=max((cp.tree_size for cp in checkpoints), default=None),
    )


async def _append_parts(
    log: NatsLog,
    partition: int,
    backups: Sequence[PartitionBackup],
    read_part: Callable[[Part], bytes],
    identity: pyrage.x25519.Identity,
    fold: PointInTimeFold,
    progress: Callable[[str], None],
) -> int:
    expected_last_seq = fold.replay.applied_seq
    appended = 0
    reported = time.monotonic()
    for part in (part for backup in backups for part in backup.log):
        if fold.reached:
            break
        segment = read_segment(unseal(read_part(part), identity, part.path), part.path)
        seqs = [entry.seq for entry in segment.entries]
        if (
            segment.partition != partition
            or seqs != list(range(part.first_seq, part.last_seq + 1))
            or part.first_seq != expected_last_seq + 1
        ):
            raise RestoreError(
                f"{part.path}: holds partition {segment.partition} seqs "
                f"{seqs[:1]}..{seqs[-1:]}, expected partition {partition} from "
                f"{expected_last_seq + 1}"
            )
        for entry in segment.entries:
            if not fold.apply(entry):
                break
            seq = await _retrying(
                f"append of entry {entry.seq}",
                functools.partial(
                    log.append,
                    entry.payload,
                    expected_last_seq=expected_last_seq,
                    batch_id=entry.batch_id,
                ),
            )
            if seq != entry.seq:
                raise RestoreError(f"partition {partition}: entry {entry.seq} landed at {seq}")
            expected_last_seq = seq
            appended += 1
            if time.monotonic() - reported >= PROGRESS_EVERY_S:
                reported = time.monotonic()
                progress(f"partition {partition}: {appended:,} entries restored (at {seq})")
    return appended


def _check_state(
    partition: int, backups: Sequence[PartitionBackup], fold: PointInTimeFold, state_hash: str
) -> str:
    problems = core.check_invariants(fold.replay.state)
    if problems:
        raise RestoreError(f"partition {partition}: invariants broken: {'; '.join(problems)}")
    recorded = [b.state_hash for b in backups if b.covered_seq == fold.replay.applied_seq]
    if not recorded:
        return "fold"
    if recorded[-1] != state_hash:
        raise RestoreError(
            f"partition {partition}: state at {fold.replay.applied_seq} hashes to {state_hash}, "
            f"the manifest recorded {recorded[-1]}"
        )
    return "manifest"


async def _check_read_back(
    log: NatsLog, partition: int, snapshot: Snapshot, last_seq: int, state_hash: str
) -> None:
    """Fold the restored stream as the replicas will read it."""
    replay = replay_from(snapshot, verifier=None)
    async for entry in read_log(log, snapshot.seq + 1, last_seq):
        replay.apply(entry)
    if core.state_hash(replay.state) != state_hash:
        raise RestoreError(f"partition {partition}: the restored stream folds to another state")
