"""Backup pieces without a cluster: the manifest's self-hash and chain links,
targets (a directory, and an rclone remote when rclone is installed), age
keys, sealed parts, and the point-in-time fold."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import msgspec
import pytest

from ironbook.adapters.backup.keys import (
    BackupKeyError,
    generate_identity,
    load_identity,
    parse_recipients,
)
from ironbook.adapters.backup.manifest import (
    Backup,
    Chain,
    Manifest,
    ManifestError,
    Part,
    PartitionBackup,
    decode_manifest,
    encode_manifest,
    record_sha256,
)
from ironbook.adapters.backup.parts import (
    PartError,
    read_segment,
    seal,
    segment_plain,
    unseal,
)
from ironbook.adapters.backup.restore import RestoreError, check_part
from ironbook.adapters.backup.target import (
    DirectoryTarget,
    MissingFile,
    TargetError,
    open_target,
)
from ironbook.core.events import AccountOpened, AccountReply
from ironbook.replication.batch import ReplayState, encode_batch
from ironbook.replication.interfaces import LogEntry
from ironbook.replication.point_in_time import PointInTimeFold, RestorePoint
from ironbook.services.restore import restore


def _part(path: str, kind: str = "log") -> Part:
    return Part(
        path=path,
        kind="log" if kind == "log" else "snapshot",
        sha256="ab" * 32,
        bytes=10,
        plain_bytes=12,
        first_seq=1,
        last_seq=2,
        entries=2,
    )


def _partition(covered: int, snapshot: Part | None) -> PartitionBackup:
    return PartitionBackup(
        partition=0,
        snapshot=snapshot,
        base_seq=0,
        base_time_ms=None,
        covered_seq=covered,
        covered_time_ms=1_000,
        covered_batch_id="b",
        state_hash="cd" * 32,
        log=[_part(f"chains/a/a/p0-log-{covered}.age")],
        audit_checkpoint=None,
    )


def _manifest() -> Manifest:
    full = Backup(
        id="a",
        kind="full",
        created_ms=1,
        parent_id=None,
        parent_sha256=None,
        partitions=[_partition(2, _part("chains/a/a/p0-snapshot.age", "snapshot"))],
    )
    incremental = Backup(
        id="b",
        kind="incremental",
        created_ms=2,
        parent_id="a",
        parent_sha256=record_sha256(full),
        partitions=[_partition(4, None)],
    )
    return Manifest(
        partitions=1, recipients=["age1x"], chains=[Chain(id="a", backups=[full, incremental])]
    )


def test_a_manifest_reads_back_as_written() -> None:
    manifest = _manifest()
    assert decode_manifest(encode_manifest(manifest)) == msgspec.structs.replace(
        manifest, sha256=decode_manifest(encode_manifest(manifest)).sha256
    )


def test_every_changed_byte_of_a_manifest_is_refused() -> None:
    data = encode_manifest(_manifest())
    for index in range(len(data)):
        for flip in (0x01, 0x20):
            damaged = bytearray(data)
            damaged[index] ^= flip
            with pytest.raises(ManifestError):
                decode_manifest(bytes(damaged))


def test_a_chain_cut_or_reordered_is_refused() -> None:
    manifest = _manifest()
    full, incremental = manifest.chains[0].backups
    for backups in ([incremental], [incremental, full], [full, full]):
        cut = msgspec.structs.replace(manifest, chains=[Chain(id="a", backups=backups)])
        with pytest.raises(ManifestError):
            decode_manifest(encode_manifest(cut))


def test_a_directory_target_stores_whole_files(tmp_path: Path) -> None:
    target = DirectoryTarget(tmp_path / "t")
    target.put("chains/a/b.age", b"data")
    assert target.get("chains/a/b.age") == b"data"
    assert [p.name for p in (tmp_path / "t" / "chains" / "a").iterdir()] == ["b.age"]
    with pytest.raises(MissingFile):
        target.get("chains/a/c.age")
    for outside in ("../x", "/etc/passwd", ""):
        with pytest.raises(TargetError):
            target.put(outside, b"no")
    target.delete_tree("chains")
    target.delete_tree("chains")
    assert not (tmp_path / "t" / "chains").exists()


@pytest.mark.skipif(
    shutil.which("rclone") is None and os.geteuid() != 0,
    reason="rclone not installed (`make backup-tools` as root installs it)",
)
def test_an_rclone_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A remote of rclone's `local` backend, configured through the environment.
    monkeypatch.setenv("RCLONE_CONFIG_OFFSITE_TYPE", "local")
    target = open_target(f"rclone:offsite:{tmp_path / 'remote'}")
    target.put("chains/a/b.age", b"data")
    assert (tmp_path / "remote" / "chains" / "a" / "b.age").read_bytes() == b"data"
    assert target.get("chains/a/b.age") == b"data"
    with pytest.raises(MissingFile):
        target.get("chains/a/c.age")
    target.delete_tree("chains/a")
    target.delete_tree("chains/a")
    assert not (tmp_path / "remote" / "chains" / "a").exists()


def test_rclone_targets_name_a_remote() -> None:
    with pytest.raises(TargetError, match="rclone:<remote>:<path>"):
        open_target("rclone:no-colon")


def test_keys_seal_and_unseal(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "backup" / "identity.txt"
    recipient = generate_identity(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(BackupKeyError, match="exists"):
        generate_identity(path)
    identity = load_identity(path)
    sealed = seal(b"ledger", parse_recipients([recipient]))
    assert b"ledger" not in sealed
    assert unseal(sealed, identity, "part") == b"ledger"
    damaged = bytearray(sealed)
    damaged[-1] ^= 1
    with pytest.raises(PartError, match="does not decrypt"):
        unseal(bytes(damaged), identity, "part")
    other = tmp_path / "other.txt"
    generate_identity(other)
    with pytest.raises(PartError):
        unseal(sealed, load_identity(other), "part")


def test_keys_refuse_exposed_identities_and_bad_recipients(tmp_path: Path) -> None:
    path = tmp_path / "identity.txt"
    generate_identity(path)
    os.chmod(path, 0o644)
    with pytest.raises(BackupKeyError, match="chmod 600"):
        load_identity(path)
    with pytest.raises(BackupKeyError, match="no backup recipients"):
        parse_recipients([])
    with pytest.raises(BackupKeyError, match="not an age"):
        parse_recipients(["ssh-ed25519 AAAA"])


def test_a_part_is_checked_by_size_and_hash() -> None:
    data = b"sealed bytes"
    part = msgspec.structs.replace(
        _part("p"), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)
    )
    assert check_part(part, data) is None
    assert "bytes" in (check_part(part, data + b"x") or "")
    assert "SHA-256" in (check_part(part, b"Sealed bytes") or "")


def _entries() -> list[LogEntry]:
    """Five entries, each opening an account, at 1000, 2000, ... ms; the
    last one void (decided on a batch that is not in the log)."""
    entries = []
    previous = ""
    for seq in range(1, 6):
        account = f"a{seq}"
        event = AccountOpened(
            request_id=f"open-{seq}",
            at_ms=seq * 1_000,
            account_id=account,
            reply=AccountReply(account_id=account, balance_minor=0),
        )
        batch_id = f"batch-{seq}"
        entries.append(
            LogEntry(seq, batch_id, encode_batch("lost" if seq == 5 else previous, [event]))
        )
        previous = batch_id
    return entries


def test_a_log_segment_keeps_entries_as_stored() -> None:
    entries = _entries()
    segment = read_segment(segment_plain(3, entries), "part")
    assert segment.partition == 3 and segment.entries == entries
    with pytest.raises(PartError):
        read_segment(b"not zstd", "part")


def test_the_fold_stops_at_a_sequence_or_a_time() -> None:
    entries = _entries()
    fold = PointInTimeFold(ReplayState.empty(verifier=None), RestorePoint(to_seq=3))
    assert [fold.apply(e) for e in entries] == [True, True, True, False, False]
    assert fold.replay.applied_seq == 3 and set(fold.replay.state.accounts) >= {"a1", "a3"}
    assert "a4" not in fold.replay.state.accounts

    fold = PointInTimeFold(ReplayState.empty(verifier=None), RestorePoint(to_time_ms=999))
    assert not fold.apply(entries[0])
    assert fold.replay.applied_seq == 0

    fold = PointInTimeFold(ReplayState.empty(verifier=None), RestorePoint(to_time_ms=2_500))
    assert [fold.apply(e) for e in entries] == [True, True, False, False, False]
    assert fold.replay.applied_seq == 2 and fold.last_time_ms == 2_000

    # A void entry still has a place and a time; it changes nothing.
    fold = PointInTimeFold(ReplayState.empty(verifier=None), RestorePoint())
    assert all(fold.apply(e) for e in entries)
    assert fold.replay.applied_seq == 5 and fold.replay.voided == 1
    assert "a5" not in fold.replay.state.accounts


def test_a_restore_refuses_a_used_directory_or_an_empty_target(tmp_path: Path) -> None:
    identity_file = tmp_path / "identity.txt"
    generate_identity(identity_file)
    identity = load_identity(identity_file)
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(RestoreError, match="not empty"):
        restore(DirectoryTarget(tmp_path / "offsite"), used, identity, RestorePoint())
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    with pytest.raises(RestoreError, match="holds no backup"):
        restore(DirectoryTarget(tmp_path / "offsite"), tmp_path / "new", identity, RestorePoint())
    (tmp_path / "offsite").mkdir()
    (tmp_path / "offsite" / "manifest.json").write_bytes(b"{}")
    with pytest.raises(RestoreError, match="nothing restored"):
        restore(DirectoryTarget(tmp_path / "offsite"), tmp_path / "new", identity, RestorePoint())
    assert not (tmp_path / "new").exists()
