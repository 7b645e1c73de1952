"""`ironbook up`: run a whole local cluster from one data directory.

Starts 3 nats-server processes (JetStream, R3, fsync on every write), 3
replicas per ledger partition and the odds feed (a simulated provider, the
ingester and the settlement service: markets appear, move and settle by
themselves; `--feed none` turns it off), with `--monitoring` Prometheus,
Alertmanager, node_exporter, the NATS collector and the alert receiver with
the ops console, restarts any that die (with backoff) or hang, takes
maintenance requests on `<data-dir>/control.sock` (`ironbook drain`,
`ironbook rolling-restart`), records its settings' digest, every restart,
remediation and maintenance step in the significant-event log
(docs/audit.md), with `--monitoring` and `watch.remediate` runs the watcher
and acts on its findings (docs/watch.md), with `--dr-site` (or `--dr-mode
mirror`) a DR site B mirroring every ledger stream, with `--dr-mode stretch`
the cluster over three sites a, b, c, one replica of every stream per site
and every route through the WAN relay (docs/dr.md), and on Ctrl-C stops
everything gracefully.
Running `up` again on the same data directory resumes with every byte of
data. NATS runs with mutual TLS and one identity per service kind
(docs/security.md); everything `up` writes is private to its user (umask 077,
data directories 0700). Settings come from `--config FILE`,
`IRONBOOK_*` environment variables and these flags (docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import sys
from pathlib import Path

from ironbook.adapters.audit.events import EventOutbox
from ironbook.adapters.backup.keys import BackupKeyError, parse_recipients
from ironbook.adapters.backup.target import TargetError
from ironbook.adapters.nats.localproc import PortError
from ironbook.adapters.nats.security import SecretsError
from ironbook.bootstrap import (
    Flag,
    add_config_argument,
    add_flags,
    build_local_cluster,
    serve_remediating_watch,
    settings_from,
)
from ironbook.logs import setup_logging
from ironbook.services.cluster_events import note_config, record_events, watch_supervisor
from ironbook.services.control import serve_control
from ironbook.services.local_cluster import ClusterConfigError, LocalCluster
from ironbook.services.monitoring import MonitoringUnavailable
from ironbook.settings import DEFAULT_DATA_DIR, ConfigError, Settings

_DATA_DIR = Flag(
    "--data-dir",
    "cluster",
    "data_dir",
    Path,
    f"where the cluster keeps its data (default {DEFAULT_DATA_DIR})",
)
_UP_FLAGS = (
    _DATA_DIR,
    Flag(
        "--partitions",
        "cluster",
        "partitions",
        int,
        "ledger partitions for a new data dir (default 1; fixed once created)",
    ),
    Flag("--http-port", "gateway", "port", int, "serve the HTTP API on this port"),
    Flag(
        "--http-workers",
        "cluster",
        "gateway_workers",
        int,
        "gateway worker processes sharing the port (default 2)",
    ),
    Flag("--http-host", "gateway", "host", help="address to serve HTTP on (default 127.0.0.1)"),
    Flag(
        "--feed",
        "feed",
        "source",
        help="odds feed: sim (the built-in simulator, default), external (a provider "
        "publishing into the feed stream, docs/feed.md), or none",
    ),
    Flag("--feed-rate", "feed", "rate", int, "simulated odds changes per second (default 200)"),
    Flag("--feed-seed", "feed", "seed", int, "simulated world seed (default 1)"),
    Flag(
        "--feed-producer",
        "feed",
        "producer",
        help="the feed producer's name, 1-32 of [A-Za-z0-9_-] (default sim)",
    ),
    Flag(
        "--backup-every",
        "backup",
        "every_s",
        int,
        "take an encrypted backup every SECONDS (needs --backup-to; docs/backup.md)",
    ),
    Flag(
        "--backup-to",
        "backup",
        "to",
        help="backup target: a directory (an off-site mount) or rclone:<remote>:<path>",
    ),
    Flag(
        "--wan-rtt-ms",
        "dr",
        "wan_rtt_ms",
        int,
        "with --dr-site or --dr-mode: round-trip time between the sites (default 30; docs/dr.md)",
    ),
)


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """`--config` and `--data-dir`, for commands that work on a cluster's data directory."""
    add_config_argument(parser)
    add_flags(parser, [_DATA_DIR])


def data_dir_of(args: argparse.Namespace) -> Path:
    """The data directory the settings name (see `add_data_dir_argument`)."""
    return settings_from(args).cluster.data_dir.resolve()


async def _run(cluster: LocalCluster, settings: Settings) -> None:
    stop = asyncio.Event()
    events = EventOutbox()
    watch_supervisor(cluster.supervisor, events.note)
    note_config(events.note, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("waiting for a leader in every partition ...", flush=True)
    metrics = await cluster.serve_supervisor_metrics()
    async with contextlib.AsyncExitStack() as served, asyncio.TaskGroup() as group:
        if metrics is not None:
            await served.enter_async_context(metrics)
        group.create_task(cluster.supervisor.run(stop))
        group.create_task(serve_control(cluster, stop, events.note))
        recording = group.create_task(record_events(lambda: cluster.endpoint("supervisor"), events))
        group.create_task(_cancel_on(stop, recording))
        if cluster.monitoring is not None and settings.watch.remediate:
            group.create_task(serve_remediating_watch(settings, cluster, events.note, stop))
        try:
            leaders = await cluster.wait_leaders(timeout_ms=120_000)
            for partition, beat in sorted(leaders.items()):
                print(f"partition {partition}: leader {beat.node_id} (term {beat.term})")
            print(f"ready. `ironbook status --data-dir {cluster.data_dir}` shows the cluster.")
            print("Ctrl-C stops it.", flush=True)
        except TimeoutError as err:
            print(f"warning: {err}; still supervising", file=sys.stderr, flush=True)


async def _cancel_on(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    await stop.wait()
    task.cancel()


def up_settings(args: argparse.Namespace) -> Settings:
    """The settings `up` runs with: its flags over the file and the
    environment (`ConfigError` if they do not fit)."""
    # A port on the command line asks for the gateway; in a file or the
    # environment, `cluster.serve_http` does.
    http = {"serve_http": True} if getattr(args, "gateway.port") is not None else {}
    mode = getattr(args, "dr.mode")
    if mode == "stretch" and getattr(args, "dr.enabled"):
        raise ConfigError("--dr-site is mirror mode; give --dr-mode stretch alone")
    dr = {"enabled": True} if mode is not None else {}
    return settings_from(args, {"cluster": http, "dr": dr})


def _command(args: argparse.Namespace) -> int:
    try:
        settings = up_settings(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    setup_logging(settings.log, process="up")
    # Logs, stores and secrets of the cluster: nobody else's business.
    os.umask(0o077)
    data_dir = settings.cluster.data_dir.resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = (data_dir / "up.lock").open("w")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"error: another `ironbook up` is already running on {data_dir}", file=sys.stderr)
        return 2
    if settings.backup.every_s:
        try:
            if settings.backup.to is None:
                raise TargetError("--backup-every needs --backup-to (or backup.to)")
            parse_recipients(settings.backup.recipients)
        except (TargetError, BackupKeyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        cluster = build_local_cluster(settings, config_file=args.config)
    except (ClusterConfigError, MonitoringUnavailable, PortError, SecretsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"ironbook: data in {data_dir}; {cluster.partitions} partition(s)", flush=True)
    try:
        cluster.start()
        security = (
            f"mutual TLS, identities in {cluster.secrets.root}"
            if cluster.secrets is not None
            else "PLAINTEXT, no authentication (nats.secure = false)"
        )
        print(f"nats: {cluster.nats_url} ({security})", flush=True)
        if cluster.http_url is not None:
            workers = settings.cluster.gateway_workers
            print(f"http: {cluster.http_url} ({workers} workers)", flush=True)
            print(f"gateway metrics: {cluster.gateway_metrics_url}", flush=True)
        if cluster.feed is not None:
            feed = cluster.feed
            print(f"feed: {feed.source}, producer {feed.producer} ({feed.rate} odds changes/s)")
        if cluster.backup is not None:
            b = settings.backup
            print(f"backups: every {b.every_s} s to {b.to} (log: logs/backup.log)", flush=True)
        if cluster.site_b is not None:
            primary = cluster.primary
            print(
                f"dr: site b {cluster.site_b.url} through a {settings.dr.wan_rtt_ms} ms WAN "
                f"relay; primary site {primary.site} (epoch {primary.epoch})",
                flush=True,
            )
        if cluster.stretch is not None:
            sites = ", ".join(
                f"{node} in site {site}" for node, site in cluster.stretch.sites.items()
            )
            print(
                f"dr: stretch mode, {sites}; every route through a "
                f"{cluster.stretch.wan_rtt_ms} ms WAN relay; one replica of every stream per site",
                flush=True,
            )
        if cluster.monitoring is not None:
            print(f"prometheus: {cluster.monitoring.prometheus_url}")
            print(f"alertmanager: {cluster.monitoring.alertmanager_url}")
            print(f"ops console: {cluster.monitoring.console_url}", flush=True)
        asyncio.run(_run(cluster, settings))
    except PortError as err:
        # A port this data directory keeps (its NATS servers') is held by
        # another run's process.
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        print("stopping ...", flush=True)
        cluster.stop()
        print("stopped.", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run a local cluster (NATS + ledger replicas), supervised",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    add_flags(parser, _UP_FLAGS)
    parser.add_argument(
        "--monitoring",
        dest="monitoring.enabled",
        action="store_const",
        const=True,
        default=None,
        help="also run Prometheus, Alertmanager, node_exporter and the ops console "
        "(docs/alerting.md)",
    )
    parser.add_argument(
        "--dr-site",
        dest="dr.enabled",
        action="store_const",
        const=True,
        default=None,
        help="also run DR site B mirroring this site over a WAN link (docs/dr.md); "
        "the same as --dr-mode mirror",
    )
    parser.add_argument(
        "--dr-mode",
        dest="dr.mode",
        choices=["mirror", "stretch"],
        default=None,
        help="mirror: DR site B mirrors this site (asynchronous, RPO = mirror lag); "
        "stretch: one NATS cluster over three sites a, b, c, one replica of every stream "
        "per site, every route through the WAN relay (RPO 0; needs a new data dir); "
        "docs/dr.md",
    )
    parser.set_defaults(func=_command)
