"""The fold rule on entries nobody should have written: undecodable ones,
forged ones chained onto the real tip, signed payloads moved elsewhere, and
unsigned ones once the chain is signed. Each is quarantined (counted, never
applied, never raised), and the chain carries on from the last applied
entry."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ironbook import core
from ironbook.adapters.keyfiles import create_secret_file_once
from ironbook.adapters.ledger_keys import (
    LEDGER_KEY_FILE,
    LEDGER_PUBKEY_FILE,
    PartitionSigner,
    ledger_signing_key,
    ledger_verifier,
)
from ironbook.core import acting, issued
from ironbook.replication.batch import (
    ReplayState,
    admit,
    encode_batch,
    encode_signed_batch,
    signed_batch_id,
)
from ironbook.replication.interfaces import LogEntry
from ironbook.replication.point_in_time import entry_time_ms

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


KEY = Ed25519PrivateKey.generate()
SIGNER = PartitionSigner(KEY, 0)


class _Log:
    """Entries as a leader writes them, plus whatever else lands."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.state = core.new_state()
        self.tip = ""
        self._n = 0

    def command(self, command: core.AnyCommand) -> None:
        outcome = core.decide(self.state, issued(command, PEOPLE), len(self.entries) + 1)
        for event in outcome.events:
            core.apply(self.state, event)
        self._n += 1
        batch_id = signed_batch_id(1, self._n)
        events = core.encode_events(list(outcome.events))
        self.land(encode_signed_batch(SIGNER, batch_id, self.tip, events), batch_id)
        self.tip = batch_id

    def land(self, payload: bytes, batch_id: str) -> LogEntry:
        entry = LogEntry(len(self.entries) + 1, batch_id, payload)
        self.entries.append(entry)
        return entry


def _fold(entries: list[LogEntry], verifier: PartitionSigner | None = SIGNER) -> ReplayState:
    replay = ReplayState.empty(verifier=verifier)
    for entry in entries:
        replay.apply(entry)
    return replay


def _funded_log() -> _Log:
    log = _Log()
    log.command(core.OpenAccount(request_id="open", account_id="alice"))
    log.command(
        core.Deposit(request_id="dep", account_id="alice", amount_minor=500, reason="test top-up")
    )
    return log


def _last_events(log: _Log) -> bytes:
    record = msgspec.msgpack.decode(log.entries[-1].payload)
    return bytes(record[2])


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",
        random.Random(64).randbytes(64),  # seeded: xdist workers must collect the same ids
        msgspec.msgpack.encode(["batch/2", "x"]),
        msgspec.msgpack.encode(["batch/9", "", b"", b""]),
        msgspec.msgpack.encode(["batch/2", "", b"not events", b"sig"]),
        msgspec.msgpack.encode({"prev_batch_id": "", "events": b""}),
    ],
)
def test_an_undecodable_entry_is_quarantined_and_the_chain_carries_on(payload: bytes) -> None:
    log = _funded_log()
    log.land(payload, "junk")
    log.command(
        core.Deposit(request_id="dep-2", account_id="alice", amount_minor=7, reason="test top-up")
    )
    replay = _fold(log.entries)
    assert replay.quarantined == 1
    assert replay.state.accounts["alice"].balance_minor == 507
    assert core.state_hash(replay.state) == core.state_hash(log.state)


def test_a_forged_batch_chained_onto_the_tip_changes_no_balance() -> None:
    log = _funded_log()
    before = core.state_hash(log.state)
    forger = PartitionSigner(Ed25519PrivateKey.generate(), 0)
    # The last deposit's events again, as a well-formed batch on the real tip.
    log.land(encode_signed_batch(forger, "s9:1", log.tip, _last_events(log)), "s9:1")
    replay = _fold(log.entries)
    assert replay.quarantined == 1
    assert replay.state.accounts["alice"].balance_minor == 500
    assert core.state_hash(replay.state) == before
    # Without the signature check the forgery would have paid twice.
    assert _fold(log.entries, verifier=None).state.accounts["alice"].balance_minor == 1_000


def test_a_signed_payload_under_another_id_or_partition_is_foreign() -> None:
    log = _funded_log()
    genuine = log.entries[-1]
    moved = LogEntry(3, "s1:99", genuine.payload)
    assert admit(moved, log.tip, SIGNER).admission == "quarantined"
    other_partition = PartitionSigner(KEY, 1)
    on_p1 = encode_signed_batch(other_partition, "s1:3", log.tip, _last_events(log))
    assert admit(LogEntry(3, "s1:3", on_p1), log.tip, SIGNER).admission == "quarantined"
    on_p0 = encode_signed_batch(SIGNER, "s1:3", log.tip, _last_events(log))
    assert admit(LogEntry(3, "s1:3", on_p0), log.tip, SIGNER).admission == "applied"


def test_a_legacy_unsigned_log_replays_until_the_first_signed_batch() -> None:
    state = core.new_state()
    entries: list[LogEntry] = []
    prev = ""
    for n, command in enumerate(
        [
            core.OpenAccount(request_id="open", account_id="alice"),
            core.Deposit(
                request_id="dep", account_id="alice", amount_minor=300, reason="test top-up"
            ),
        ],
        start=1,
    ):
        outcome = core.decide(state, issued(command, PEOPLE), n)
        for event in outcome.events:
            core.apply(state, event)
        entries.append(LogEntry(n, f"1:{n}", encode_batch(prev, list(outcome.events))))
        prev = f"1:{n}"
    deposit = core.Deposit(
        request_id="dep-2", account_id="alice", amount_minor=5, reason="test top-up"
    )
    signed_events = core.encode_events(list(core.decide(state, issued(deposit, PEOPLE), 3).events))
    entries.append(LogEntry(3, "s2:1", encode_signed_batch(SIGNER, "s2:1", prev, signed_events)))
    # An unsigned batch on the signed chain, chained onto its tip.
    entries.append(LogEntry(4, "1:3", encode_batch("s2:1", core.decode_events(signed_events))))
    replay = _fold(entries)
    assert replay.quarantined == 1
    assert replay.voided == 0
    assert replay.state.accounts["alice"].balance_minor == 305
    assert replay.last_batch_id == "s2:1"


def test_a_void_entry_is_not_counted_as_quarantined() -> None:
    log = _funded_log()
    stale = encode_signed_batch(SIGNER, "s1:77", "s1:1", _last_events(log))
    log.land(stale, "s1:77")
    replay = _fold(log.entries)
    assert (replay.voided, replay.quarantined) == (1, 0)


def test_the_quarantine_hook_hears_every_quarantined_entry() -> None:
    log = _funded_log()
    log.land(b"junk", "x-1")
    log.land(b"more junk", "x-2")
    heard: list[tuple[int, str]] = []
    replay = ReplayState.empty(
        verifier=SIGNER, on_quarantine=lambda entry, reason: heard.append((entry.seq, reason))
    )
    for entry in log.entries:
        replay.apply(entry)
    assert [seq for seq, _ in heard] == [3, 4]
    assert all("undecodable" in reason for _, reason in heard)


def test_the_ledger_key_is_owner_only_and_its_public_half_verifies(tmp_path: Path) -> None:
    key = ledger_signing_key(tmp_path)
    assert ledger_signing_key(tmp_path).public_key() == key.public_key()
    for path in (tmp_path / LEDGER_KEY_FILE, tmp_path / LEDGER_PUBKEY_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / LEDGER_KEY_FILE).parent.stat().st_mode) == 0o700
    signer = PartitionSigner(key, 2)
    message = b"a batch"
    assert ledger_verifier(tmp_path, 2).verify(message, signer.sign(message))
    assert not ledger_verifier(tmp_path, 3).verify(message, signer.sign(message))


def test_a_secret_file_is_written_once(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "x"
    create_secret_file_once(path, b"first")
    create_secret_file_once(path, b"second")
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]


def test_an_undecodable_entry_has_no_point_in_time() -> None:
    log = _funded_log()
    junk = log.land(b"\xc1junk", "junk")
    assert entry_time_ms(junk) is None
    assert entry_time_ms(log.entries[0]) is not None
