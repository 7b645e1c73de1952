"""`ironbook restore`: a backup into a new cluster's data directory.

The restore builds the whole cluster in a temporary directory beside the
target one: it checks the manifest, fetches every part of the chosen chain
and checks its hash (refusing the backup if any is damaged or missing), starts
the new cluster's NATS nodes, writes each partition's stream and snapshot
(`adapters.backup.restore`), stops NATS, and only then renames the temporary
directory into place. Anything that goes wrong removes the temporary
directory: the target is either a complete restored cluster or untouched.
`ironbook up --data-dir D2` then starts the replicas, which restore the
snapshot and read the log after it, like after any restart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyrage

from ironbook.adapters.backup.backup import read_manifest
from ironbook.adapters.backup.manifest import Chain, ManifestError, Part
from ironbook.adapters.backup.parts import PartError
from ironbook.adapters.backup.restore import (
    PartitionRestored,
    RestoreError,
    choose_chain,
    fetch_part,
    partition_point,
    restore_partition,
)
from ironbook.adapters.backup.target import Target, TargetError
from ironbook.adapters.keyfiles import create_secret_file_once
from ironbook.adapters.ledger_keys import LEDGER_KEY_FILE
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.replication.point_in_time import RestorePoint
from ironbook.services.local_cluster import LocalCluster

PARTS_DIR = "restore-parts"
NATS_START_TIMEOUT_MS = 60_000


@dataclass
class RestoreSummary:
    data_dir: str
    chain_id: str
    backups: list[str]
    parts: int = 0
    bytes: int = 0
    seconds: float = 0.0
    partitions: list[PartitionRestored] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "data_dir": self.data_dir,
            "chain_id": self.chain_id,
            "backups": self.backups,
            "parts": self.parts,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "partitions": [p.as_json() for p in self.partitions],
        }


def _check_fresh(data_dir: Path) -> None:
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise RestoreError(f"{data_dir} is not empty: restore into a new data directory")


def _fetch_all(target: Target, parts: list[Part], into: Path) -> int:
    """Every part into `into`, each checked; refuses if any is bad."""
    problems = []
    total = 0
    for part in parts:
        data, problem = fetch_part(target, part)
        if data is None:
            problems.append(problem or part.path)
            continue
        path = into / part.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        total += len(data)
    if problems:
        raise RestoreError("the backup is damaged, nothing restored: " + "; ".join(problems))
    return total


def restore(
    target: Target,
    data_dir: Path,
    identity: pyrage.x25519.Identity,
    point: RestorePoint,
    *,
    replicas: int = 3,
    ledger_key: Path | None = None,
    progress: Callable[[str], None] = lambda _t: None,
) -> RestoreSummary:
    """`ledger_key`: the backed-up cluster's batch-signing key
    (`secrets/ledger/batch-ed25519.pem`), installed in the new data directory:
    without it the restored replicas make a key of their own, and quarantine
    every entry the old one signed."""
    started = time.monotonic()
    data_dir = data_dir.resolve()
    _check_fresh(data_dir)
    try:
        manifest = read_manifest(target)
    except (ManifestError, TargetError) as err:
        raise RestoreError(f"{target.name}: {err}; nothing restored") from err
    if manifest is None or not manifest.chains:
        raise RestoreError(f"{target.name} holds no backup")
    chain = choose_chain(manifest, point)
    summary = RestoreSummary(str(data_dir), chain.id, [backup.id for backup in chain.backups])
    parts = [
        part
        for backup in chain.backups
        for partition in backup.partitions
        for part in ([partition.snapshot] if partition.snapshot else []) + partition.log
    ]
    covered = max(p.covered_seq for p in chain.backups[-1].partitions)
    if point.to_seq is not None and point.to_seq > covered:
        raise RestoreError(f"the backup covers up to seq {covered}, not {point.to_seq}")
    temp = data_dir.with_name(f".{data_dir.name}.restoring-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        progress(f"fetching and checking {len(parts)} parts of chain {chain.id} ...")
        summary.parts = len(parts)
        summary.bytes = _fetch_all(target, parts, temp / PARTS_DIR)
        if ledger_key is not None:
            create_secret_file_once(temp / LEDGER_KEY_FILE, ledger_key.read_bytes())
        cluster = LocalCluster(temp, partitions=manifest.partitions)
        cluster.nats.start(timeout_ms=NATS_START_TIMEOUT_MS)
        try:
            summary.partitions = asyncio.run(
                _restore_partitions(
                    cluster.ops,
                    chain,
                    temp / PARTS_DIR,
                    identity,
                    point,
                    replicas=min(replicas, cluster.config.nats_nodes),
                    progress=progress,
                )
            )
        finally:
            cluster.nats.close()
        shutil.rmtree(temp / PARTS_DIR)
        if data_dir.exists():
            data_dir.rmdir()
        temp.rename(data_dir)
    except PartError as err:
        shutil.rmtree(temp, ignore_errors=True)
        raise RestoreError(f"{err}; nothing restored") from err
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    summary.seconds = time.monotonic() - started
    return summary


async def _restore_partitions(
    endpoint: NatsEndpoint,
    chain: Chain,
    parts_dir: Path,
    identity: pyrage.x25519.Identity,
    point: RestorePoint,
    *,
    replicas: int,
    progress: Callable[[str], None],
) -> list[PartitionRestored]:
    restored = []
    nc = await endpoint.connect("ironbook-restore")
    try:
        for partition in range(len(chain.backups[0].partitions)):
            backups = [backup.partitions[partition] for backup in chain.backups]
            done = await restore_partition(
                nc,
                partition,
                backups,
                lambda part: (parts_dir / part.path).read_bytes(),
                identity,
                partition_point(point, backups),
                replicas=replicas,
                progress=progress,
            )
            progress(
                f"partition {partition}: restored to seq {done.restored_seq}, state hash "
                f"{done.state_hash[:16]}... ({done.checked_against})"
            )
            restored.append(done)
    finally:
        await close_nats(nc)
    return restored
