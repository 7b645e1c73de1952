"""A checkpoint (a signed tree head): the root of one log's Merkle tree at a size.

The signature (Ed25519) is over these bytes and nothing else:

    b"ironbook checkpoint v1\\x00"      23 bytes, domain separation
    log tag                             4 bytes (`merkle.log_tag`)
    tree_size                           8 bytes, unsigned big-endian
    root                                32 bytes
    time_ms                             8 bytes, unsigned big-endian (Unix ms, signer's clock)
    key_id                              8 bytes
    previous_size                       8 bytes, unsigned big-endian

`previous_size` is the tree size of the signer's previous checkpoint of the
same log (0 for its first): the checkpoints of a log form a chain, so one
removed from the middle of a list of checkpoints is noticed. `key_id` is the
first 8 bytes of SHA-256 over the raw 32-byte Ed25519 public key.

In JSON (one object per line in `checkpoints.jsonl`) hashes are lowercase hex
and the signature is standard base64. Pure: signing and checking signatures
happen where the keys are (`adapters/audit/keys.py`).
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from ironbook.replication.merkle import HASH_BYTES, LogName, log_tag

DOMAIN = b"ironbook checkpoint v1\x00"
KEY_ID_BYTES = 8
SIGNATURE_BYTES = 64


class CheckpointFormatError(ValueError):
    """A checkpoint whose fields are not what the format says."""


def decode_hex(text: str) -> bytes:
    """Lowercase hex only: one value, one spelling (raises ValueError)."""
    value = bytes.fromhex(text)
    if value.hex() != text:
        raise ValueError(f"{text[:16]!r}... is not lowercase hex")
    return value


def decode_b64(text: str) -> bytes:
    """Standard padded base64, canonical only: a changed character never decodes
    to the same bytes (raises ValueError)."""
    try:
        value = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as err:
        raise ValueError(f"not base64: {err}") from err
    if binascii.b2a_base64(value, newline=False) != text.encode():
        raise ValueError("not canonical base64")
    return value


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    partition: LogName
    """A partition number, or `"events"` for the significant-event log."""
    tree_size: int
    root: str
    time_ms: int
    key_id: str
    previous_size: int
    signature: str = ""

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers (raises `CheckpointFormatError`)."""
        try:
            tag = log_tag(self.partition)
            root = decode_hex(self.root)
            key_id = decode_hex(self.key_id)
            sizes = (
                self.tree_size.to_bytes(8, "big"),
                self.time_ms.to_bytes(8, "big"),
                self.previous_size.to_bytes(8, "big"),
            )
        except (ValueError, OverflowError) as err:
            raise CheckpointFormatError(str(err)) from err
        if len(root) != HASH_BYTES or len(key_id) != KEY_ID_BYTES:
            raise CheckpointFormatError("root is 32 bytes and key_id 8, in hex")
        if self.tree_size <= self.previous_size:
            raise CheckpointFormatError(
                f"tree size {self.tree_size} is not past the previous checkpoint's "
                f"{self.previous_size}"
            )
        return DOMAIN + tag + sizes[0] + root + sizes[1] + key_id + sizes[2]

    def signature_bytes(self) -> bytes:
        return decode_signature(self.signature)

    def with_signature(self, signature: bytes) -> Checkpoint:
        assert len(signature) == SIGNATURE_BYTES
        return msgspec.structs.replace(self, signature=base64.b64encode(signature).decode())


def decode_signature(text: str) -> bytes:
    """A signature field: 64 bytes in canonical base64 (raises `CheckpointFormatError`)."""
    try:
        signature = decode_b64(text)
    except ValueError as err:
        raise CheckpointFormatError(f"signature: {err}") from err
    if len(signature) != SIGNATURE_BYTES:
        raise CheckpointFormatError("an Ed25519 signature is 64 bytes")
    return signature


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """One line of `checkpoints.jsonl` (without the newline)."""
    return msgspec.json.encode(checkpoint)


_decoder = msgspec.json.Decoder(Checkpoint)


def decode_checkpoint(line: bytes) -> Checkpoint:
    """Raises `CheckpointFormatError` on anything but a well-formed checkpoint."""
    try:
        checkpoint = _decoder.decode(line)
    except msgspec.DecodeError as err:
        raise CheckpointFormatError(str(err)) from err
    checkpoint.signed_bytes()
    checkpoint.signature_bytes()
    return checkpoint
