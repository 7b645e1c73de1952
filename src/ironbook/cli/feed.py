"""`ironbook feed status`: where a feed producer stands in a running cluster.

The feed stream's tail, each partition's cursor for the producer (how far
the ingester has brought it) and whether the producer is down there, and the
settlement service's backlog of results. See docs/feed.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import nats.errors
import nats.js.errors

from ironbook import core
from ironbook.adapters.feed.messages import valid_producer
from ironbook.adapters.feed.nats_stream import NatsFeedStream, feed_stream_name
from ironbook.adapters.feed.provider import FeedUnavailable
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.cli.up import add_data_dir_argument, data_dir_of
from ironbook.client import ClientConfig, GaveUp, ledger_over_nats
from ironbook.core.views import FeedCursorReply
from ironbook.services.feed.settlement import CONSUMER
from ironbook.services.local_cluster import read_runtime

TIMEOUT_MS = 5_000


async def feed_status(endpoint: NatsEndpoint, partitions: int, producer: str) -> dict[str, Any]:
    nc = await endpoint.connect("ironbook-feed-status")
    client = ledger_over_nats(
        nc,
        partitions=partitions,
        config=ClientConfig(deadline_ms=TIMEOUT_MS),
        issuer=core.service_principal("ops", "cli:feed-status"),
    )
    status: dict[str, Any] = {"producer": producer, "stream": feed_stream_name(producer)}
    try:
        try:
            status["tail_cursor"] = await NatsFeedStream(nc, producer).tail_cursor()
        except FeedUnavailable as err:
            status["tail_cursor"] = None
            status["stream_error"] = str(err)
        status["partitions"] = []
        for partition in range(partitions):
            try:
                outcome = await client.submit_to(
                    partition,
                    core.GetFeedCursor(request_id="feed-status", producer=producer),
                )
            except GaveUp:
                status["partitions"].append({"partition": partition, "error": "no answer"})
                continue
            reply = outcome.result if isinstance(outcome, core.Accepted) else None
            if isinstance(reply, FeedCursorReply):
                status["partitions"].append(
                    {"partition": partition, "cursor": reply.cursor, "down": reply.down}
                )
        try:
            info = await nc.jetstream().consumer_info(feed_stream_name(producer), CONSUMER)
            status["settlement"] = {
                "pending": info.num_pending,
                "in_flight": info.num_ack_pending,
                "redelivered": info.num_redelivered,
            }
        except nats.js.errors.NotFoundError:
            status["settlement"] = {
                "error": f"no consumer {CONSUMER!r} (no settlement service yet)"
            }
        except nats.errors.Error as err:
            status["settlement"] = {"error": repr(err)}
    finally:
        await client.close()
        await close_nats(nc)
    return status


def _print(status: dict[str, Any]) -> None:
    tail = status["tail_cursor"]
    if tail is None:
        producer, stream = status["producer"], status["stream"]
        print(f"producer {producer}: no stream {stream} ({status['stream_error']})")
    else:
        print(f"producer {status['producer']}: stream {status['stream']}, tail cursor {tail}")
    for row in status["partitions"]:
        if "error" in row:
            print(f"  partition {row['partition']}: {row['error']}")
            continue
        lag = "" if tail is None else f", {max(0, tail - row['cursor'])} behind"
        state = "DOWN (markets suspended)" if row["down"] else "up"
        print(f"  partition {row['partition']}: cursor {row['cursor']}{lag}, producer {state}")
    settlement = status["settlement"]
    if "error" in settlement:
        print(f"  settlement: {settlement['error']}")
    else:
        print(
            f"  settlement: {settlement['pending']} result(s) waiting, "
            f"{settlement['in_flight']} in flight, {settlement['redelivered']} redelivered"
        )


def _command(args: argparse.Namespace) -> int:
    if not valid_producer(args.producer):
        print("error: --producer must be 1-32 of [A-Za-z0-9_-]", file=sys.stderr)
        return 2
    data_dir = data_dir_of(args)
    runtime = read_runtime(data_dir)
    if runtime is None:
        print(f"no cluster is running from {data_dir} (start one with `ironbook up`)")
        return 1
    status = asyncio.run(feed_status(runtime.endpoint(), runtime.partitions, args.producer))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print(status)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "feed",
        help="the odds feed of a running cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status",
        help="stream tail, per-partition cursors, producer up/down, settlement backlog",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_dir_argument(status)
    status.add_argument("--producer", default="sim", help="the feed producer (default sim)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_command)
