"""`ironbook up`: run a whole local cluster from one data directory.

Starts 3 nats-server processes (JetStream, R3, fsync on every write), 3
replicas per ledger partition and the odds feed (a simulated provider, the
ingester and the settlement service: markets appear, move and settle by
themselves; `--feed none` turns it off), restarts any that die (with backoff), and on
Ctrl-C stops everything gracefully. Running `up` again on the same data
directory resumes with every byte of data.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import signal
import sys
from pathlib import Path

from ironbook.adapters.feed.messages import valid_producer
from ironbook.services.feed.processes import FeedOptions
from ironbook.services.local_cluster import ClusterConfigError, GatewayOptions, LocalCluster

DEFAULT_DATA_DIR = Path(".ironbook")


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"where the cluster keeps its data (default {DEFAULT_DATA_DIR})",
    )


async def _run(cluster: LocalCluster) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("waiting for a leader in every partition ...", flush=True)
    leaders_task = asyncio.create_task(cluster.wait_leaders(timeout_ms=120_000))
    supervise = asyncio.create_task(cluster.supervisor.run(stop))
    try:
        leaders = await leaders_task
        for partition, beat in sorted(leaders.items()):
            print(f"partition {partition}: leader {beat.node_id} (term {beat.term})", flush=True)
        print(f"ready. `ironbook status --data-dir {cluster.data_dir}` shows the cluster.")
        print("Ctrl-C stops it.", flush=True)
    except TimeoutError as err:
        print(f"warning: {err}; still supervising", file=sys.stderr, flush=True)
    await supervise


def _command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / "up.lock").open("w")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"error: another `ironbook up` is already running on {data_dir}", file=sys.stderr)
        return 2
    try:
        gateway = None
        if args.http_port is not None:
            gateway = GatewayOptions(
                port=args.http_port, workers=args.http_workers, host=args.http_host
            )
        feed = None
        if args.feed != "none":
            if not 0 <= args.feed_rate <= 100_000:
                print("error: --feed-rate must be 0..100000", file=sys.stderr)
                return 2
            if not valid_producer(args.feed_producer):
                print("error: --feed-producer must be 1-32 of [A-Za-z0-9_-]", file=sys.stderr)
                return 2
            feed = FeedOptions(
                source=args.feed,
                producer=args.feed_producer,
                rate=args.feed_rate,
                seed=args.feed_seed,
            )
        cluster = LocalCluster(data_dir, partitions=args.partitions, gateway=gateway, feed=feed)
    except ClusterConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"ironbook: data in {data_dir}; {cluster.partitions} partition(s)", flush=True)
    try:
        cluster.start()
        print(f"nats: {cluster.nats_url}", flush=True)
        if cluster.http_url is not None:
            print(f"http: {cluster.http_url} ({args.http_workers} workers)", flush=True)
        if feed is not None:
            print(f"feed: {feed.source}, producer {feed.producer} ({feed.rate} odds changes/s)")
        asyncio.run(_run(cluster))
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
    add_data_dir_argument(parser)
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="ledger partitions for a new data dir (default 1; fixed once created)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="serve the HTTP API on this port (default: no HTTP gateway)",
    )
    parser.add_argument(
        "--http-workers",
        type=int,
        default=2,
        help="gateway worker processes sharing the port (default 2)",
    )
    parser.add_argument(
        "--http-host", default="127.0.0.1", help="address to serve HTTP on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--feed",
        choices=("sim", "external", "none"),
        default="sim",
        help="odds feed: the built-in simulator (default), an external provider publishing "
        "into the feed stream (docs/feed.md), or none",
    )
    parser.add_argument(
        "--feed-rate",
        type=int,
        default=200,
        help="simulated odds changes per second (default 200)",
    )
    parser.add_argument("--feed-seed", type=int, default=1, help="simulated world seed (default 1)")
    parser.add_argument(
        "--feed-producer",
        default="sim",
        help="the feed producer's name, 1-32 of [A-Za-z0-9_-] (default sim)",
    )
    parser.set_defaults(func=_command)
