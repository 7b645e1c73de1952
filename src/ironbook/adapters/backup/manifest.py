"""`manifest.json`, at the root of a backup target: what every backup holds.

One JSON document, written in one canonical form (msgspec's compact
encoding) with its own SHA-256 in `sha256`: the hash of the same document
with `sha256` empty. A reader decodes it, encodes it again and requires the
same bytes and the same hash, so any changed byte is found (a broken JSON
value, a changed number or hash, or different spacing). Parts are named by the
SHA-256 of their encrypted bytes; each backup names its parent's record by
its SHA-256, so the chain of incrementals cannot be reordered or cut without
a mismatch. docs/backup.md describes every field.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from ironbook.replication.checkpoint import Checkpoint

FORMAT = "ironbook-backup/1"
MANIFEST_FILE = "manifest.json"
PartKind = Literal["snapshot", "log"]


class ManifestError(ValueError):
    """A manifest that is damaged, or that does not describe a usable backup."""


class Part(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str
    """Relative to the target's root."""
    kind: PartKind
    sha256: str
    """Of the encrypted bytes, as stored."""
    bytes: int
    """Encrypted size."""
    plain_bytes: int
    """Size before compression and encryption."""
    first_seq: int
    last_seq: int
    """A snapshot part: both are the snapshot's sequence."""
    entries: int


class PartitionBackup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    partition: int
    snapshot: Part | None
    """Full backups: the newest snapshot (None: the log from sequence 1)."""
    base_seq: int
    """Full: the snapshot's sequence (0 without one). Incremental: the
    previous backup's `covered_seq`. The log parts hold `base_seq + 1` to
    `covered_seq`."""
    base_time_ms: int | None
    """Log time of the entry at `base_seq` (None: sequence 0, or no events)."""
    covered_seq: int
    covered_time_ms: int | None
    covered_batch_id: str
    """The batch id of the entry at `covered_seq`: the next incremental
    starts only on a log that still has it there."""
    state_hash: str
    """The state hash at `covered_seq` (fold of the snapshot and the log)."""
    log: list[Part]
    audit_checkpoint: Checkpoint | None
    """The newest signed checkpoint of this log with a tree size at most
    `covered_seq`, if the cluster's audit signer has made one."""


BackupKind = Literal["full", "incremental"]


class Backup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    kind: BackupKind
    created_ms: int
    parent_id: str | None
    parent_sha256: str | None
    """SHA-256 of the parent `Backup` record, canonically encoded."""
    partitions: list[PartitionBackup]


class Chain(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A full backup and the incrementals on top of it, oldest first."""

    id: str
    backups: list[Backup]


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: str = FORMAT
    partitions: int
    recipients: list[str]
    """The age recipients the parts are encrypted to."""
    chains: list[Chain]
    """Oldest first."""
    sha256: str = ""

    def parts(self) -> list[Part]:
        return [
            part
            for chain in self.chains
            for backup in chain.backups
            for partition in backup.partitions
            for part in ([partition.snapshot] if partition.snapshot else []) + partition.log
        ]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Manifest)


def record_sha256(backup: Backup) -> str:
    return hashlib.sha256(_encoder.encode(backup)).hexdigest()


def encode_manifest(manifest: Manifest) -> bytes:
    unsealed = msgspec.structs.replace(manifest, sha256="")
    digest = hashlib.sha256(_encoder.encode(unsealed)).hexdigest()
    return _encoder.encode(msgspec.structs.replace(manifest, sha256=digest))


def decode_manifest(data: bytes) -> Manifest:
    """Raises `ManifestError` unless `data` is a manifest exactly as written."""
    try:
        manifest = _decoder.decode(data)
    except msgspec.DecodeError as err:
        raise ManifestError(f"{MANIFEST_FILE} is damaged: {err}") from err
    if manifest.format != FORMAT:
        raise ManifestError(f"{MANIFEST_FILE}: format {manifest.format!r}, expected {FORMAT!r}")
    if encode_manifest(manifest) != data:
        raise ManifestError(f"{MANIFEST_FILE} is damaged: its SHA-256 does not match its contents")
    _check_chains(manifest)
    return manifest


def _check_chains(manifest: Manifest) -> None:
    for chain in manifest.chains:
        parent: Backup | None = None
        for backup in chain.backups:
            expected = (None, None) if parent is None else (parent.id, record_sha256(parent))
            if (backup.parent_id, backup.parent_sha256) != expected:
                raise ManifestError(f"backup {backup.id}: does not follow {expected[0]}")
            if (backup.kind == "full") != (parent is None):
                raise ManifestError(f"backup {backup.id}: a {backup.kind} backup at that place")
            if len(backup.partitions) != manifest.partitions:
                raise ManifestError(f"backup {backup.id}: not every partition")
            parent = backup
