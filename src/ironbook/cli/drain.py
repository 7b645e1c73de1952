"""`ironbook drain NODE`: planned maintenance of one process of a running
`ironbook up` cluster, without a write gap.

NODE is a NATS server name (`n1`..`n3`): every stream it leads is handed to
another server first (a stepdown with placement), its meta leadership too
(through lame-duck mode), then it stops. Or a replica's node id (`p0-r2`):
it stops gracefully, and a leader releases its lease as it stops so that a
follower takes over at once. Or a gateway worker, history projector or feed
process by name. The process stays stopped (the supervisor holds it) until
`ironbook drain --undo NODE`, which hands it back to the supervisor, which
starts it. The cluster's `up` process does the work (`services.control`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Literal

from ironbook.cli.up import add_data_dir_argument, data_dir_of
from ironbook.services.control import ControlError, ControlRequest, request


def _command(args: argparse.Namespace) -> int:
    op: Literal["drain", "undrain"] = "undrain" if args.undo else "drain"

    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    try:
        answer = asyncio.run(request(data_dir_of(args), ControlRequest(op=op, node=args.node), say))
    except ControlError as error:
        if args.json:
            print(json.dumps({"node": args.node, "op": op, "error": str(error)}))
        else:
            print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"node": args.node, "op": op, **answer}))
    else:
        for step in answer["done"]:
            print(f"  {step}")
        print(f"{op} {args.node}: done in {answer['took_ms']} ms")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "drain",
        help="move a process's leaderships away, then stop it (planned maintenance)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_dir_argument(parser)
    parser.add_argument("node", help="a NATS server (n1), a replica (p0-r2) or a process name")
    parser.add_argument(
        "--undo", action="store_true", help="hand a drained process back to the supervisor"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_command)
