"""`ironbook restore --from TARGET --data-dir D2 [--to-seq N | --to-time ISO]`:
a backup into a new cluster.

D2 must be new or empty. The restore checks the manifest and every part of
the backup chain it uses (a damaged or missing part refuses the whole
backup), builds the cluster in a temporary directory beside D2 (NATS nodes,
each partition's stream starting after its snapshot, the snapshot in the
snapshot store), checks that the restored state matches the state hash the
backup recorded and the ledger's invariants, and only then moves it into
place. `ironbook up --data-dir D2` runs it.

--to-seq N restores each partition's log up to sequence N (sequences are per
partition; a partition whose backup ends earlier is restored to its end).
--to-time ISO restores, in every partition, the entries up to that time (log
time, the leader's clock; e.g. 2026-12-02T09:30:00Z). The identity (the age
private key) comes from --identity, backup.identity_file, or
D2/secrets/backup/identity.txt. docs/backup.md has the details.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from ironbook.adapters.backup.keys import BackupKeyError, identity_path, load_identity
from ironbook.adapters.backup.restore import RestoreError
from ironbook.adapters.backup.target import TargetError, open_target
from ironbook.bootstrap import settings_from
from ironbook.cli.up import add_data_dir_argument
from ironbook.replication.interfaces import ReplicationError
from ironbook.replication.point_in_time import RestorePoint
from ironbook.services.restore import restore
from ironbook.settings import ConfigError


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_time_ms(text: str) -> int:
    """An ISO 8601 time with a zone (`Z` or `+01:00`), as Unix milliseconds."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(f"--to-time {text!r} is not an ISO 8601 time") from err
    if moment.tzinfo is None:
        raise ValueError(f"--to-time {text!r} has no time zone: add Z or +HH:MM")
    return int(moment.timestamp() * 1000)


def _command(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        point = RestorePoint(
            to_seq=args.to_seq,
            to_time_ms=parse_time_ms(args.to_time) if args.to_time is not None else None,
        )
        data_dir = settings.cluster.data_dir.resolve()
        identity_file = args.identity or settings.backup.identity_file or identity_path(data_dir)
        identity = load_identity(identity_file)
        target = open_target(args.source)
        summary = restore(
            target,
            data_dir,
            identity,
            point,
            replicas=settings.nats.replicas,
            ledger_key=args.ledger_key,
            progress=_progress,
        )
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (BackupKeyError, TargetError, RestoreError, ReplicationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary.as_json()))
        return 0
    print(
        f"restored chain {summary.chain_id} ({len(summary.backups)} backups, {summary.parts} "
        f"parts, {summary.bytes:,} bytes) into {summary.data_dir} in {summary.seconds:.1f} s"
    )
    for p in summary.partitions:
        print(
            f"  partition {p.partition}: seq {p.restored_seq} (snapshot {p.snapshot_seq} + "
            f"{p.entries} entries), state hash {p.state_hash} "
            f"({'as the backup recorded' if p.checked_against == 'manifest' else 'as folded'}); "
            "invariants hold"
        )
    print(f"start it with: ironbook up --data-dir {summary.data_dir}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "restore",
        help="restore a backup into a new cluster (optionally to a sequence or a time)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_dir_argument(parser)
    parser.add_argument("--from", dest="source", required=True, help="the backup target")
    point = parser.add_mutually_exclusive_group()
    point.add_argument("--to-seq", type=int, metavar="N", help="restore up to log sequence N")
    point.add_argument("--to-time", metavar="ISO", help="restore up to this time (with a zone)")
    parser.add_argument("--identity", type=Path, help="the age identity file")
    parser.add_argument(
        "--ledger-key",
        type=Path,
        help="the backed-up cluster's ledger signing key (its "
        "secrets/ledger/batch-ed25519.pem): the restored replicas verify the log with it",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary")
    parser.set_defaults(func=_command)
