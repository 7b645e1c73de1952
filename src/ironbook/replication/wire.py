"""What the leader sends back on the command transport.

A request gets exactly one of: the ledger's outcome (accepted or rejected, and
durable), "retry" (nothing was decided durably; send the same request id
again, perhaps to another replica), or "bad request" (the command could not
be decoded; retrying will not help).
"""

from __future__ import annotations

from typing import Literal

import msgspec

RetryReason = Literal["aborted", "overloaded"]
"""`aborted`: the leader stepped down before the command's batch was
acknowledged, or (for a read, refusal or repeat) could not show it still held
its lease; kept as one reason so that older clients decode it.
`overloaded`: the leader's inbox was full (the transport answers at once
rather than queue without bound)."""


class OutcomeReply(msgspec.Struct, frozen=True, tag="outcome"):
    """The durable outcome: `core.encode_outcome(outcome)`."""

    outcome: bytes


class RetryReply(msgspec.Struct, frozen=True, tag="retry"):
    """The command was not acknowledged by the log; retry with the same id."""

    reason: RetryReason


class BadRequestReply(msgspec.Struct, frozen=True, tag="bad_request"):
    message: str


CommandReply = OutcomeReply | RetryReply | BadRequestReply

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[CommandReply] = msgspec.msgpack.Decoder(CommandReply)


def encode_reply(reply: CommandReply) -> bytes:
    return _encoder.encode(reply)


def decode_reply(payload: bytes) -> CommandReply:
    """Raises `msgspec.DecodeError` (or `ValidationError`) on a malformed reply."""
    return _decoder.decode(payload)
