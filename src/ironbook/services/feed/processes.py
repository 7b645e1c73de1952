"""The feed's processes in a local cluster: the simulated provider (unless
the feed comes from outside), the ingester and the settlement service."""

from __future__ import annotations

import os
from pathlib import Path

from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.services.process import process_command
from ironbook.settings import FeedSettings

FeedOptions = FeedSettings


def feed_processes(
    options: FeedSettings,
    *,
    nats_url: str,
    partitions: int,
    replicas: int,
    logs_dir: Path,
    config_args: list[str] | None = None,
    metrics_ports: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, ManagedProcess]:
    """Name → process, in start order; `metrics_ports`: name → the port its
    `/metrics` listens on (unset: a free one); `env`: theirs (default: this
    one's)."""
    env = env or {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = ["--nats", nats_url, "--producer", options.producer, "--replicas", str(replicas)]
    commands: dict[str, list[str]] = {}
    if options.source == "sim":
        commands["feed-sim"] = [
            *common,
            "--seed",
            str(options.seed),
            "--rate",
            str(options.rate),
            "--football",
            str(options.football_events),
            "--races",
            str(options.races),
            "--pre-match-s",
            str(options.pre_match_s),
            "--frame-ms",
            str(options.frame_ms),
        ]
    commands["feed-ingest"] = [
        *common,
        "--partitions",
        str(partitions),
        "--down-after-ms",
        str(options.down_after_ms),
    ]
    commands["feed-settle"] = [*common, "--partitions", str(partitions)]
    for name, port in (metrics_ports or {}).items():
        commands[name] += ["--metrics-port", str(port)]
    return {
        name: ManagedProcess(
            name,
            [*process_command(name, config_args or []), *command],
            log_path=logs_dir / f"{name}.log",
            env=env,
        )
        for name, command in commands.items()
    }
