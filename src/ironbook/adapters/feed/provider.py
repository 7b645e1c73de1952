"""The odds provider interface.

A provider yields typed feed messages (`ironbook.adapters.feed.messages`) of
one producer in cursor order, and can start again after any cursor: that is
how ingestion resumes exactly after a restart or an outage (real providers
call it "recovery from timestamp"). The built-in one is the JetStream feed
stream (`nats_stream.NatsFeedStream`), which the simulator, or an external
provider's bridge, publishes into.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ironbook.adapters.feed.messages import AnyFeedMessage


class FeedUnavailable(Exception):
    """The provider cannot be read right now (transport down, no stream yet)."""


class FeedProvider(Protocol):
    @property
    def producer(self) -> str: ...

    def iterate(self, after_cursor: int) -> AsyncIterator[AnyFeedMessage]:
        """Every message with a cursor above `after_cursor`, in cursor order,
        waiting for new ones forever. A message the provider cannot decode is
        skipped (and logged): its cursor is never yielded."""
        ...

    async def tail_cursor(self) -> int:
        """The cursor of the newest message the provider holds (0: none)."""
        ...
