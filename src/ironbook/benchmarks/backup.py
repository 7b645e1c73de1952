"""The backup benchmark: back up, verify and restore a cluster holding N bets.

In one run, on this machine, against a fresh local cluster (3 nats-server
nodes, R3, fsync on every write; 3 replicas of one partition) in a temp dir:

1. Load: `--bets` bets on one 40-runner market through the real client
   library (the settlement benchmark's loader).
2. Full backup to a directory target (what `ironbook backup` does): time,
   encrypted bytes, parts; `bytes_per_bet`.
3. `--more-bets` more bets, then an incremental backup by the same process,
   as the scheduled backups take it (folding on from the full backup's
   state): time and bytes.
4. `backup verify`: every part's SHA-256 (time).
5. Restore the chain into a new data directory (what `ironbook restore`
   does: fetch and check every part, start NATS, write the stream and the
   snapshot, check the state hash and invariants, read the stream back).

Baselines from the same run: `stream_bytes`, what JetStream holds for the
ledger stream (one copy; it keeps three), against the backup's bytes; and
`fold_s`, folding the same log with the pure core in this process, against
the restore's time (the rest of a restore is NATS appends and fetching).

    ironbook bench backup --bets 100000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ironbook import core
from ironbook.adapters import eventloop
from ironbook.adapters.backup.backup import (
    BackupSummary,
    FoldMemory,
    read_manifest,
    take_backup,
)
from ironbook.adapters.backup.keys import generate_identity, load_identity, parse_recipients
from ironbook.adapters.backup.restore import verify_backup
from ironbook.adapters.backup.target import DirectoryTarget
from ironbook.adapters.ledger_keys import ledger_verifier
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats, request
from ironbook.benchmarks.common import command_line, log, machine_info
from ironbook.benchmarks.settle import load_bets, set_up_big_market
from ironbook.client import BatchConfig, ClientConfig, connect_ledger
from ironbook.replication.batch import ReplayState
from ironbook.replication.point_in_time import RestorePoint
from ironbook.services.inspect import read_whole_log
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.restore import restore

LEDGER = core.LedgerConfig(partition=0)
LOAD_DEADLINE_MS = 300_000


async def _stream_bytes(endpoint: NatsEndpoint) -> tuple[int, int]:
    """(bytes, messages) JetStream holds for the ledger stream."""
    nc = await endpoint.connect("bench-backup-info")
    try:
        reply = await request(nc, f"$JS.API.STREAM.INFO.{stream_name(0)}", b"", timeout_s=5)
        state = json.loads(reply.data)["state"]
        return int(state["bytes"]), int(state["messages"])
    finally:
        await close_nats(nc)


async def _fold_s(endpoint: NatsEndpoint, data_dir: Path) -> tuple[float, int]:
    """Seconds to fold the whole log with the pure core (read first, not timed)."""
    nc = await endpoint.connect("bench-backup-fold")
    try:
        entries = await read_whole_log(nc, 0, timeout_ms=600_000)
    finally:
        await close_nats(nc)
    started = time.perf_counter()
    replay = ReplayState.empty(LEDGER, verifier=ledger_verifier(data_dir, 0))
    for entry in entries:
        replay.apply(entry)
    core.state_hash(replay.state)
    return time.perf_counter() - started, len(entries)


def _backup_json(summary: BackupSummary) -> dict[str, Any]:
    return {
        "kind": summary.kind,
        "seconds": round(summary.seconds, 3),
        "bytes": summary.bytes,
        "plain_bytes": summary.plain_bytes,
        "parts": summary.parts,
        "covered_seq": summary.partitions[0]["covered_seq"],
        "snapshot_seq": summary.partitions[0]["snapshot_seq"],
    }


async def _load_and_back_up(
    cluster: LocalCluster, args: argparse.Namespace, target: DirectoryTarget, recipient: str
) -> dict[str, Any]:
    await cluster.wait_leaders(timeout_ms=120_000)
    # Patient: the load is not what is measured, and a shared machine may
    # cost it a leader change.
    client = await connect_ledger(
        cluster.ops,
        config=ClientConfig(request_timeout_ms=2_000, deadline_ms=LOAD_DEADLINE_MS),
        batching=BatchConfig(max_batch_commands=1_000),
        issuer=core.acting("bench"),
    )
    tag = f"b{os.getpid()}"
    accounts = [f"punter-{i}" for i in range(args.accounts)]
    memory = FoldMemory()

    async def back_up() -> BackupSummary:
        return await take_backup(
            cluster.nats.urls,
            1,
            target,
            recipients=[recipient],
            sealed_to=parse_recipients([recipient]),
            keep=2,
            chain_length=100,
            data_dir=cluster.data_dir,
            ledger_config=lambda _partition: LEDGER,
            memory=memory,
            progress=log,
        )

    try:
        log(f"setting up {args.accounts:,} accounts ...")
        await set_up_big_market(client, accounts, tag)
        log(f"loading {args.bets:,} bets ...")
        load_s = await load_bets(client, accounts, args.bets, args.load_batch, tag)
        stream_bytes, entries = await _stream_bytes(cluster.ops)
        log("full backup ...")
        full = await back_up()
        log(f"{args.more_bets:,} more bets ...")
        await load_bets(client, accounts, args.more_bets, args.load_batch, f"{tag}-more")
        log("incremental backup ...")
        incremental = await back_up()
    finally:
        await client.close()
    fold_s, all_entries = await _fold_s(cluster.ops, cluster.data_dir)
    return {
        "load_s": round(load_s, 3),
        "log_entries": entries,
        "stream_bytes": stream_bytes,
        "full": _backup_json(full),
        "incremental": _backup_json(incremental),
        "fold_s": round(fold_s, 3),
        "fold_entries": all_entries,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ironbook-bench-backup-") as tmp:
        root = Path(tmp)
        target = DirectoryTarget(root / "offsite")
        identity_file = root / "identity.txt"
        recipient = generate_identity(identity_file)
        cluster = LocalCluster(root / "cluster", partitions=1)
        try:
            cluster.start()
            result = eventloop.run(_load_and_back_up(cluster, args, target, recipient))
        finally:
            cluster.stop()
        manifest = read_manifest(target)
        assert manifest is not None
        log("verifying ...")
        started = time.monotonic()
        verified = verify_backup(target, manifest)
        verify_s = time.monotonic() - started
        log("restoring ...")
        restored = restore(
            target, root / "restored", load_identity(identity_file), RestorePoint(), progress=log
        )
    full, incremental = result["full"], result["incremental"]
    bets = args.bets + args.more_bets
    partition = restored.partitions[0]
    return {
        "benchmark": "backup",
        "command": command_line(),
        "machine": machine_info(load_at_start),
        "bets": args.bets,
        "more_bets": args.more_bets,
        **result,
        "bytes_per_bet": round(full["bytes"] / args.bets, 2),
        "incremental_bytes_per_bet": round(incremental["bytes"] / max(1, args.more_bets), 2),
        "backup_vs_stream_bytes": round(full["bytes"] / result["stream_bytes"], 3),
        "verify_s": round(verify_s, 3),
        "verify_bad_parts": len(verified.bad),
        "restore_s": round(restored.seconds, 3),
        "restore_vs_fold": round(restored.seconds / max(result["fold_s"], 1e-9), 2),
        "restored_seq": partition.restored_seq,
        "restored_state_checked_against": partition.checked_against,
        "total_bets": bets,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ironbook bench backup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bets", type=int, default=100_000, help="bets before the full backup")
    p.add_argument(
        "--more-bets", type=int, default=10_000, help="bets before the incremental backup"
    )
    p.add_argument("--accounts", type=int, default=10_000, help="accounts (default 10000)")
    p.add_argument("--load-batch", type=int, default=5_000, help="bets sent at once when loading")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    ok = result["verify_bad_parts"] == 0 and result["restored_state_checked_against"] == "manifest"
    return 0 if ok else 1
