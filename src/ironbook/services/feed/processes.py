"""The feed's processes in a local cluster: the simulated provider (unless
the feed comes from outside), the ingester and the settlement service."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.services.feed.ingest import DEFAULT_DOWN_AFTER_MS
from ironbook.services.feed.provider import FRAME_MS

FeedSource = Literal["sim", "external"]


@dataclass(frozen=True, slots=True)
class FeedOptions:
    source: FeedSource = "sim"
    """`sim`: run the built-in simulator; `external`: something else
    publishes into the producer's feed stream (see docs/feed.md)."""
    producer: str = "sim"
    rate: int = 200
    """Simulated odds changes per second."""
    seed: int = 1
    down_after_ms: int = DEFAULT_DOWN_AFTER_MS
    football_events: int = 4
    """Simulated matches at a time (2 markets each)."""
    races: int = 3
    """Simulated races at a time (1 market each)."""
    frame_ms: int = FRAME_MS
    """The simulator publishes at most once per this many ms (one frame: one
    JetStream message for all the messages due); more is cheaper for NATS and
    the ledger (fewer ingester rounds), less is fresher odds."""


def feed_processes(
    options: FeedOptions,
    *,
    nats_url: str,
    partitions: int,
    replicas: int,
    logs_dir: Path,
) -> dict[str, ManagedProcess]:
    """Name → process, in start order."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = ["--nats", nats_url, "--producer", options.producer, "--replicas", str(replicas)]
    commands: dict[str, list[str]] = {}
    if options.source == "sim":
        commands["feed-sim"] = [
            "ironbook.services.feed.provider",
            *common,
            "--seed",
            str(options.seed),
            "--rate",
            str(options.rate),
            "--football",
            str(options.football_events),
            "--races",
            str(options.races),
            "--frame-ms",
            str(options.frame_ms),
        ]
    commands["feed-ingest"] = [
        "ironbook.services.feed.ingest",
        *common,
        "--partitions",
        str(partitions),
        "--down-after-ms",
        str(options.down_after_ms),
    ]
    commands["feed-settle"] = [
        "ironbook.services.feed.settlement",
        *common,
        "--partitions",
        str(partitions),
    ]
    return {
        name: ManagedProcess(
            name,
            [sys.executable, "-m", *command],
            log_path=logs_dir / f"{name}.log",
            env=env,
        )
        for name, command in commands.items()
    }
