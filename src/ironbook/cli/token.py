"""`ironbook token`: mint a JWT for the local cluster's HTTP API.

Signs HS256 with the secret in the data directory (created on first use, the
same one the gateway workers verify with) and prints the token alone on
stdout, so `TOKEN=$(ironbook token --role admin)` works in scripts.
"""

from __future__ import annotations

import argparse
import sys

from ironbook.cli.up import add_data_dir_argument, data_dir_of
from ironbook.services.gateway.auth import (
    ROLES,
    load_or_create_secret,
    local_secret_file,
    mint_token,
)


def _command(args: argparse.Namespace) -> int:
    if args.role == "bettor" and not args.account:
        print("error: a bettor token needs --account ID", file=sys.stderr)
        return 2
    if args.ttl_s < 1:
        print("error: --ttl-s must be positive", file=sys.stderr)
        return 2
    secret = load_or_create_secret(local_secret_file(data_dir_of(args)))
    token = mint_token(
        secret, role=args.role, sub=args.sub, account_id=args.account, ttl_s=args.ttl_s
    )
    print(token)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "token",
        help="mint a bearer token for the local HTTP API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_dir_argument(parser)
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--account", default=None, help="the bettor's account id")
    parser.add_argument("--sub", default=None, help="subject (default: derived from the role)")
    parser.add_argument("--ttl-s", type=int, default=86_400, help="lifetime (default 1 day)")
    parser.set_defaults(func=_command)
