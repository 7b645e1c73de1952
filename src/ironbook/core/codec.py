"""Wire and storage encodings: commands, event batches, outcomes, snapshots,
and the state hash. MessagePack throughout.

The state hash is the SHA-256 of the snapshot bytes. Those bytes keep every
dict in insertion order, which is part of the state (it is the order in which
`decide` walks a market's bets), and which replaying the same log always
reproduces: replicas with the same history have byte-identical snapshots.
Encoding once serves both the snapshot and its hash."""

from __future__ import annotations

import hashlib

import msgspec

from ironbook.core.apply import recompute_max_liability
from ironbook.core.commands import AnyCommand
from ironbook.core.events import AnyEvent, AnyReply, Refusal
from ironbook.core.odds import from_hundredths
from ironbook.core.outcomes import Accepted, Outcome, Rejected
from ironbook.core.queries import AnyQuery
from ironbook.core.state import LedgerState
from ironbook.core.views import AnyView

_encoder = msgspec.msgpack.Encoder()
_command_decoder: msgspec.msgpack.Decoder[AnyCommand | AnyQuery] = msgspec.msgpack.Decoder(
    AnyCommand | AnyQuery
)
_events_decoder: msgspec.msgpack.Decoder[list[AnyEvent]] = msgspec.msgpack.Decoder(list[AnyEvent])
_reply_decoder: msgspec.msgpack.Decoder[AnyReply | AnyView] = msgspec.msgpack.Decoder(
    AnyReply | AnyView
)
_state_decoder = msgspec.msgpack.Decoder(LedgerState)


def encode_command(command: AnyCommand | AnyQuery) -> bytes:
    return _encoder.encode(command)


def decode_command(data: bytes) -> AnyCommand | AnyQuery:
    """Raises `msgspec.ValidationError` / `msgspec.DecodeError` on bad input."""
    return _command_decoder.decode(data)


def encode_events(events: list[AnyEvent] | tuple[AnyEvent, ...]) -> bytes:
    return _encoder.encode(events)


def decode_events(data: bytes) -> list[AnyEvent]:
    return _events_decoder.decode(data)


def encode_outcome(outcome: Outcome) -> bytes:
    """The reply sent to a client: the result, or a `Refusal`."""
    reply = outcome.result if isinstance(outcome, Accepted) else outcome.refusal
    return _encoder.encode(reply)


def decode_outcome(data: bytes) -> Outcome:
    reply = _reply_decoder.decode(data)
    if isinstance(reply, Refusal):
        return Rejected(code=reply.code, message=reply.message)
    return Accepted(events=(), result=reply)


def snapshot_bytes(state: LedgerState) -> bytes:
    return _encoder.encode(state)


def _with_exact_odds(data: bytes) -> bytes:
    """A snapshot written before exact odds, its selections' and bet legs'
    odds (hundredths) rewritten as prices. Positions are those of the
    array-encoded `LedgerState`, `Market`, `Selection`, `Bet` and `PlacedLeg`."""
    raw = msgspec.msgpack.decode(data)
    for market in raw[2].values():
        for selection in market[4].values():
            selection[2] = from_hundredths(selection[2])
    for bet in raw[3].values():
        for leg in bet[3]:
            leg[2] = from_hundredths(leg[2])
    return _encoder.encode(raw)


def restore_snapshot(data: bytes) -> LedgerState:
    try:
        state = _state_decoder.decode(data)
    except msgspec.ValidationError:
        state = _state_decoder.decode(_with_exact_odds(data))
    # A snapshot from before markets tracked their worst case decodes it as 0:
    # derive it (replaying the log derives the same value, so replicas agree).
    recompute_max_liability(state, state.markets)
    return state


def state_hash(state: LedgerState) -> str:
    """Hex SHA-256 of the snapshot bytes."""
    return hashlib.sha256(snapshot_bytes(state)).hexdigest()


def snapshot_and_hash(state: LedgerState) -> tuple[bytes, str]:
    """The snapshot bytes and their hash, encoding the state once."""
    data = snapshot_bytes(state)
    return data, hashlib.sha256(data).hexdigest()
