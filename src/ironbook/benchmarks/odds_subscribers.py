"""The odds benchmark's WebSocket subscribers, in child processes.

Each process (`python -m ironbook.benchmarks.odds_subscribers`) connects
`--count` subscribers, each watching `--markets-per-subscriber` random markets,
prints "ready", records the latency of every odds frame until its stdin says
"stop" ("reset" forgets the samples so far), and prints one JSON line of
results. Latency of a frame = the subscriber's wall clock when it arrives -
the message's `feed_ts_ms`; `fanout` measures from `published_ms`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from ironbook.adapters import eventloop
from ironbook.benchmarks.children import ChildProcess, stdin_lines
from ironbook.replication.concurrency import wait_for

PROCESS_MODULE = "ironbook.benchmarks.odds_subscribers"
CONNECT_CONCURRENCY = 50
CONNECT_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
DRAIN_S = 1.0
"""After the feed stops, subscribers keep reading this long for frames in flight."""
EXAMPLES = 5


class _Times(msgspec.Struct):
    feed_ts_ms: int
    published_ms: int


class _Frame(msgspec.Struct):
    """The part of a server frame a subscriber measures (other fields ignored)."""

    type: str
    data: _Times | None = None


decode_frame = msgspec.json.Decoder(_Frame).decode


@dataclass
class _Samples:
    latencies_ms: list[float] = field(default_factory=list)
    fanout_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """Frames that were not odds (the first few)."""
    lost: list[str] = field(default_factory=list)
    """Connections that ended while measuring (e.g. a ping timeout under load)."""

    def reset(self) -> None:
        self.latencies_ms.clear()
        self.fanout_ms.clear()

    def result(self) -> dict[str, Any]:
        return {
            "frames": len(self.latencies_ms),
            "latencies_ms": [round(x, 2) for x in self.latencies_ms],
            "fanout_ms": [round(x, 2) for x in self.fanout_ms],
            "errors": self.errors,
            "lost": len(self.lost),
            "lost_examples": self.lost[:3],
        }


async def _connect(url: str, token: str) -> ClientConnection:
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            # No permessage-deflate: compressing every frame per connection
            # would cost the gateway more than the fan-out itself.
            return await connect(
                url,
                compression=None,
                max_queue=64,
                open_timeout=CONNECT_TIMEOUT_S,
                additional_headers={"Authorization": f"Bearer {token}"},
            )
        except (OSError, TimeoutError):
            if attempt == CONNECT_ATTEMPTS:
                raise
            await asyncio.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


async def _subscribe(
    url: str, token: str, markets: list[str], gate: asyncio.Semaphore
) -> ClientConnection:
    async with gate:
        ws = await _connect(url, token)
        await ws.send(json.dumps({"action": "subscribe", "markets": markets}))
        reply = json.loads(await wait_for(ws.recv(), REPLY_TIMEOUT_S))
        while reply.get("type") == "odds":  # prices of markets watched already
            reply = json.loads(await wait_for(ws.recv(), REPLY_TIMEOUT_S))
        if reply.get("type") != "subscribed":
            raise RuntimeError(f"subscribe refused: {reply}")
    return ws


async def _read(ws: ClientConnection, samples: _Samples) -> None:
    try:
        async for text in ws:
            received_ms = time.time_ns() / 1_000_000
            frame = decode_frame(text)
            if frame.type == "odds" and frame.data is not None:
                samples.latencies_ms.append(received_ms - frame.data.feed_ts_ms)
                samples.fanout_ms.append(received_ms - frame.data.published_ms)
            elif len(samples.errors) < EXAMPLES:
                samples.errors.append(str(text)[:200])
        samples.lost.append(f"closed: {ws.close_code} {ws.close_reason}")
    except (OSError, WebSocketException, msgspec.DecodeError) as err:
        samples.lost.append(repr(err)[:200])


async def _close(ws: ClientConnection) -> None:
    with contextlib.suppress(OSError, WebSocketException):
        await ws.close()


async def _subscriber_process(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    market_ids = args.market_ids.split(",")
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    watched = min(len(market_ids), args.markets_per_subscriber)
    async with asyncio.TaskGroup() as opening:
        pending = [
            opening.create_task(
                _subscribe(args.url, args.token, rng.sample(market_ids, watched), gate)
            )
            for _ in range(args.count)
        ]
    sockets = [task.result() for task in pending]
    samples = _Samples()
    async with asyncio.TaskGroup() as group:
        readers = [group.create_task(_read(ws, samples)) for ws in sockets]
        print("ready", flush=True)
        async for line in stdin_lines():
            if line == b"stop":
                break
            if line == b"reset":
                samples.reset()
        await asyncio.sleep(DRAIN_S)
        print(json.dumps(samples.result()), flush=True)
        for reader in readers:
            reader.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S), asyncio.TaskGroup() as closing:
            for ws in sockets:
                closing.create_task(_close(ws))


@dataclass
class Subscribers:
    """In the parent: the subscriber processes."""

    children: list[ChildProcess] = field(default_factory=list)

    @classmethod
    async def start(
        cls, args: argparse.Namespace, ws_url: str, token: str, market_ids: list[str]
    ) -> Subscribers:
        group = cls()
        per_process = -(-args.subscribers // args.client_processes)
        remaining = args.subscribers
        try:
            for index in range(args.client_processes):
                count = min(per_process, remaining)
                remaining -= count
                if count <= 0:
                    break
                child = await ChildProcess.start(
                    PROCESS_MODULE,
                    "--url",
                    ws_url,
                    "--token",
                    token,
                    "--count",
                    str(count),
                    "--market-ids",
                    ",".join(market_ids),
                    "--markets-per-subscriber",
                    str(args.markets_per_subscriber),
                    "--seed",
                    str(args.seed * 1_000 + index),
                )
                group.children.append(child)
            for child in group.children:
                await child.wait_ready()
        except BaseException:
            group.kill()
            raise
        return group

    @property
    def pids(self) -> list[int | None]:
        return [child.pid for child in self.children]

    async def tell(self, command: bytes) -> None:
        for child in self.children:
            await child.tell(command)

    async def stop(self) -> list[dict[str, Any]]:
        await self.tell(b"stop")
        return [await child.result(60) for child in self.children]

    def kill(self) -> None:
        for child in self.children:
            child.kill()


def main(argv: list[str] | None = None) -> int:
    """One subscriber process (started by `Subscribers.start`)."""
    p = argparse.ArgumentParser(description="the odds benchmark's subscriber process")
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--market-ids", required=True)
    p.add_argument("--markets-per-subscriber", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    eventloop.run(_subscriber_process(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
