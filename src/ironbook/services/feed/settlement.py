"""The settlement service: results from the feed into the ledger, exactly once.

    python -m ironbook.bootstrap feed-settle --nats URL --partitions N --producer sim

A durable JetStream consumer (`settlement`) reads the producer's result
frames (`feed.<producer>.result.>`: frames holding only `bet_settlement`,
`rollback_bet_settlement` and `bet_cancel`) one frame at a time, each frame's
results one at a time, in feed order. Each message becomes ledger
commands whose request ids derive from the provider message
(`feed:<producer>:<cursor>:<step>`), so a message delivered again after a
crash replays the ledger's first outcomes instead of acting twice. A
frame is acknowledged only after every partition gave a definite outcome for
each of its results.

- `bet_settlement` (confirmed): an open or suspended market is closed, then
  settled; a market already settled or voided with another result is
  resettled (the reason names the feed, the producer and the message).
- `rollback_bet_settlement`: the settlement is undone (`RollbackSettlement`).
- `bet_cancel`: the market is voided, or only the bets placed in its window.

A result is acted on only once the ingester has brought every partition up to
its cursor (`GetFeedCursor`), so the market's state from the feed is there;
until then the message is put back with a delay ("not yet"). A market still
unknown then was never created: the result is logged and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Literal

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ironbook import core
from ironbook.adapters.feed.messages import (
    BetCancel,
    BetSettlement,
    ResultMessage,
    RollbackBetSettlement,
)
from ironbook.adapters.feed.nats_stream import (
    FeedFrameError,
    NatsFeedStream,
    decode_frame,
    feed_stream_name,
)
from ironbook.adapters.nats.provision import with_placement_retry
from ironbook.client import GaveUp, LedgerClient
from ironbook.core.views import FeedCursorReply, MarketView
from ironbook.services.process import all_of
from ironbook.services.service_metrics import SettlementCounts

log = logging.getLogger("ironbook.feed.settlement")

CONSUMER = "settlement"
ACK_WAIT_S = 5
NOT_YET_DELAY_S = 1.0
FETCH_WAIT_S = 1.0

Verdict = Literal["done", "later"]


class SettlementService:
    def __init__(
        self, client: LedgerClient, producer: str, counts: SettlementCounts | None = None
    ) -> None:
        """`counts`: the metrics, added to as results are acted on."""
        self.client = client
        self.producer = producer
        self.actor = f"feed:{producer}"
        self.handled = 0
        self.counts = counts or SettlementCounts()

    @property
    def done_through(self) -> int:
        """The newest result handled by this process (results come in feed order)."""
        return self.counts.done_through

    async def handle(self, message: ResultMessage) -> Verdict:
        """Every partition's definite outcome ("done"), or "later"."""
        if isinstance(message, BetSettlement) and message.certainty != "confirmed":
            log.info("%s: %s result not confirmed: ignored", message.message_id, message.market_id)
            return "done"
        verdicts = await all_of(
            *(self._handle_in(partition, message) for partition in range(self.client.partitions))
        )
        if all(v == "done" for v in verdicts):
            self.handled += 1
            kind = type(message).__name__
            self.counts.results[kind] = self.counts.results.get(kind, 0) + 1
            return "done"
        return "later"

    async def _handle_in(self, partition: int, message: ResultMessage) -> Verdict:
        cursor = await self._query(
            partition,
            core.GetFeedCursor(request_id=self._read_id("cursor"), producer=self.producer),
        )
        if not isinstance(cursor, FeedCursorReply) or cursor.cursor < message.cursor:
            return "later"
        view = await self._query(
            partition,
            core.GetMarket(request_id=self._read_id("market"), market_id=message.market_id),
        )
        if not isinstance(view, MarketView):
            # The ledger holds the feed up to this message: a market it does
            # not know now was never created (or was refused). Waiting would
            # only hold up every result behind this one.
            log.error(
                "%s: partition %d has no market %s: result skipped",
                message.message_id,
                partition,
                message.market_id,
            )
            return "done"
        if isinstance(message, BetSettlement):
            await self._settle(partition, message, view)
        elif isinstance(message, RollbackBetSettlement):
            await self._rollback(partition, message, view)
        else:
            await self._cancel(partition, message)
        return "done"

    async def _settle(self, partition: int, message: BetSettlement, view: MarketView) -> None:
        winners = tuple(core.Winner(w.selection_id, w.dead_heat) for w in message.winners)
        if view.status in ("open", "suspended"):
            await self._command(
                partition,
                core.CloseMarket(
                    request_id=self._id(message, "close"),
                    market_id=message.market_id,
                    reason=f"feed {self.producer} result {message.message_id}",
                ),
                "close for settlement",
            )
        outcome = await self._command(
            partition,
            core.SettleMarket(
                request_id=self._id(message, "settle"),
                market_id=message.market_id,
                winners=winners,
                actor=self.actor,
                reason=f"feed {self.producer} result {message.message_id}",
            ),
            f"settle, winners {_names(winners)}",
        )
        if isinstance(outcome, core.Accepted):
            return
        now = await self._query(
            partition,
            core.GetMarket(request_id=self._read_id("market"), market_id=message.market_id),
        )
        same_winners = isinstance(now, MarketView) and set(now.winners) == {
            w.selection_id for w in winners
        }
        if isinstance(now, MarketView) and now.status == "settling" and same_winners:
            return  # being settled with this result already, slice by slice
        if not isinstance(now, MarketView) or now.status not in ("settled", "voided"):
            log.error(
                "%s: cannot settle %s: %s", message.message_id, message.market_id, outcome.message
            )
            return
        if now.status == "settled" and same_winners:
            return  # settled with this result already
        await self._command(
            partition,
            core.ResettleMarket(
                request_id=self._id(message, "resettle"),
                market_id=message.market_id,
                winners=winners,
                actor=self.actor,
                reason=f"feed {self.producer} result {message.message_id}: {_names(winners)}",
            ),
            f"resettle, winners {_names(winners)}",
        )

    async def _rollback(
        self, partition: int, message: RollbackBetSettlement, view: MarketView
    ) -> None:
        if view.status not in ("settled", "voided"):
            log.info(
                "%s: %s is %s: no settlement to roll back",
                message.message_id,
                message.market_id,
                view.status,
            )
            return
        await self._command(
            partition,
            core.RollbackSettlement(
                request_id=self._id(message, "rollback"),
                market_id=message.market_id,
                actor=self.actor,
                reason=f"feed {self.producer} rollback {message.message_id}",
            ),
            "rollback settlement",
        )

    async def _cancel(self, partition: int, message: BetCancel) -> None:
        window = (
            f" placed in [{message.start_ms}, {message.end_ms})"
            if message.start_ms is not None or message.end_ms is not None
            else ""
        )
        await self._command(
            partition,
            core.VoidMarket(
                request_id=self._id(message, "void"),
                market_id=message.market_id,
                actor=self.actor,
                reason=f"feed {self.producer} cancel {message.message_id}: {message.reason}",
                placed_from_ms=message.start_ms,
                placed_to_ms=message.end_ms,
            ),
            f"void bets{window}",
        )

    def _id(self, message: ResultMessage, step: str) -> str:
        return f"feed:{message.message_id}:{step}"

    def _read_id(self, what: str) -> str:
        return f"feed:{self.producer}:read-{what}:{time.time_ns()}"

    async def _query(self, partition: int, query: core.AnyQuery) -> object:
        outcome = await self.client.submit_to(partition, query)
        return outcome.result if isinstance(outcome, core.Accepted) else None

    async def _command(self, partition: int, command: core.AnyCommand, action: str) -> core.Outcome:
        """The definite outcome (raises `GaveUp` when there is none yet)."""
        outcome = await self.client.submit_to(partition, command)
        market_id = getattr(command, "market_id", "")
        if isinstance(outcome, core.Accepted):
            log.info(
                "%s %s on partition %d: done (actor %s, request %s)",
                action,
                market_id,
                partition,
                self.actor,
                command.request_id,
            )
        else:
            log.info(
                "%s %s on partition %d: refused %s: %s (request %s)",
                action,
                market_id,
                partition,
                outcome.code,
                outcome.message,
                command.request_id,
            )
        return outcome


def _names(winners: tuple[core.Winner, ...]) -> str:
    return (
        ",".join(w.selection_id + (f"/dh{w.dead_heat}" if w.dead_heat > 1 else "") for w in winners)
        or "-"
    )


async def consume(
    nc: NatsClient, service: SettlementService, *, replicas: int, stop: asyncio.Event
) -> None:
    producer = service.producer
    await NatsFeedStream.open(nc, producer, replicas=replicas)
    js = nc.jetstream()
    subject = f"feed.{producer}.result.>"
    config = ConsumerConfig(
        durable_name=CONSUMER,
        filter_subject=subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
        max_ack_pending=1,
        max_deliver=-1,
    )
    subscription = await with_placement_retry(
        f"consumer {CONSUMER}",
        lambda: js.pull_subscribe(
            subject, durable=CONSUMER, stream=feed_stream_name(producer), config=config
        ),
    )
    log.info("settling results of producer %s", producer)
    while not stop.is_set():
        try:
            messages = await subscription.fetch(1, timeout=FETCH_WAIT_S)
        except nats.errors.TimeoutError:
            continue
        except (nats.errors.Error, OSError) as err:
            log.warning("fetch failed: %r", err)
            await asyncio.sleep(NOT_YET_DELAY_S)
            continue
        for msg in messages:
            await _process(service, msg)


async def _process(service: SettlementService, msg: Msg) -> None:
    """One frame of results, in order; acknowledged when all are done. A
    frame put back ("later") is handled again from its first message not
    done yet (each command carries the same request id anyway)."""
    try:
        frame = decode_frame(service.producer, msg.subject, msg.data)
    except FeedFrameError as err:
        log.error("result frame on %s skipped: %s", msg.subject, err)
        await msg.term()
        return
    verdict: Verdict = "done"
    for message in frame:
        if message.cursor <= service.done_through:
            continue
        if not isinstance(message, BetSettlement | RollbackBetSettlement | BetCancel):
            log.error("%s on a result subject skipped", message.message_id)
            continue
        try:
            verdict = await service.handle(message)
        except GaveUp as err:
            log.warning("%s: no definite outcome yet (%s): again later", message.message_id, err)
            verdict = "later"
        if verdict != "done":
            break
        service.counts.done_through = message.cursor
        with contextlib.suppress(nats.errors.Error, OSError):
            await msg.in_progress()  # a long frame must not be redelivered meanwhile
    if verdict == "done":
        await msg.ack_sync()
    else:
        service.counts.retried += 1
        await msg.nak(delay=NOT_YET_DELAY_S)


async def backlog_frames(nc: NatsClient, producer: str) -> int:
    """Result frames the settlement consumer has not acknowledged: not yet
    delivered, or delivered and in progress."""
    info = await nc.jetstream().consumer_info(feed_stream_name(producer), CONSUMER)
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def serve(
    nc: NatsClient,
    client: LedgerClient,
    producer: str,
    *,
    replicas: int,
    stop: asyncio.Event,
    counts: SettlementCounts | None = None,
) -> None:
    await consume(nc, SettlementService(client, producer, counts), replicas=replicas, stop=stop)
