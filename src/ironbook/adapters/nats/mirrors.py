"""JetStream mirrors of another site's streams: made, watched, promoted, and
the origin's streams sealed (docs/dr.md).

A mirror copies its origin stream message by message with the same sequence
numbers, through the origin domain's API prefix (`$JS.<domain>.API`) over a
leafnode link. It has no subjects of its own (nobody can publish into it); the
origin's subjects are kept in its metadata so that promotion, a stream update
that drops `mirror` and puts the subjects back (nats-server >= 2.12), makes it
the same stream the origin was, writable from the next sequence on.

These are plain JetStream API requests with JSON bodies: the whole stream
config goes through unchanged, whatever fields the server adds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from ironbook.adapters.nats.provision import ERR_NO_SUITABLE_PEERS, request

SUBJECTS_METADATA = "ironbook_dr_subjects"
"""Mirror metadata: the origin's subjects (a JSON list), for promotion."""
ORIGIN_METADATA = "ironbook_dr_origin"
"""Mirror metadata: the origin's domain."""
API_TIMEOUT_S = 2.0
ERR_STREAM_NOT_FOUND = 10059
PLACEMENT_RETRY_S = 0.2
STARTING_ATTEMPTS = 15
"""Tries of a request that changes a stream (2 s each): a cluster that has
just started needs seconds before every stream answers."""
_NOT_ON_A_MIRROR = ("subjects", "sources", "first_seq", "subject_transform", "republish")
"""Stream config fields a mirror may not have (the server refuses them)."""


class MirrorError(RuntimeError):
    """A JetStream API request about a mirror failed (the server's error)."""


class StreamMissing(MirrorError):
    """The stream does not exist (JetStream error 10059)."""


@dataclass(frozen=True, slots=True)
class MirrorState:
    """One stream as one site sees it: its last sequence and, for a mirror,
    how far behind its origin it is and how long since it heard from it."""

    stream: str
    last_seq: int
    is_mirror: bool
    sealed: bool
    messages: int = 0
    lag_entries: int | None = None
    active_s: float | None = None
    """Seconds since the mirror last heard from its origin (None: never)."""


async def api(
    nc: NatsClient,
    subject: str,
    body: Mapping[str, Any] | None = None,
    *,
    prefix: str = "$JS.API",
    attempts: int = 1,
) -> dict[str, Any]:
    """One JetStream API request (`<prefix>.<subject>`); its error as
    `MirrorError`. Unanswered requests are sent again, up to `attempts` in
    all: after a whole cluster restarts, a stream answers nothing until its
    group has elected a leader."""
    payload = b"" if body is None else json.dumps(body).encode()
    for attempt in range(1, attempts + 1):
        try:
            reply = await request(nc, f"{prefix}.{subject}", payload, timeout_s=API_TIMEOUT_S)
            break
        except (nats.errors.Error, OSError) as err:
            if attempt == attempts:
                raise MirrorError(f"{prefix}.{subject}: {err!r}") from err
    else:
        raise AssertionError("unreachable")
    answer: dict[str, Any] = json.loads(reply.data)
    error = answer.get("error")
    if error:
        if error.get("err_code") == ERR_STREAM_NOT_FOUND:
            raise StreamMissing(f"{subject}: {error.get('description')}")
        raise MirrorError(
            f"{subject}: {error.get('description')} (err_code {error.get('err_code')})"
        )
    return answer


def mirror_config(origin: Mapping[str, Any], domain: str) -> dict[str, Any]:
    """The config of a mirror of the stream whose config is `origin`, in
    JetStream domain `domain`: the same limits, replicas and storage, no
    subjects, and the origin's subjects in its metadata."""
    config = {key: value for key, value in origin.items() if key not in _NOT_ON_A_MIRROR}
    config["mirror"] = {
        "name": origin["name"],
        "external": {"api": f"$JS.{domain}.API", "deliver": ""},
    }
    config["metadata"] = {
        **{
            key: value
            for key, value in (origin.get("metadata") or {}).items()
            if not key.startswith("_nats")
        },
        SUBJECTS_METADATA: json.dumps(list(origin.get("subjects") or [])),
        ORIGIN_METADATA: domain,
    }
    config["sealed"] = False
    return config


def promoted_config(mirror: Mapping[str, Any]) -> dict[str, Any]:
    """The config that turns a mirror into a writable stream with its
    origin's subjects (the mirror's metadata names them)."""
    metadata = dict(mirror.get("metadata") or {})
    if SUBJECTS_METADATA not in metadata:
        raise MirrorError(f"{mirror.get('name')}: not a mirror made by ironbook (no subjects kept)")
    subjects = json.loads(metadata.pop(SUBJECTS_METADATA))
    metadata.pop(ORIGIN_METADATA, None)
    config = {key: value for key, value in mirror.items() if key != "mirror"}
    config["subjects"] = subjects
    config["metadata"] = {
        key: value for key, value in metadata.items() if not key.startswith("_nats")
    }
    return config


def mirror_state(info: Mapping[str, Any]) -> MirrorState:
    """What a `STREAM.INFO` answer (or a `/jsz` stream detail) says about a stream."""
    config = info.get("config") or {}
    state = info.get("state") or {}
    mirror = info.get("mirror")
    lag = active = None
    if isinstance(mirror, Mapping):
        if mirror.get("lag") is not None:
            lag = int(mirror["lag"])
        # Nanoseconds since it last heard from the origin; -1 (or absent): never.
        if mirror.get("active") is not None and int(mirror["active"]) >= 0:
            active = int(mirror["active"]) / 1e9
    return MirrorState(
        stream=str(config.get("name") or info.get("name") or ""),
        last_seq=int(state.get("last_seq", 0)),
        is_mirror=isinstance(mirror, Mapping) or "mirror" in config,
        sealed=bool(config.get("sealed", False)),
        messages=int(state.get("messages", 0)),
        lag_entries=lag,
        active_s=active,
    )


async def stream_info(nc: NatsClient, stream: str, *, attempts: int = 1) -> dict[str, Any]:
    return await api(nc, f"STREAM.INFO.{stream}", attempts=attempts)


async def ensure_mirror(
    origin: NatsClient, local: NatsClient, stream: str, domain: str, *, attempts: int = 20
) -> bool:
    """A mirror of `origin`'s `stream` in `local`'s cluster; True when made
    now, False when a stream of that name is there already (a mirror made
    before, or one promoted: never touched)."""
    try:
        await stream_info(local, stream, attempts=STARTING_ATTEMPTS)
        return False
    except StreamMissing:
        pass
    origin_info = await stream_info(origin, stream, attempts=STARTING_ATTEMPTS)
    config = mirror_config(origin_info["config"], domain)
    for attempt in range(1, attempts + 1):
        try:
            await api(local, f"STREAM.CREATE.{stream}", config)
            return True
        except MirrorError as err:
            if attempt == attempts or str(ERR_NO_SUITABLE_PEERS) not in str(err):
                raise
        await asyncio.sleep(PLACEMENT_RETRY_S)
    raise AssertionError("unreachable")


async def promote_mirror(nc: NatsClient, stream: str) -> bool:
    """Make the mirror `stream` a writable stream; False if it is one already."""
    info = await stream_info(nc, stream, attempts=STARTING_ATTEMPTS)
    config = info["config"]
    if "mirror" not in config or not config["mirror"]:
        return False
    await api(nc, f"STREAM.UPDATE.{stream}", promoted_config(config), attempts=STARTING_ATTEMPTS)
    return True


async def seal(nc: NatsClient, stream: str) -> bool:
    """Seal `stream` (no write, delete or purge, ever again); False if it
    was. A mirror is refused (`MirrorError`): it is the other site's standby,
    not a stream that was written to."""
    config = dict((await stream_info(nc, stream, attempts=STARTING_ATTEMPTS))["config"])
    if config.get("sealed"):
        return False
    if config.get("mirror"):
        raise MirrorError(f"{stream}: a mirror is not sealed")
    config["sealed"] = True
    await api(nc, f"STREAM.UPDATE.{stream}", config, attempts=STARTING_ATTEMPTS)
    return True


async def delete(nc: NatsClient, stream: str) -> bool:
    """Delete `stream` (sealed or not); False if there is none."""
    try:
        await api(nc, f"STREAM.DELETE.{stream}", attempts=STARTING_ATTEMPTS)
    except StreamMissing:
        return False
    return True


async def states(nc: NatsClient, streams: Sequence[str]) -> dict[str, MirrorState | None]:
    """Each stream's state on `nc`'s cluster (None: missing or unreachable)."""
    found: dict[str, MirrorState | None] = {}
    for stream in streams:
        try:
            found[stream] = mirror_state(await stream_info(nc, stream))
        except MirrorError:
            found[stream] = None
    return found
