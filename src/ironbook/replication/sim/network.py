"""The simulated network between hosts and the log cluster, and the faults it
injects: latency with jitter (which reorders independent messages), latency
spikes, message loss, isolated hosts and a cluster without quorum.

Requests from one host to the cluster arrive in the order sent (one TCP
connection each, as with a NATS client), replies may overtake each other.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from ironbook.replication.sim.host import Host

T = TypeVar("T")

_LATENCY_GRID_MS = 0.5
_FIFO_GAP_S = 1e-6

Channel = Literal["log", "lease", "snapshots", "clients"]


class CallTimeout(Exception):
    """No reply within the caller's timeout: lost, slow, or never processed."""


@dataclass(slots=True)
class NetworkFaults:
    """Knobs the fault schedule turns during a run; all off when healed."""

    loss_rate: float = 0.0
    """Chance any one message (request or reply) is lost."""
    spike_rate: float = 0.0
    """Chance a message takes `spike_ms` longer (an overloaded link or server)."""
    spike_ms: float = 300.0
    cluster_down: bool = False
    """No quorum: requests reaching the cluster are not processed."""

    def heal(self) -> None:
        self.loss_rate = 0.0
        self.spike_rate = 0.0
        self.cluster_down = False


@dataclass(slots=True)
class _Outcome(Generic[T]):
    value: T | None
    error: BaseException | None


class Network:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
        *,
        base_latency_ms: float = 0.3,
        jitter_ms: float = 1.5,
    ) -> None:
        self._loop = loop
        self._rng = rng
        self._base_latency_ms = base_latency_ms
        self._jitter_ms = jitter_ms
        self.faults = NetworkFaults()
        self._isolated: dict[str, bool] = {}
        self._extra_latency_ms: dict[tuple[str, Channel], float] = {}
        self._last_arrival_s: dict[tuple[str, int, Channel], float] = {}

    # Fault controls.

    def isolate(self, host_name: str, isolated: bool) -> None:
        self._isolated[host_name] = isolated

    def slow_down(self, host_name: str, channel: Channel, extra_ms: float) -> None:
        self._extra_latency_ms[(host_name, channel)] = extra_ms

    def heal(self) -> None:
        self.faults.heal()
        self._isolated.clear()
        self._extra_latency_ms.clear()

    # Delivery.

    def latency_s(self, host_name: str, channel: Channel) -> float:
        ms = self._base_latency_ms + self._rng.random() * self._jitter_ms
        if self.faults.spike_rate and self._rng.random() < self.faults.spike_rate:
            ms += self._rng.random() * self.faults.spike_ms
        ms += self._extra_latency_ms.get((host_name, channel), 0.0)
        # On a coarse grid, so that messages meet in one loop iteration far
        # more often: the simulator runs faster, the orderings stay rich.
        return math.ceil(ms / _LATENCY_GRID_MS) * _LATENCY_GRID_MS / 1000

    def lost(self, host_name: str) -> bool:
        if self._isolated.get(host_name, False):
            return True
        return bool(self.faults.loss_rate) and self._rng.random() < self.faults.loss_rate

    def deliver(self, host_name: str, channel: Channel, callback: Callable[[], None]) -> None:
        """Carry a one-way message (a reply, a client request): unordered."""
        if self.lost(host_name):
            return
        self._loop.call_later(self.latency_s(host_name, channel), callback)

    async def call(
        self,
        host: Host,
        channel: Channel,
        handler: Callable[[], T],
        *,
        timeout_ms: float,
    ) -> T:
        """Send a request from `host` to the cluster, run `handler` there
        (atomically, at arrival) and carry its result or exception back.

        Raises `CallTimeout` if no reply came within `timeout_ms` (the handler
        may or may not have run) and `HostDown` if the host has crashed.
        """
        await host.gate()
        loop = self._loop
        reply: asyncio.Future[_Outcome[T]] = loop.create_future()
        deadline_s = loop.time() + timeout_ms / 1000

        def answer(outcome: _Outcome[T]) -> None:
            if not reply.done():
                reply.set_result(outcome)

        # Every fate is drawn when it becomes known, and only the one event
        # that ends the call is scheduled: its reply, or its timeout.
        def time_out() -> None:
            answer(_Outcome(None, CallTimeout()))

        def arrive() -> None:
            if self.faults.cluster_down:
                loop.call_at(deadline_s, time_out)
                return
            try:
                outcome: _Outcome[T] = _Outcome(handler(), None)
            except Exception as error:
                outcome = _Outcome(None, error)
            if arrival_s > deadline_s:
                return
            back_s = loop.time() + self.latency_s(host.name, channel)
            if self.lost(host.name) or back_s > deadline_s:
                loop.call_at(deadline_s, time_out)
            else:
                loop.call_at(back_s, answer, outcome)

        if self.lost(host.name):
            loop.call_at(deadline_s, time_out)
        else:
            key = (host.name, host.incarnation, channel)
            # Strictly after the previous request on this connection: the
            # loop's timer heap does not keep equal deadlines in FIFO order.
            arrival_s = max(
                loop.time() + self.latency_s(host.name, channel),
                self._last_arrival_s.get(key, 0.0) + _FIFO_GAP_S,
            )
            self._last_arrival_s[key] = arrival_s
            loop.call_at(arrival_s, arrive)
            if arrival_s > deadline_s:
                loop.call_at(deadline_s, time_out)
        outcome = await reply
        await host.gate()
        if outcome.error is not None:
            raise outcome.error
        return outcome.value  # type: ignore[return-value]
