"""`ironbook config show`: the effective settings, as every process would
read them here: defaults, then `--config FILE`, then `IRONBOOK_*` environment
variables. Credentials (a password in a NATS URL) are masked.
docs/configuration.md explains each setting."""

from __future__ import annotations

import argparse
import json
import sys

from ironbook.bootstrap import add_config_argument, settings_from
from ironbook.settings import ConfigError


def _show(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    data = settings.masked()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    blocks = []
    for section, values in data.items():
        lines = [f"[{section}]"]
        for name, value in values.items():
            # TOML has no null: an unset optional setting is shown commented out.
            lines.append(
                f"# {name} = (unset)" if value is None else f"{name} = {json.dumps(value)}"
            )
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "config", help="show the effective settings", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the effective settings (secrets masked)")
    add_config_argument(show)
    show.add_argument("--json", action="store_true", help="JSON instead of TOML")
    show.set_defaults(func=_show)
