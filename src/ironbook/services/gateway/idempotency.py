"""Idempotency-Key: from an HTTP key to a ledger request id, and the 409 rule.

Two stores, two jobs:

* **Exactly once** comes from the ledger alone. The request id of a keyed
  call is a hash of (principal, key): the ledger remembers request id -> first
  reply for 24 h of log time, so a retry, on any worker or machine, gets the
  first reply and changes nothing. The body is *not* part of the request id,
  so even a retry with another body can never execute twice.
* **"Same key, other body -> 409"** needs the first body's fingerprint, which
  the ledger does not keep. The first call with a key *claims* it in a
  replicated JetStream KV bucket (R3, 24 h TTL) with a compare-and-set
  `create(key, fingerprint)`: exactly one claim wins; later calls read the
  claim and compare fingerprints. Losing the bucket would only lose the 409
  (the ledger still answers the first reply), never money.

Calls without a key get a fresh random request id (the response says so);
they skip the claim.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from ironbook.adapters.nats.provision import open_or_create

BUCKET = "IDEMPOTENCY_KEYS"
RETENTION_S = 86_400
MAX_KEY_LENGTH = 128
_CLAIM_ATTEMPTS = 8
_CLAIM_BACKOFF_INITIAL_S = 0.005
_CLAIM_BACKOFF_MAX_S = 0.2


class KeyReused(Exception):
    """The key was first used with another request."""


class ClaimUnavailable(Exception):
    """The claim store could not be reached in time."""


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def keyed_request_id(sub: str, key: str) -> str:
    """Namespaced per principal: two users' keys never collide."""
    digest = hashlib.sha256(f"{sub}\x00{key}".encode()).hexdigest()
    return f"k:{digest[:40]}"


def generated_key() -> str:
    return f"gen-{os.urandom(16).hex()}"


def fingerprint(method: str, route: str, body: object) -> str:
    """Of the request as understood (canonical JSON), not of its bytes: key
    order and whitespace do not make a request different."""
    canonical = json.dumps(
        [method, route, body], sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ClaimStore:
    """Key claims in a JetStream KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int) -> ClaimStore:
        config = KeyValueConfig(bucket=BUCKET, history=1, ttl=RETENTION_S, replicas=replicas)
        kv = await open_or_create(
            f"bucket {BUCKET}", lambda: js.key_value(BUCKET), lambda: js.create_key_value(config)
        )
        return cls(kv)

    async def claim(self, request_id: str, request_fingerprint: str) -> None:
        """Raises `KeyReused` if the key was claimed with another fingerprint."""
        subject_key = request_id.replace(":", "_")
        value = request_fingerprint.encode()
        backoff_s = _CLAIM_BACKOFF_INITIAL_S
        try:
            for _ in range(_CLAIM_ATTEMPTS):
                try:
                    await self._kv.create(subject_key, value)
                    return
                except (
                    nats.js.errors.KeyWrongLastSequenceError,
                    nats.js.errors.KeyNotFoundError,
                ):
                    # Lost the race (a concurrent create can also surface as
                    # "not found"): read the winner's claim.
                    pass
                try:
                    entry = await self._kv.get(subject_key)
                except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                    # Expired between the two calls, or a replica lagging behind
                    # the winning create (reads may be served by any replica).
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, _CLAIM_BACKOFF_MAX_S)
                    continue
                if entry.value == value:
                    return
                raise KeyReused(request_id)
        except nats.errors.Error as err:
            # Timeouts, no responders, an API error, or no response from the
            # bucket's stream while its servers restart: the claim's outcome
            # is not known, and the client may retry with the same key.
            raise ClaimUnavailable(str(err) or type(err).__name__) from err
        raise ClaimUnavailable(f"no settled claim for {request_id}")
