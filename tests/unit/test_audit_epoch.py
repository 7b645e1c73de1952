"""An audit epoch after a DR takeover: site A signed checkpoints past what
site B received; B's chain goes on from the last checkpoint it holds, the
epoch record names the ones given up, and an archive of B's log verifies
with the loss reported. A tampered or misfitting epoch record is refused."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ironbook.adapters.audit.archive import (
    CHECKPOINTS_FILE,
    EPOCHS_FILE,
    entry_line,
    verify_archive,
    write_archive,
)
from ironbook.adapters.audit.keys import epoch_problem, key_id, public_key_pem, sign_epoch
from ironbook.adapters.audit.signer import LogSigner
from ironbook.replication.audit_epoch import (
    EpochMismatch,
    EpochStart,
    chains,
    decode_record,
    encode_epoch,
    epoch_start,
)
from ironbook.replication.checkpoint import Checkpoint, CheckpointFormatError, encode_checkpoint

EVERY = 4
TAKEN_OVER_AT = 6
"""Site A logged 10 entries (checkpoints at 4, 8, 10); site B had copied 6."""


def _payload(site: str, seq: int) -> bytes:
    return f"site {site} batch {seq}".encode()


def _sign(signer: LogSigner, payloads: list[tuple[int, bytes]]) -> list[Checkpoint]:
    signed = [cp for seq, payload in payloads if (cp := signer.add(seq, payload, 1_000 + seq))]
    last = signer.finish(now_ms=2_000)
    return signed + ([last] if last is not None else [])


class Takeover:
    """Site A's log and checkpoints, the epoch, and site B's log after it."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        a_log = [(seq, _payload("a", seq)) for seq in range(1, 11)]
        self.a_checkpoints = _sign(LogSigner(key, 0, every_entries=EVERY), a_log)
        self.epoch = self.start_epoch(self.a_checkpoints)
        self.b_log = a_log[:TAKEN_OVER_AT] + [(seq, _payload("b", seq)) for seq in range(7, 13)]
        b_signer = LogSigner(key, 0, previous=self.epoch.kept, every_entries=EVERY)
        self.b_checkpoints = _sign(b_signer, self.b_log)

    def start_epoch(self, chain: list[Checkpoint], tree_size: int = TAKEN_OVER_AT) -> EpochStart:
        record = epoch_start(
            chain,
            log=0,
            epoch=2,
            site="b",
            tree_size=tree_size,
            origin_size=10,
            time_ms=3_000,
            key_id=key_id(self.key.public_key()),
        )
        return sign_epoch(self.key, record)

    def stream(self) -> list[Checkpoint | EpochStart]:
        """AUDIT_CHECKPOINTS on site B, in order: A's (mirrored), the epoch, B's."""
        return [*self.a_checkpoints, self.epoch, *self.b_checkpoints]

    def archive(self, path: Path) -> Path:
        chain = chains(self.stream())
        write_archive(
            path,
            pubkey_pem=public_key_pem(self.key.public_key()),
            entries=[entry_line(0, seq, payload) for seq, payload in self.b_log],
            checkpoints=chain.checkpoints,
            epochs=chain.epochs,
        )
        return path


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def takeover(key: Ed25519PrivateKey) -> Takeover:
    return Takeover(key)


def test_the_epoch_keeps_the_last_checkpoint_site_b_holds(takeover: Takeover) -> None:
    assert [cp.tree_size for cp in takeover.a_checkpoints] == [4, 8, 10]
    assert takeover.epoch.kept == takeover.a_checkpoints[0]
    assert [cp.tree_size for cp in takeover.epoch.abandoned] == [8, 10]
    assert epoch_problem(takeover.key.public_key(), takeover.epoch) is None
    # Site B's first checkpoint chains to the kept one.
    assert [(cp.previous_size, cp.tree_size) for cp in takeover.b_checkpoints] == [
        (4, 8),
        (8, 12),
    ]


def test_the_chain_read_from_the_stream_drops_only_what_the_epoch_abandons(
    takeover: Takeover,
) -> None:
    read = chains(decode_record(_encoded(record)) for record in takeover.stream())
    assert [(cp.previous_size, cp.tree_size) for cp in read.of(0)] == [(0, 4), (4, 8), (8, 12)]
    assert read.epochs == [takeover.epoch]


def test_an_archive_of_site_b_verifies_and_reports_the_loss(
    takeover: Takeover, tmp_path: Path
) -> None:
    verdict = verify_archive(takeover.archive(tmp_path / "archive"))
    assert verdict.problem is None, verdict.problem
    assert verdict.checkpoints_matched == 3
    assert verdict.warnings == []
    [described] = verdict.epochs
    assert "epoch 2 began on site b at tree size 6" in described
    assert "cover seq 7..10" in described
    assert "seq 7..10 (4 entries)" in described


def test_a_changed_epoch_record_is_refused(takeover: Takeover, tmp_path: Path) -> None:
    archive = takeover.archive(tmp_path / "archive")
    forged = msgspec.structs.replace(takeover.epoch, tree_size=TAKEN_OVER_AT + 1)
    (archive / EPOCHS_FILE).write_bytes(encode_epoch(forged) + b"\n")
    problem = verify_archive(archive).problem
    assert problem is not None and "forged or altered" in problem, problem


def test_an_abandoned_checkpoint_left_in_the_chain_is_refused(
    takeover: Takeover, tmp_path: Path
) -> None:
    archive = takeover.archive(tmp_path / "archive")
    lines = (archive / CHECKPOINTS_FILE).read_bytes().splitlines(keepends=True)
    abandoned = encode_checkpoint(takeover.epoch.abandoned[0]) + b"\n"
    (archive / CHECKPOINTS_FILE).write_bytes(b"".join([lines[0], abandoned, *lines[1:]]))
    problem = verify_archive(archive).problem
    assert problem is not None and "it abandoned is still in" in problem, problem


def test_an_epoch_that_hides_a_checkpoint_does_not_fit_the_chain(takeover: Takeover) -> None:
    # An epoch claiming the log was taken over at 8 keeps the checkpoint at 8,
    # so it cannot abandon it; one that leaves the one at 10 out is refused.
    short = sign_epoch(
        takeover.key,
        msgspec.structs.replace(takeover.epoch, abandoned=takeover.epoch.abandoned[:1]),
    )
    with pytest.raises(EpochMismatch, match="abandons"):
        chains([*takeover.a_checkpoints, short])


def test_an_epoch_whose_kept_checkpoint_is_not_in_the_chain(takeover: Takeover) -> None:
    with pytest.raises(EpochMismatch, match="kept"):
        chains([*takeover.a_checkpoints[1:], takeover.epoch])


def test_an_epoch_record_must_be_consistent_before_it_is_signed(takeover: Takeover) -> None:
    # Abandoning a checkpoint at or below the takeover size is malformed.
    with pytest.raises(CheckpointFormatError, match="abandoned"):
        msgspec.structs.replace(takeover.epoch, tree_size=8).signed_bytes()
    with pytest.raises(CheckpointFormatError, match="epoch 2"):
        msgspec.structs.replace(takeover.epoch, epoch=1).signed_bytes()


def test_a_new_epoch_with_nothing_lost(takeover: Takeover) -> None:
    record = takeover.start_epoch(takeover.a_checkpoints, tree_size=10)
    assert record.kept == takeover.a_checkpoints[-1] and record.abandoned == []
    assert "lost" not in record.describe()


def _encoded(record: Checkpoint | EpochStart) -> bytes:
    if isinstance(record, EpochStart):
        return encode_epoch(record)
    return encode_checkpoint(record)


def test_a_log_s_epochs_only_grow(takeover: Takeover) -> None:
    again = sign_epoch(
        takeover.key,
        epoch_start(
            [takeover.epoch.kept, *takeover.b_checkpoints],  # type: ignore[list-item]
            log=0,
            epoch=2,
            site="a",
            tree_size=12,
            origin_size=0,
            time_ms=4_000,
            key_id=key_id(takeover.key.public_key()),
        ),
    )
    with pytest.raises(EpochMismatch, match="only grow"):
        chains([*takeover.stream(), again])
    later = sign_epoch(takeover.key, msgspec.structs.replace(again, epoch=3, signature=""))
    assert chains([*takeover.stream(), later]).epochs == [takeover.epoch, later]
