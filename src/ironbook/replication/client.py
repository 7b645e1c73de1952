"""Submitting commands to a partition's leader, with retries.

A retry always sends the same bytes (so the same request id): the ledger
answers a repeated request id with its first outcome, so a failover shows up
as latency, never as a duplicate. Used by the gateway and by the simulator's
clients alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import msgspec

from ironbook import core
from ironbook.replication.interfaces import (
    Clock,
    ReplicationError,
    RequestClient,
    TransportError,
)
from ironbook.replication.wire import BadRequestReply, OutcomeReply, decode_reply


class GaveUp(ReplicationError):
    """No outcome before the deadline. The command may or may not have been
    applied; submitting it again (same request id) finds out."""


class BadRequest(ReplicationError):
    """The leader could not decode the command; retrying will not help."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    request_timeout_ms: int = 1_000
    deadline_ms: int = 15_000
    """Total time one `submit` may take, retries included."""
    backoff_initial_ms: int = 25
    backoff_max_ms: int = 1_000


class LedgerClient:
    def __init__(
        self, transport: RequestClient, *, clock: Clock, rng: random.Random, config: ClientConfig
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._rng = rng
        self._config = config
        self.attempts = 0

    async def submit(self, command: core.AnyCommand) -> core.Accepted | core.Rejected:
        """The durable outcome of `command`. Raises `GaveUp` or `BadRequest`."""
        config = self._config
        payload = core.encode_command(command)
        deadline_ms = self._clock.now_ms() + config.deadline_ms
        backoff_ms = config.backoff_initial_ms
        while True:
            remaining_ms = deadline_ms - self._clock.now_ms()
            if remaining_ms <= 0:
                raise GaveUp(f"no outcome for {command.request_id} within {config.deadline_ms} ms")
            self.attempts += 1
            try:
                raw = await self._transport.request(
                    payload, timeout_ms=min(config.request_timeout_ms, remaining_ms)
                )
            except TransportError:
                pass
            else:
                try:
                    reply = decode_reply(raw)
                except msgspec.MsgspecError:
                    reply = None
                if isinstance(reply, OutcomeReply):
                    return core.decode_outcome(reply.outcome)
                if isinstance(reply, BadRequestReply):
                    raise BadRequest(reply.message)
            # Full jitter: concurrent clients of a failed leader spread out.
            pause_ms = self._rng.randint(backoff_ms // 2, backoff_ms)
            await self._clock.sleep(min(pause_ms, max(0, deadline_ms - self._clock.now_ms())))
            backoff_ms = min(backoff_ms * 2, config.backoff_max_ms)
