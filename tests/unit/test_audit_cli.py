"""`ironbook audit verify`, `receipt --archive` and `verify-receipt`: exit codes
and what they print, on archives (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ironbook.adapters.audit.archive import ENTRIES_FILE, entry_line, write_archive
from ironbook.adapters.audit.keys import PUBKEY_FILE, public_key_pem
from ironbook.adapters.audit.signer import LogSigner
from ironbook.cli import main


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    payloads = [f"batch {seq}".encode() for seq in range(1, 21)]
    signer = LogSigner(key, 0, every_entries=8)
    checkpoints = [
        cp for seq, p in enumerate(payloads, 1) if (cp := signer.add(seq, p, 1_000)) is not None
    ]
    last = signer.finish(2_000)
    assert last is not None
    out = tmp_path / "archive"
    write_archive(
        out,
        pubkey_pem=public_key_pem(key.public_key()),
        entries=[entry_line(0, seq, p) for seq, p in enumerate(payloads, 1)],
        checkpoints=[*checkpoints, last],
    )
    return out


def test_verify_exits_0_when_intact_and_1_naming_the_position(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(archive), "--strict"]) == 0
    assert "20 entries, 3 checkpoints matched: intact" in capsys.readouterr().out
    lines = (archive / ENTRIES_FILE).read_bytes().splitlines(keepends=True)
    (archive / ENTRIES_FILE).write_bytes(b"".join(lines[:11] + lines[12:]))
    assert main(["audit", "verify", str(archive)]) == 1
    assert "FAILED: entries.jsonl line 12 (partition 0): expected seq 12" in capsys.readouterr().out


def test_not_yet_checkpointed_entries_fail_only_under_strict(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (archive / ENTRIES_FILE).open("ab") as handle:
        handle.write(b'{"partition":0,"seq":21,"payload_b64":"eA=="}\n')
    assert main(["audit", "verify", str(archive)]) == 0
    assert "warning: partition 0: seq 21..21" in capsys.readouterr().out
    assert main(["audit", "verify", str(archive), "--strict"]) == 1


def test_a_receipt_from_an_archive_verifies_and_a_changed_byte_does_not(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt = tmp_path / "receipt.json"
    assert main(["audit", "receipt", "--archive", str(archive), "--partition", "0", "--seq", "11",
                 "--out", str(receipt)]) == 0  # fmt: skip
    pubkey = str(archive / PUBKEY_FILE)
    assert main(["audit", "verify-receipt", str(receipt), "--pubkey", pubkey]) == 0
    document = bytearray(receipt.read_bytes())
    document[document.index(b'"seq":11') + 7] = ord("2")
    receipt.write_bytes(bytes(document))
    capsys.readouterr()
    assert main(["audit", "verify-receipt", str(receipt), "--pubkey", pubkey]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_commands_that_cannot_run_exit_2(tmp_path: Path) -> None:
    assert main(["audit", "verify", str(tmp_path / "missing")]) == 2
    assert main(["audit", "export", "--data-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 2
    assert main(["audit", "verify-receipt", str(tmp_path / "r"), "--pubkey", "nope"]) == 2


def test_a_consistency_proof_from_an_archive_verifies(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = tmp_path / "consistency.json"
    assert main(["audit", "prove-consistency", "--archive", str(archive), "--partition", "0",
                 "--old-size", "8", "--new-size", "20", "--out", str(proof)]) == 0  # fmt: skip
    pubkey = str(archive / PUBKEY_FILE)
    assert main(["audit", "verify-consistency", str(proof), "--pubkey", pubkey]) == 0
    assert "consistent" in capsys.readouterr().out
    proof.write_bytes(proof.read_bytes().replace(b'"tree_size":8', b'"tree_size":9'))
    assert main(["audit", "verify-consistency", str(proof), "--pubkey", pubkey]) == 1
    assert main(["audit", "prove-consistency", "--archive", str(archive), "--partition", "0",
                 "--old-size", "7", "--new-size", "20"]) == 2  # fmt: skip
