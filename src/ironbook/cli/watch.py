"""`ironbook watch`: anomaly detection and exhaustion forecasts over
Prometheus, findings sent to Alertmanager as alerts with their evidence
(docs/watch.md). The same process as `python -m ironbook.bootstrap watch`."""

from __future__ import annotations

import argparse
import sys

from ironbook.bootstrap import (
    PROCESS_FLAGS,
    add_config_argument,
    add_flags,
    serve_watch,
    settings_from,
)
from ironbook.logs import setup_logging
from ironbook.services.process import run_service
from ironbook.settings import ConfigError


def _watch(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args, {"watch": {"dry_run": True}} if args.dry_run else None)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    setup_logging(settings.log, process="watch", node_id="watch", partition=None)
    run_service(lambda stop: serve_watch(settings, stop))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="detect anomalies and forecast exhaustion from Prometheus; alert via Alertmanager",
        description=__doc__,
    )
    add_config_argument(parser)
    add_flags(parser, PROCESS_FLAGS["watch"])
    parser.add_argument(
        "--dry-run", action="store_true", help="print findings as JSON lines, send nothing"
    )
    parser.set_defaults(func=_watch)
