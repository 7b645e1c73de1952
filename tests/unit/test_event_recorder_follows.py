"""`ironbook up`'s significant events follow the primary: when a DR
promotion or failback moves it, the recorder reconnects to the new primary's
servers, and the event it was writing to the old one (fenced: it will never
store it) is written there, under the same message id."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ironbook.adapters.audit.events import EventOutbox
from ironbook.services.cluster_events import PROCESS_RESTARTED, record_events


@dataclass
class Site:
    url: str
    stores: bool
    """False: a fenced site, whose publish never gets an ack."""
    stored: list[str] = field(default_factory=list)
    tried: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def publish(self, subject: str, data: bytes, **kwargs: object) -> None:
        self.tried.set()
        if not self.stores:
            await asyncio.Event().wait()  # no ack, ever
        headers = kwargs["headers"]
        assert isinstance(headers, dict)
        async with self.changed:
            self.stored.append(headers["Nats-Msg-Id"])
            self.changed.notify_all()

    async def holds(self, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.stored) >= count)


class Connection:
    def __init__(self, site: Site) -> None:
        self.site = site

    def jetstream(self) -> Site:
        return self.site

    async def close(self) -> None:
        pass


@dataclass
class Endpoint:
    site: Site

    @property
    def url(self) -> str:
        return self.site.url

    async def connect(self, name: str) -> Connection:
        return Connection(self.site)


def test_the_event_being_written_follows_the_primary_to_its_new_site() -> None:
    fenced, promoted = Site("nats://a", stores=False), Site("nats://b", stores=True)
    primary = {"now": Endpoint(fenced)}
    outbox = EventOutbox()
    outbox.note(PROCESS_RESTARTED, "supervisor", "exited", "p0-r1", msg_id="restart-1")

    async def scenario() -> None:
        recorder = asyncio.create_task(
            record_events(lambda: primary["now"], outbox, follow_s=0.01)  # type: ignore[arg-type,return-value]
        )
        try:
            await asyncio.wait_for(fenced.tried.wait(), 10)
            primary["now"] = Endpoint(promoted)
            await asyncio.wait_for(promoted.holds(1), 10)
            outbox.note(PROCESS_RESTARTED, "supervisor", "exited", "p0-r2", msg_id="restart-2")
            await asyncio.wait_for(promoted.holds(2), 10)
        finally:
            recorder.cancel()

    asyncio.run(scenario())
    assert fenced.stored == []
    assert promoted.stored == ["restart-1", "restart-2"]
    assert outbox.waiting == 0
