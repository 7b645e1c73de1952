"""Heartbeats: every ironbook process announces itself on NATS once a second.

`ironbook status` and the monitor listen on `ironbook.status.>` and build the
cluster view from what they hear; a process that stops heartbeating is down.
"""

from __future__ import annotations

import msgspec

STATUS_SUBJECT_ALL = "ironbook.status.>"
HEARTBEAT_INTERVAL_MS = 1_000


def replica_status_subject(partition: int, node_id: str) -> str:
    return f"ironbook.status.replica.{partition}.{node_id}"


class ReplicaHeartbeat(msgspec.Struct, frozen=True, tag="replica"):
    node_id: str
    partition: int
    pid: int
    role: str
    term: int
    applied_seq: int
    pending_batches: int
    state_hash: str | None
    hashed_seq: int
    """The log position `state_hash` was computed at."""
    terms_led: int
    last_step_down: str
    at_ms: int
    metrics_url: str = ""
    """Where the replica serves `/metrics` (empty: not served)."""
    loop_block_ms: dict[str, int] = msgspec.field(default_factory=dict)
    """Since the process started: the longest time one piece of work held
    its event loop, per kind (`decide`, `settle_slice`, `encode`, `apply`,
    `snapshot`, and `loop_lag`, the loop's own lateness)."""
    quarantined: int = 0
    """Log entries up to `applied_seq` skipped as foreign (undecodable, or
    not signed by the partition's key)."""


AnyHeartbeat = ReplicaHeartbeat


def replica_admin_subject(node_id: str) -> str:
    """Requests to one replica: answered with a `StateHashReply`."""
    return f"ironbook.admin.replica.{node_id}"


class StateHashReply(msgspec.Struct, frozen=True):
    """A replica's state hash at its applied (for a leader: acknowledged) log
    position; `state_hash` is None while a leader has batches in flight (ask
    again) or before the replica has restored its state."""

    node_id: str
    role: str
    applied_seq: int
    state_hash: str | None


def encode_state_hash_reply(reply: StateHashReply) -> bytes:
    return _encoder.encode(reply)


def decode_state_hash_reply(data: bytes) -> StateHashReply:
    return msgspec.msgpack.decode(data, type=StateHashReply)


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[AnyHeartbeat] = msgspec.msgpack.Decoder(AnyHeartbeat)


def encode_heartbeat(heartbeat: AnyHeartbeat) -> bytes:
    return _encoder.encode(heartbeat)


def decode_heartbeat(data: bytes) -> AnyHeartbeat:
    return _decoder.decode(data)
