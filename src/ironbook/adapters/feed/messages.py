"""Feed messages: what an odds provider says, in a shape modelled on
Sportradar's Unified Odds Feed (`odds_change`, `bet_stop`, `bet_settlement`,
`rollback_bet_settlement`, `bet_cancel`, `alive`).

Every message carries the envelope: the `producer` that sent it, its `cursor`
(strictly increasing per producer: the recovery point), `ts_ms` (provider
time, Unix milliseconds) and a message id derived from both. On the wire a
message is a JSON object tagged by `kind`, so an external provider can publish
into the feed stream from any language (see docs/feed.md).

Prices are decimal odds in integer hundredths (2.50 is 250), on the ladder of
`ironbook.core.odds`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

PRODUCER_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
Producer = Annotated[str, msgspec.Meta(pattern=PRODUCER_PATTERN)]
# Ids end up in NATS subjects (`odds.<event>.<market>`): no dots, wildcards or spaces.
FeedId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_:-]{1,64}$")]
Odds = Annotated[int, msgspec.Meta(ge=101, le=100_000)]
MarketStatus = Literal["open", "suspended", "closed"]
Certainty = Literal["confirmed", "live_scouted"]
Sport = Literal["football", "horse_racing"]

MAX_SELECTIONS = 64
MAX_MARKETS_PER_MESSAGE = 100


class MarketSelection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    selection_id: FeedId
    name: Annotated[str, msgspec.Meta(max_length=200)]
    odds: Odds


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    selection_id: FeedId
    odds: Odds


class Result(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A winning selection; `dead_heat` > 1 divides the stake between that many
    runners tied for the place."""

    selection_id: FeedId
    dead_heat: Annotated[int, msgspec.Meta(ge=1, le=MAX_SELECTIONS)] = 1


class FeedMessage(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", forbid_unknown_fields=True
):
    producer: Producer
    cursor: Annotated[int, msgspec.Meta(ge=1)]
    ts_ms: Annotated[int, msgspec.Meta(ge=0)]

    @property
    def message_id(self) -> str:
        """Unique per provider message: the basis of every request id the
        feed's effects carry, which makes them exactly-once."""
        return f"{self.producer}:{self.cursor}"


class NewMarket(FeedMessage, frozen=True, tag="market_created"):
    """A fixture's market, with its selections and opening prices."""

    event_id: FeedId
    event_name: Annotated[str, msgspec.Meta(max_length=200)]
    sport: Sport
    market_id: FeedId
    market_name: Annotated[str, msgspec.Meta(max_length=200)]
    selections: Annotated[tuple[MarketSelection, ...], msgspec.Meta(min_length=1, max_length=64)]
    in_play: bool = False
    bet_delay_s: Annotated[int, msgspec.Meta(ge=0, le=60)] = 0


class OddsChange(FeedMessage, frozen=True, tag="odds_change"):
    """New prices and/or a new status for one market. Fields left out (None,
    no prices) are unchanged."""

    event_id: FeedId
    market_id: FeedId
    status: MarketStatus | None = None
    in_play: bool | None = None
    bet_delay_s: Annotated[int, msgspec.Meta(ge=0, le=60)] | None = None
    prices: Annotated[tuple[Price, ...], msgspec.Meta(max_length=64)] = ()


class BetStop(FeedMessage, frozen=True, tag="bet_stop"):
    """Suspend these markets of an event at once (a goal, a red card, the off)."""

    event_id: FeedId
    market_ids: Annotated[
        tuple[FeedId, ...], msgspec.Meta(min_length=1, max_length=MAX_MARKETS_PER_MESSAGE)
    ]


class BetSettlement(FeedMessage, frozen=True, tag="bet_settlement"):
    """The result of a market. Only a `confirmed` result is paid out."""

    event_id: FeedId
    market_id: FeedId
    winners: Annotated[tuple[Result, ...], msgspec.Meta(max_length=64)]
    certainty: Certainty = "confirmed"


class RollbackBetSettlement(FeedMessage, frozen=True, tag="rollback_bet_settlement"):
    """The last settlement of the market was wrong: bets are open again."""

    event_id: FeedId
    market_id: FeedId


class BetCancel(FeedMessage, frozen=True, tag="bet_cancel"):
    """Void the market's bets; with a window, only bets placed within it
    (`start_ms` inclusive, `end_ms` exclusive, provider time)."""

    event_id: FeedId
    market_id: FeedId
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    start_ms: int | None = None
    end_ms: int | None = None


class Alive(FeedMessage, frozen=True, tag="alive"):
    """The producer's heartbeat, about once a second."""


AnyFeedMessage = (
    NewMarket | OddsChange | BetStop | BetSettlement | RollbackBetSettlement | BetCancel | Alive
)
ResultMessage = BetSettlement | RollbackBetSettlement | BetCancel


def valid_producer(producer: str) -> bool:
    """A producer name is part of stream and subject names."""
    return re.fullmatch(PRODUCER_PATTERN, producer) is not None


_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyFeedMessage] = msgspec.json.Decoder(AnyFeedMessage)


def encode_message(message: AnyFeedMessage) -> bytes:
    return _encoder.encode(message)


def decode_message(data: bytes) -> AnyFeedMessage:
    """Raises `msgspec.ValidationError` / `msgspec.DecodeError` on bad input."""
    return _decoder.decode(data)


def subject_group(message: AnyFeedMessage) -> str:
    """Which part of the feed a message belongs to: `market` (prices and
    status, for the ingester), `result` (for the settlement service) or
    `alive` (heartbeats)."""
    if isinstance(message, ResultMessage):
        return "result"
    if isinstance(message, Alive):
        return "alive"
    return "market"


def message_subject(message: AnyFeedMessage) -> str:
    """`feed.<producer>.<group>.<kind>`: a message's own subject (the feed
    stream held one message per JetStream message on it before frames; a
    frame's subject is `nats_stream.frame_subject`)."""
    kind = type(message).__struct_config__.tag
    return f"feed.{message.producer}.{subject_group(message)}.{kind}"
