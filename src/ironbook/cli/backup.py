"""`ironbook backup`: encrypted, verified backups of a cluster's ledger.

    ironbook backup --data-dir D --to TARGET [--full] [--keep N] [--json]
    ironbook backup verify --from TARGET [--json]
    ironbook backup keygen [--data-dir D]

TARGET is a directory (an off-site mount) or `rclone:<remote>:<path>`. A
backup holds, per partition, the newest snapshot and the log after it (full),
or the log since the last backup (incremental), compressed and encrypted with
age to `backup.recipients`; `manifest.json` at the target's root names every
part with its SHA-256. If the cluster in D is running it is read as it is;
otherwise its NATS nodes are started for the backup and stopped again.
`verify` checks every part's hash without decrypting. docs/backup.md has the
formats and what is guaranteed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from ironbook.adapters.backup.backup import BackupError, read_manifest
from ironbook.adapters.backup.keys import BackupKeyError, generate_identity, identity_path
from ironbook.adapters.backup.manifest import ManifestError
from ironbook.adapters.backup.restore import verify_backup
from ironbook.adapters.backup.target import TargetError, open_target
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.nats.snapshots import snapshot_bucket
from ironbook.bootstrap import Flag, add_flags, backup_of, settings_from
from ironbook.cli.up import add_data_dir_argument, data_dir_of
from ironbook.replication.interfaces import ReplicationError
from ironbook.services.local_cluster import LocalCluster, read_runtime
from ironbook.settings import ConfigError, Settings

NATS_START_TIMEOUT_MS = 60_000


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace, nats_url: str, partitions: int) -> Settings:
    implied: dict[str, dict[str, object]] = {
        "nats": {"url": nats_url},
        "cluster": {"partitions": partitions},
    }
    if args.recipient:
        implied["backup"] = {"recipients": tuple(args.recipient)}
    return settings_from(args, implied)


def _backup(args: argparse.Namespace) -> int:
    try:
        data_dir = data_dir_of(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runtime = read_runtime(data_dir)
    cluster = None
    if runtime is None:
        if not (data_dir / "nats").is_dir():
            print(f"error: {data_dir} holds no cluster", file=sys.stderr)
            return 2
        cluster = LocalCluster(data_dir)
        nats_url, partitions = cluster.nats_url, cluster.partitions
    else:
        nats_url, partitions = ",".join(runtime.nats_urls), runtime.partitions
    try:
        settings = _settings(args, nats_url, partitions)
        take = backup_of(settings, full=args.full, progress=_progress)
        if cluster is not None:
            _progress(f"starting the NATS nodes of {data_dir} for the backup ...")
            cluster.nats.start(timeout_ms=NATS_START_TIMEOUT_MS)
            # After a restart each stream elects its leader on its own.
            for partition in range(partitions):
                for stream in (stream_name(partition), f"OBJ_{snapshot_bucket(partition)}"):
                    cluster.nats.wait_stream_leader(stream, timeout_ms=NATS_START_TIMEOUT_MS)
        try:
            summary = asyncio.run(take())
        finally:
            if cluster is not None:
                cluster.nats.close()
    except (
        ConfigError,
        BackupKeyError,
        TargetError,
        BackupError,
        ReplicationError,
        TimeoutError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(summary)))
    elif summary.kind is None:
        print(f"nothing new since the last backup on {summary.target}")
    else:
        print(
            f"{summary.kind} backup {summary.backup_id} (chain {summary.chain_id}) to "
            f"{summary.target}: {summary.parts} parts, {summary.bytes:,} bytes "
            f"({summary.plain_bytes:,} before encryption) in {summary.seconds:.1f} s"
        )
        for partition, info in sorted(summary.partitions.items()):
            print(
                f"  partition {partition}: seq {info['base_seq']}..{info['covered_seq']}, "
                f"state hash {info['state_hash']}"
            )
        for chain in summary.deleted_chains:
            print(f"  deleted chain {chain} (retention)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        target = open_target(args.source)
        manifest = read_manifest(target)
        if manifest is None:
            raise ManifestError(f"no manifest.json on {target.name}")
    except (TargetError, ManifestError) as err:
        print(f"BAD: {err}", file=sys.stderr)
        if args.json:
            print(json.dumps({"verdict": "fail", "bad": [f"manifest.json: {err}"]}))
        return 1
    result = verify_backup(target, manifest, _progress)
    verdict = "pass" if not result.bad else "fail"
    if args.json:
        print(json.dumps({"verdict": verdict, **dataclasses.asdict(result)}))
    else:
        for line in result.bad:
            print(f"BAD: {line}")
        backups = sum(len(chain.backups) for chain in manifest.chains)
        print(
            f"{verdict}: {result.parts} parts of {backups} backups in {len(manifest.chains)} "
            f"chains, {len(result.bad)} bad, {result.bytes:,} bytes checked"
        )
    return 0 if not result.bad else 1


def _keygen(args: argparse.Namespace) -> int:
    try:
        path = identity_path(data_dir_of(args))
        recipient = generate_identity(path)
    except (ConfigError, BackupKeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"identity written to {path} (0600): copy it somewhere safe, off this site")
    print(f"public key (put it in backup.recipients): {recipient}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backup",
        help="encrypted backups of the ledger; verify them; make a key",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_dir_argument(parser)
    add_flags(
        parser,
        [
            Flag("--to", "backup", "to", help="target: a directory or rclone:<remote>:<path>"),
            Flag("--keep", "backup", "keep", int, "full chains kept (default 7)"),
        ],
    )
    parser.add_argument(
        "--recipient",
        action="append",
        metavar="AGE_PUBLIC_KEY",
        help="encrypt to this age public key (repeatable; default: backup.recipients)",
    )
    parser.add_argument("--full", action="store_true", help="a full backup, starting a chain")
    parser.add_argument("--json", action="store_true", help="print one JSON summary")
    parser.set_defaults(func=_backup)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="check every part's SHA-256 without restoring (exit 1 names bad parts)"
    )
    verify.add_argument("--from", dest="source", required=True, help="the backup target")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=_verify)
    keygen = actions.add_parser(
        "keygen", help="make the age identity restores decrypt with; print its public key"
    )
    add_data_dir_argument(keygen)
    keygen.set_defaults(func=_keygen)
