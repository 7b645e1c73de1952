"""`ironbook`: one command, with subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines `register(subparsers)`; its parser sets `func(args) -> int`.
_SUBCOMMANDS = (
    "demo",
    "up",
    "status",
    "config",
    "sim",
    "bench",
    "token",
    "chaos",
    "check",
    "feed",
    "audit",
    "drain",
    "rolling",
    "backup",
    "restore",
    "watch",
    "dr",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ironbook",
        description="A fault-tolerant betting platform core: wallets, markets, odds, bets "
        "and settlement on a replicated ledger.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"ironbook.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
