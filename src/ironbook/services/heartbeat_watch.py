"""Listen to replica heartbeats over a run: keep the longest event-loop block
per kind of work any replica reported (a killed replica's last heartbeat
still counts) and every leader term heard. The chaos report and `bench
settle` read it."""

from __future__ import annotations

import contextlib
import time
from types import TracebackType

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.services.status import STATUS_SUBJECT_ALL, decode_heartbeat


class HeartbeatWatch:
    """`async with HeartbeatWatch(endpoint) as watch:` (or `start`/`stop`), then
    `watch.longest_block_ms()`, `watch.leader_terms(partition)`."""

    def __init__(self, nats: NatsEndpoint) -> None:
        self._nats = nats
        self._longest_ms: dict[str, int] = {}
        self._by_node: dict[str, dict[str, int]] = {}
        self._leaders: dict[int, dict[int, tuple[str, float]]] = {}
        self._roles: dict[str, tuple[str, int]] = {}
        self._nc: NatsClient | None = None

    async def start(self) -> None:
        nc = await self._nats.connect("ironbook-loop-watch")
        self._nc = nc

        async def on_msg(msg: object) -> None:
            with contextlib.suppress(msgspec.MsgspecError):
                beat = decode_heartbeat(getattr(msg, "data", b""))
                self._by_node[beat.node_id] = beat.loop_block_ms
                self._roles[beat.node_id] = (beat.role, beat.applied_seq)
                if beat.role == "leader":
                    terms = self._leaders.setdefault(beat.partition, {})
                    terms.setdefault(beat.term, (beat.node_id, time.monotonic()))
                for kind, block_ms in beat.loop_block_ms.items():
                    if block_ms > self._longest_ms.get(kind, -1):
                        self._longest_ms[kind] = block_ms

        await nc.subscribe(STATUS_SUBJECT_ALL, cb=on_msg)

    async def stop(self) -> None:
        """Stop listening (a no-op if not started); what was heard stays."""
        nc = self._nc
        self._nc = None
        if nc is not None:
            await close_nats(nc)

    async def __aenter__(self) -> HeartbeatWatch:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def roles(self) -> dict[str, tuple[str, int]]:
        """node -> (role, applied log sequence) from its newest heartbeat."""
        return dict(sorted(self._roles.items()))

    def leader_terms(self, partition: int, since: float = 0.0) -> dict[int, str]:
        """term -> the node heard leading the partition in it, for the terms
        first heard at or after `since` (`time.monotonic()`)."""
        terms = self._leaders.get(partition, {})
        return {term: node for term, (node, heard) in sorted(terms.items()) if heard >= since}

    def longest_block_ms(self) -> dict[str, int]:
        """kind -> the longest block any replica reported, in milliseconds."""
        return dict(sorted(self._longest_ms.items()))

    def block_ms_by_node(self) -> dict[str, dict[str, int]]:
        """node -> its own longest blocks, from its newest heartbeat."""
        return dict(sorted(self._by_node.items()))
