"""Backups and restores against a real cluster: 3 NATS nodes and 3 replicas in
a temp dir, bets placed by the chaos workload, the `ironbook backup` and
`ironbook restore` commands run as an operator would.

- a full backup, more bets, an incremental backup: both verify, and a restore
  gives the newest state (the state hash of replaying the whole live log),
  which the restored cluster's replicas then serve;
- a point-in-time restore to sequence N (and to a time) gives the state hash
  of replaying the live log to N;
- one byte changed in the manifest, a snapshot part or a log part: `backup
  verify` exits 1 naming it, and `restore` refuses and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironbook import core
from ironbook.adapters.backup.keys import generate_identity, identity_path, load_identity
from ironbook.adapters.backup.manifest import MANIFEST_FILE, Backup, Manifest, decode_manifest
from ironbook.adapters.backup.restore import RestoreError
from ironbook.adapters.backup.target import DirectoryTarget
from ironbook.adapters.ledger_keys import LEDGER_KEY_FILE, ledger_verifier
from ironbook.adapters.nats.provision import close_nats
from ironbook.adapters.nats.snapshots import NatsSnapshotStore
from ironbook.chaos.workload import Workload, WorkloadConfig, selection_odds
from ironbook.cli import main
from ironbook.client import ClientConfig, connect_ledger
from ironbook.core import acting
from ironbook.replication.batch import ReplayState
from ironbook.replication.checker import replay_hash
from ironbook.replication.follower import take_snapshot
from ironbook.replication.interfaces import LogEntry
from ironbook.replication.point_in_time import RestorePoint, entry_time_ms
from ironbook.services.inspect import converged_hashes, read_whole_log
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.restore import restore
from ironbook.settings import BackupSettings

pytestmark = pytest.mark.slow

LEDGER = core.LedgerConfig(partition=0)


class Backed:
    """A cluster with bets, backed up twice (full, then incremental)."""

    def __init__(self, root: Path, cluster: LocalCluster) -> None:
        self.root = root
        self.cluster = cluster
        self.target = root / "offsite"
        self.identity = identity_path(cluster.data_dir)
        self.full_log: list[LogEntry] = []
        self.log: list[LogEntry] = []
        self.summaries: list[dict[str, object]] = []
        self.snapshot_seq = 0


async def _bets(cluster: LocalCluster, seconds: float) -> str:
    """The chaos workload for `seconds`; returns its market."""
    client = await connect_ledger(
        cluster.ops,
        config=ClientConfig(request_timeout_ms=1_000, deadline_ms=30_000),
        issuer=acting("test"),
    )
    try:
        workload = Workload(client, config=WorkloadConfig(settle_every_s=None))
        await workload.setup()
        await workload.run(seconds)
        assert workload.accepted > 0
        return workload.market_id
    finally:
        await client.close()


async def _more_bets(cluster: LocalCluster, market_id: str, bets: int) -> None:
    """Bets with request ids of their own, a few per log entry, by punters
    given the money for them first (the workload before may have spent
    theirs: how much it bets depends on the machine's speed)."""
    client = await connect_ledger(cluster.ops, issuer=acting("test"))
    punters = 40
    try:
        deposits = [
            core.Deposit(
                request_id=f"more-funds-{n}",
                account_id=f"punter-{n}",
                amount_minor=100 * (bets // punters + 1),
                reason="test top-up",
            )
            for n in range(punters)
        ]
        funded = await client.submit_many(deposits)
        assert all(isinstance(o, core.Accepted) for o in funded), funded
        commands = [
            core.PlaceBet(
                request_id=f"more-{n}",
                account_id=f"punter-{n % punters}",
                stake_minor=100,
                legs=(core.BetLeg(market_id, "s1", selection_odds(1)),),
            )
            for n in range(bets)
        ]
        for start in range(0, bets, 10):
            outcomes = await client.submit_many(commands[start : start + 10])
            assert any(isinstance(o, core.Accepted) for o in outcomes), outcomes
    finally:
        await client.close()


async def _snapshot_halfway(cluster: LocalCluster) -> int:
    """A snapshot at half the log, in the cluster's snapshot store (as a
    follower writes one; a short run makes none of its own)."""
    entries = await _live_log(cluster)
    replay = ReplayState.empty(LEDGER, verifier=ledger_verifier(cluster.data_dir, 0))
    for entry in entries[: len(entries) // 2]:
        replay.apply(entry)
    nc = await cluster.ops.connect("test-backup-snapshot")
    try:
        store = await NatsSnapshotStore.open(nc, 0)
        await store.put(take_snapshot(replay))
    finally:
        await close_nats(nc)
    return replay.applied_seq


async def _live_log(cluster: LocalCluster) -> list[LogEntry]:
    nc = await cluster.ops.connect("test-backup-log")
    try:
        return await read_whole_log(nc, 0)
    finally:
        await close_nats(nc)


@pytest.fixture(scope="module")
def backed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backed]:
    root = tmp_path_factory.mktemp("backup")
    cluster = LocalCluster(root / "cluster")
    try:
        cluster.start()
        asyncio.run(cluster.wait_leaders(timeout_ms=90_000))
        yield Backed(root, cluster)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def backed_twice(backed: Backed) -> Backed:
    """Bets, a full backup, more bets, an incremental backup."""
    assert main(["backup", "keygen", "--data-dir", str(backed.cluster.data_dir)]) == 0
    market_id = asyncio.run(_bets(backed.cluster, 3.0))
    backed.snapshot_seq = asyncio.run(_snapshot_halfway(backed.cluster))
    backed.summaries.append(_backup(backed))
    backed.full_log = asyncio.run(_live_log(backed.cluster))
    asyncio.run(_more_bets(backed.cluster, market_id, 300))
    backed.summaries.append(_backup(backed))
    backed.log = asyncio.run(_live_log(backed.cluster))
    return backed


def _backup(backed: Backed) -> dict[str, object]:
    """`ironbook backup --json` (module fixtures cannot use capsys)."""
    out = backed.root / "summary.json"
    recipient = backed.identity.read_text().split("public key: ")[1].split()[0]
    with out.open("w") as handle, contextlib.redirect_stdout(handle):
        code = main(
            [
                "backup",
                "--data-dir",
                str(backed.cluster.data_dir),
                "--to",
                str(backed.target),
                "--recipient",
                recipient,
                "--json",
            ]
        )
    assert code == 0, out.read_text()
    summary: dict[str, object] = json.loads(out.read_text())
    return summary


def _restore(backed: Backed, data_dir: Path, point: RestorePoint) -> dict[str, object]:
    summary = restore(
        DirectoryTarget(backed.target),
        data_dir,
        load_identity(backed.identity),
        point,
        ledger_key=backed.cluster.data_dir / LEDGER_KEY_FILE,
    )
    return summary.as_json()


def test_full_then_incremental_restores_the_newest_state(
    backed_twice: Backed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full, incremental = backed_twice.summaries
    assert full["kind"] == "full" and incremental["kind"] == "incremental"
    assert incremental["chain_id"] == full["chain_id"]
    first = full["partitions"]["0"]  # type: ignore[index]
    second = incremental["partitions"]["0"]  # type: ignore[index]
    assert second["base_seq"] == first["covered_seq"] < second["covered_seq"]
    assert first["state_hash"] == replay_hash(backed_twice.full_log, LEDGER)

    assert main(["backup", "verify", "--from", str(backed_twice.target)]) == 0
    newest = replay_hash(backed_twice.log, LEDGER)
    assert second["state_hash"] == newest

    restored_dir = tmp_path / "restored"
    summary = _restore(backed_twice, restored_dir, RestorePoint())
    (partition,) = summary["partitions"]  # type: ignore[misc]
    assert partition["restored_seq"] == len(backed_twice.log)
    assert partition["state_hash"] == newest
    assert partition["checked_against"] == "manifest"

    # The restored cluster runs: its replicas start from the restored
    # snapshot and log, and agree with the backup.
    restored = LocalCluster(restored_dir)
    try:
        restored.start()
        asyncio.run(restored.wait_leaders(timeout_ms=90_000))

        async def hashes() -> dict[str, str]:
            nc = await restored.ops.connect("test-restored")
            try:
                return await converged_hashes(nc, 0, restored.replica_ids(0), timeout_ms=90_000)
            finally:
                await close_nats(nc)

        assert set(asyncio.run(hashes()).values()) == {newest}
    finally:
        restored.stop()


def test_point_in_time_restore_equals_replaying_the_log_to_n(
    backed_twice: Backed, tmp_path: Path
) -> None:
    log = backed_twice.log
    full_end = len(backed_twice.full_log)
    snapshot_seq = backed_twice.snapshot_seq
    assert backed_twice.summaries[0]["partitions"]["0"]["snapshot_seq"] == snapshot_seq  # type: ignore[index]
    with pytest.raises(RestoreError, match="no backup reaches back that far"):
        _restore(backed_twice, tmp_path / "too-early", RestorePoint(to_seq=snapshot_seq - 1))
    assert not (tmp_path / "too-early").exists()
    # One point inside the full backup's log, one inside the incremental's.
    for n in sorted({max(snapshot_seq + 1, full_end // 2), (full_end + len(log)) // 2}):
        summary = _restore(backed_twice, tmp_path / f"seq-{n}", RestorePoint(to_seq=n))
        (partition,) = summary["partitions"]  # type: ignore[misc]
        assert partition["restored_seq"] == n
        assert partition["state_hash"] == replay_hash(log[:n], LEDGER)

    # A time: everything up to the entry at `n`'s time (one leader: times rise).
    n = (full_end + len(log)) // 2
    at_ms = entry_time_ms(log[n - 1])
    assert at_ms is not None
    last = max(
        entry.seq for entry in log if (entry_time_ms(entry) or 0) <= at_ms and entry.seq >= n
    )
    iso = datetime.datetime.fromtimestamp(at_ms / 1000, datetime.UTC).isoformat()
    restored_dir = tmp_path / "by-time"
    assert main(
        ["restore", "--from", str(backed_twice.target), "--data-dir", str(restored_dir),
         "--identity", str(backed_twice.identity), "--to-time", iso,
         "--ledger-key", str(backed_twice.cluster.data_dir / LEDGER_KEY_FILE)]
    ) == 0  # fmt: skip
    assert (restored_dir / "nats").is_dir()
    summary = _restore(backed_twice, tmp_path / "by-time-again", RestorePoint(to_time_ms=at_ms))
    (partition,) = summary["partitions"]  # type: ignore[misc]
    assert partition["restored_seq"] == last
    assert partition["state_hash"] == replay_hash(log[:last], LEDGER)


def _damage(target: Path, which: str) -> str:
    """Flip one byte in the middle of the manifest or of one part; returns its path."""
    manifest = decode_manifest((target / MANIFEST_FILE).read_bytes())
    if which == "manifest":
        relative = MANIFEST_FILE
    else:
        kind = "snapshot" if which == "snapshot part" else "log"
        relative = next(part.path for part in manifest.parts() if part.kind == kind)
    path = target / relative
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return relative


@pytest.mark.parametrize("which", ["manifest", "snapshot part", "log part"])
def test_one_changed_byte_is_refused_by_verify_and_restore(
    backed_twice: Backed, tmp_path: Path, which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(backed_twice.target, damaged)
    relative = _damage(damaged, which)

    capsys.readouterr()
    assert main(["backup", "verify", "--from", str(damaged)]) == 1
    said = capsys.readouterr()
    assert relative in said.out + said.err

    restored_dir = tmp_path / "restored"
    with pytest.raises(RestoreError, match=relative.replace(".", r"\.")):
        restore(
            DirectoryTarget(damaged), restored_dir, load_identity(backed_twice.identity),
            RestorePoint(),
        )  # fmt: skip
    assert not restored_dir.exists()
    assert list(tmp_path.glob(".restored.restoring-*")) == []


def test_up_takes_scheduled_backups_with_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ironbook up --backup-every`: the supervised backup process backs up
    after each burst of bets; with chains of 2 and 1 chain kept, every chain
    is a full backup and then one incremental, and a new chain replaces the
    old one. (The first backup may come before the first burst, as soon as
    anything is in the log, so the test follows the chain rule rather than a
    fixed list of kinds.)"""
    target = tmp_path / "offsite"
    recipient = generate_identity(tmp_path / "identity.txt")
    monkeypatch.setenv("IRONBOOK_BACKUP_RECIPIENTS", recipient)
    monkeypatch.setenv("IRONBOOK_BACKUP_KEEP", "1")
    monkeypatch.setenv("IRONBOOK_BACKUP_CHAIN_LENGTH", "2")
    cluster = LocalCluster(tmp_path / "cluster", backup=BackupSettings(to=str(target), every_s=1))
    seen: list[tuple[str, int, str, int]] = []
    """(chain id, position in its chain, kind, chains kept) of each newest backup."""
    backups: list[Backup] = []
    try:
        cluster.start()
        asyncio.run(cluster.wait_leaders(timeout_ms=90_000))
        for round_number in range(4):
            asyncio.run(_deposits(cluster, f"round-{round_number}"))
            last_seq = len(asyncio.run(_live_log(cluster)))
            manifest = _wait_for_backup_of(target, last_seq)
            chain = manifest.chains[-1]
            newest = chain.backups[-1]
            seen.append((chain.id, len(chain.backups) - 1, newest.kind, len(manifest.chains)))
            backups.append(newest)
            if len({chain_id for chain_id, *_ in seen}) > 1:
                break
        # Each state hash is the replay of the log to its backup's end (the
        # process folds its incrementals on from its last backup's state).
        log = asyncio.run(_live_log(cluster))
        for backup in backups:
            (partition,) = backup.partitions
            assert partition.state_hash == replay_hash(log[: partition.covered_seq], LEDGER)
    finally:
        cluster.stop()
    for _, position, kind, chains in seen:
        assert position < 2 and kind == ("full" if position == 0 else "incremental"), seen
        assert chains == 1, seen
    assert len({chain_id for chain_id, *_ in seen}) == 2, seen
    assert sorted(p.name for p in (target / "chains").iterdir()) == [seen[-1][0]]
    assert main(["backup", "verify", "--from", str(target)]) == 0


async def _deposits(cluster: LocalCluster, tag: str) -> None:
    client = await connect_ledger(cluster.ops, issuer=acting("test"))
    try:
        commands: list[core.AnyCommand] = [
            core.OpenAccount(request_id=f"{tag}-open", account_id=tag),
            core.Deposit(
                request_id=f"{tag}-dep", account_id=tag, amount_minor=1_000, reason="test top-up"
            ),
        ]
        # One request, so one log entry: no backup can fall between the two.
        outcomes = await client.submit_many(commands)
        assert all(isinstance(outcome, core.Accepted) for outcome in outcomes)
    finally:
        await client.close()


def _wait_for_backup_of(target: Path, last_seq: int, timeout_s: float = 60.0) -> Manifest:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            manifest = decode_manifest((target / MANIFEST_FILE).read_bytes())
            if manifest.chains[-1].backups[-1].partitions[0].covered_seq >= last_seq:
                return manifest
        time.sleep(0.2)
    raise TimeoutError(f"no backup covering seq {last_seq} within {timeout_s} s")
