"""`verify_archive` passes an untouched archive and names the first bad
position of every kind of tampering."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ironbook.adapters.audit.archive import (
    CHECKPOINTS_FILE,
    ENTRIES_FILE,
    FRONTIER_FILE,
    entry_line,
    frontier_line,
    verify_archive,
    write_archive,
)
from ironbook.adapters.audit.keys import PUBKEY_FILE, public_key_pem
from ironbook.adapters.audit.signer import HistoryRewritten, LogSigner
from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.merkle import Frontier, leaf_hash, log_tag

ENTRIES = 10
EVERY = 4  # checkpoints at tree sizes 4, 8 and 10


def _payload(seq: int) -> bytes:
    return f"batch {seq}: bet on horse {seq % 7}".encode()


def _sign(key: Ed25519PrivateKey, payloads: list[bytes], every: int = EVERY) -> list[Checkpoint]:
    signer = LogSigner(key, 0, every_entries=every)
    checkpoints = []
    for seq, payload in enumerate(payloads, 1):
        checkpoint = signer.add(seq, payload, now_ms=1_000 + seq)
        if checkpoint is not None:
            checkpoints.append(checkpoint)
    last = signer.finish(now_ms=2_000)
    if last is not None:
        checkpoints.append(last)
    return checkpoints


def _archive(path: Path, key: Ed25519PrivateKey, entries: int = ENTRIES) -> Path:
    payloads = [_payload(seq) for seq in range(1, entries + 1)]
    write_archive(
        path,
        pubkey_pem=public_key_pem(key.public_key()),
        entries=[entry_line(0, seq, payload) for seq, payload in enumerate(payloads, 1)],
        checkpoints=_sign(key, payloads),
    )
    return path


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def archive(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    return _archive(tmp_path / "archive", key)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _edit(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    path.write_bytes(b"".join(change(_lines(path))))


def _line(seq: int, payload: bytes) -> bytes:
    return msgspec.json.encode(entry_line(0, seq, payload)) + b"\n"


def _problem(archive: Path) -> str:
    verdict = verify_archive(archive)
    assert verdict.problem is not None
    return verdict.problem


def test_an_untouched_archive_passes(archive: Path) -> None:
    verdict = verify_archive(archive)
    assert verdict.problem is None
    assert verdict.warnings == []
    assert (verdict.entries, verdict.checkpoints_matched) == (ENTRIES, 3)
    assert verdict.passed(strict=True)


def test_a_changed_payload_names_the_checkpointed_range(archive: Path) -> None:
    _edit(archive / ENTRIES_FILE, lambda lines: [*lines[:5], _line(6, b"a bigger bet"), *lines[6:]])
    problem = _problem(archive)
    assert "lines 5..8" in problem
    assert "seq 5..8" in problem
    assert "tree size 8" in problem


def test_every_changed_byte_of_the_entries_fails(archive: Path) -> None:
    original = (archive / ENTRIES_FILE).read_bytes()
    for position in range(len(original)):
        changed = bytearray(original)
        changed[position] ^= 0x01
        (archive / ENTRIES_FILE).write_bytes(bytes(changed))
        assert verify_archive(archive).problem is not None, (position, bytes(changed))


def test_every_changed_byte_of_the_checkpoints_fails(archive: Path) -> None:
    original = (archive / CHECKPOINTS_FILE).read_bytes()
    for position in range(len(original)):
        changed = bytearray(original)
        changed[position] ^= 0x01
        (archive / CHECKPOINTS_FILE).write_bytes(bytes(changed))
        assert verify_archive(archive).problem is not None, (position, bytes(changed))


def test_a_deleted_entry(archive: Path) -> None:
    _edit(archive / ENTRIES_FILE, lambda lines: [*lines[:5], *lines[6:]])
    assert "line 6 (partition 0): expected seq 6, found seq 7" in _problem(archive)


def test_an_inserted_entry(archive: Path) -> None:
    _edit(archive / ENTRIES_FILE, lambda lines: [*lines[:5], _line(6, b"forged"), *lines[5:]])
    assert "line 7 (partition 0): expected seq 7, found seq 6 again" in _problem(archive)


def test_an_inserted_entry_with_the_rest_renumbered(archive: Path) -> None:
    payloads = [_payload(seq) for seq in range(1, 6)] + [b"forged"]
    payloads += [_payload(seq) for seq in range(6, ENTRIES + 1)]
    _edit(
        archive / ENTRIES_FILE,
        lambda _: [_line(seq, payload) for seq, payload in enumerate(payloads, 1)],
    )
    assert "seq 5..8" in _problem(archive)


def test_reordered_entries(archive: Path) -> None:
    _edit(archive / ENTRIES_FILE, lambda lines: [*lines[:5], lines[6], lines[5], *lines[7:]])
    assert "line 6 (partition 0): expected seq 6, found seq 7" in _problem(archive)


def test_reordered_payloads_with_the_sequences_kept(archive: Path) -> None:
    _edit(
        archive / ENTRIES_FILE,
        lambda lines: [*lines[:5], _line(6, _payload(7)), _line(7, _payload(6)), *lines[7:]],
    )
    assert "seq 5..8" in _problem(archive)


def test_a_duplicated_entry(archive: Path) -> None:
    _edit(archive / ENTRIES_FILE, lambda lines: [*lines[:6], lines[5], *lines[6:]])
    assert "line 7 (partition 0): expected seq 7, found seq 6 again" in _problem(archive)


def test_a_truncation_covered_by_a_checkpoint(archive: Path) -> None:
    _edit(archive / ENTRIES_FILE, lambda lines: lines[:9])
    problem = _problem(archive)
    assert "ends at seq 9" in problem
    assert "tree size 10" in problem


def test_everything_deleted_is_a_truncation(archive: Path) -> None:
    (archive / ENTRIES_FILE).write_bytes(b"")
    assert "ends at seq 0" in _problem(archive)


def test_a_forged_checkpoint_signature(archive: Path, key: Ed25519PrivateKey) -> None:
    def forge(lines: list[bytes]) -> list[bytes]:
        checkpoint = json.loads(lines[1])
        checkpoint["root"] = "00" * 32
        return [lines[0], json.dumps(checkpoint).encode() + b"\n", *lines[2:]]

    _edit(archive / CHECKPOINTS_FILE, forge)
    problem = _problem(archive)
    assert "checkpoints.jsonl line 2 (partition 0, tree size 8)" in problem
    assert "signature does not match" in problem


def test_checkpoints_from_another_key(archive: Path, tmp_path: Path) -> None:
    other = _archive(tmp_path / "other", Ed25519PrivateKey.generate())
    (archive / CHECKPOINTS_FILE).write_bytes((other / CHECKPOINTS_FILE).read_bytes())
    problem = _problem(archive)
    assert "checkpoints.jsonl line 1 (partition 0, tree size 4): signed by another key" in problem


def test_an_archive_resigned_with_another_key_fails_against_the_published_key(
    archive: Path, tmp_path: Path
) -> None:
    published = tmp_path / "published-pubkey"
    published.write_bytes((archive / PUBKEY_FILE).read_bytes())
    other = _archive(tmp_path / "other", Ed25519PrivateKey.generate())
    for name in (CHECKPOINTS_FILE, PUBKEY_FILE):
        (archive / name).write_bytes((other / name).read_bytes())
    assert verify_archive(archive).problem is None  # self-consistent ...
    problem = verify_archive(archive, pubkey=published).problem  # ... but not ours
    assert problem is not None
    assert "another key" in problem


def test_a_missing_checkpoint(archive: Path) -> None:
    _edit(archive / CHECKPOINTS_FILE, lambda lines: [lines[0], lines[2]])
    problem = _problem(archive)
    assert "checkpoints.jsonl line 2 (partition 0, tree size 10)" in problem
    assert "a checkpoint is missing" in problem


def test_an_entry_set_no_checkpoint_matches(archive: Path) -> None:
    _edit(
        archive / ENTRIES_FILE,
        lambda _: [_line(seq, b"another history %d" % seq) for seq in range(1, ENTRIES + 1)],
    )
    problem = _problem(archive)
    assert "lines 1..4" in problem
    assert "seq 1..4" in problem


def test_entries_past_the_last_checkpoint_are_not_yet_checkpointed(archive: Path) -> None:
    _edit(archive / ENTRIES_FILE, lambda lines: [*lines, _line(11, b"x"), _line(12, b"y")])
    verdict = verify_archive(archive)
    assert verdict.problem is None
    assert verdict.warnings == [
        "partition 0: seq 11..12 (entries.jsonl lines 11..) not yet checkpointed"
    ]
    assert verdict.passed(strict=False)
    assert not verdict.passed(strict=True)


def test_an_archive_starting_mid_log_carries_its_frontier(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    payloads = [_payload(seq) for seq in range(1, ENTRIES + 1)]
    checkpoints = _sign(key, payloads)
    frontier = Frontier()
    for seq in range(1, 6):
        frontier.append(leaf_hash(log_tag(0), seq, payloads[seq - 1]))
    archive = tmp_path / "tail"
    write_archive(
        archive,
        pubkey_pem=public_key_pem(key.public_key()),
        entries=[entry_line(0, seq, payloads[seq - 1]) for seq in range(6, ENTRIES + 1)],
        checkpoints=[cp for cp in checkpoints if cp.tree_size >= 5],
        frontiers=[frontier_line(0, frontier)],
    )
    verdict = verify_archive(archive)
    assert verdict.problem is None
    assert verdict.warnings == []
    assert verdict.checkpoints_matched == 2

    def forge(lines: list[bytes]) -> list[bytes]:
        line = json.loads(lines[0])
        line["nodes"][-1] = "11" * 32
        return [json.dumps(line).encode() + b"\n"]

    _edit(archive / FRONTIER_FILE, forge)
    assert "seq 6..8" in _problem(archive)


def test_the_signer_refuses_a_log_that_no_longer_matches(key: Ed25519PrivateKey) -> None:
    payloads = [_payload(seq) for seq in range(1, ENTRIES + 1)]
    last = _sign(key, payloads)[-1]
    rewritten = LogSigner(key, 0, previous=last)
    for seq in range(1, ENTRIES):
        assert rewritten.add(seq, payloads[seq - 1], now_ms=3_000) is None
    with pytest.raises(HistoryRewritten, match="no longer match"):
        rewritten.add(ENTRIES, b"another ending", now_ms=3_000)
    shortened = LogSigner(key, 0, previous=last)
    shortened.add(1, payloads[0], now_ms=3_000)
    with pytest.raises(HistoryRewritten, match="ends at seq 1"):
        shortened.finish(now_ms=3_000)
    extended = LogSigner(key, 0, previous=last)
    for seq, payload in enumerate([*payloads, b"next"], 1):
        extended.add(seq, payload, now_ms=3_000)
    checkpoint = extended.finish(now_ms=3_000)
    assert checkpoint is not None
    assert (checkpoint.previous_size, checkpoint.tree_size) == (ENTRIES, ENTRIES + 1)


@pytest.mark.parametrize(
    "line",
    [
        b'{"partition":0,"seq":18446744073709551616,"payload_b64":"eA=="}',
        b'{"partition":0,"seq":0,"payload_b64":"eA=="}',
        b'{"partition":4294967295,"seq":11,"payload_b64":"eA=="}',
        b'{"partition":"ledger","seq":11,"payload_b64":"eA=="}',
        b'{"partition":0,"seq":11,"payload_b64":"eA=","extra":1}',
        b'{"partition":0,"seq":11}',
        b"[]",
        b"\xff\xfe",
    ],
)
def test_a_malformed_entry_is_named_not_a_crash(archive: Path, line: bytes) -> None:
    _edit(archive / ENTRIES_FILE, lambda lines: [*lines, line + b"\n"])
    assert _problem(archive).startswith("entries.jsonl line 11: ")


def test_several_logs_in_one_archive_each_with_their_own_tree(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    logs: dict[int | str, list[bytes]] = {
        0: [_payload(seq) for seq in range(1, 8)],
        3: [b"p3 %d" % seq for seq in range(1, 6)],
        "events": [b"leader change %d" % seq for seq in range(1, 4)],
    }
    checkpoints = []
    for log, payloads in logs.items():
        signer = LogSigner(key, log, every_entries=2)
        checkpoints += [
            cp for seq, p in enumerate(payloads, 1) if (cp := signer.add(seq, p, 1)) is not None
        ]
        last = signer.finish(2)
        assert last is not None
        checkpoints.append(last)
    interleaved = [
        entry_line(log, seq, payloads[seq - 1])
        for seq in range(1, 8)
        for log, payloads in logs.items()
        if seq <= len(payloads)
    ]
    archive = tmp_path / "logs"
    write_archive(
        archive,
        pubkey_pem=public_key_pem(key.public_key()),
        entries=interleaved,
        checkpoints=checkpoints,
    )
    verdict = verify_archive(archive)
    assert verdict.problem is None
    assert (verdict.entries, verdict.checkpoints_matched) == (15, 4 + 3 + 2)
    # An entry copied from another log into the same position does not match.
    moved = [
        entry_line("events", 1, logs[3][0]) if (line.partition, line.seq) == ("events", 1) else line
        for line in interleaved
    ]
    write_archive(
        archive,
        pubkey_pem=public_key_pem(key.public_key()),
        entries=moved,
        checkpoints=checkpoints,
    )
    assert "partition events, seq 1..2" in _problem(archive)
