"""Batch signatures in the simulator: HMAC-SHA256 under a key only the
simulated replicas hold. The protocol sees the same `Signer`/`Verifier` ports
as with the replicas' Ed25519 keys (`adapters.ledger_keys`); a forged entry
without the key fails verification the same way."""

from __future__ import annotations

import hashlib
import hmac


class MacSigner:
    """Signs and verifies (implements `Signer` and `Verifier`)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def verify(self, message: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(self.sign(message), signature)
