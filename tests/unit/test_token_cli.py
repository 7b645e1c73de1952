"""`ironbook token`: a staff token names who it is for; a bettor's names its
account."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from ironbook.cli import main
from ironbook.services.gateway.auth import local_signing_key


@pytest.mark.parametrize("role", ["trader", "cashier", "admin", "auditor"])
def test_a_staff_token_needs_a_subject(
    tmp_path: Path, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--data-dir", str(tmp_path), "--role", role]) == 2
    assert "--sub" in capsys.readouterr().err
    assert main(["token", "--data-dir", str(tmp_path), "--role", role, "--sub", "alice"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, local_signing_key(tmp_path).secret, algorithms=["HS256"])
    assert (claims["sub"], claims["role"]) == ("alice", role)


def test_a_bettor_token_needs_an_account_not_a_subject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--data-dir", str(tmp_path), "--role", "bettor"]) == 2
    assert main(["token", "--data-dir", str(tmp_path), "--role", "bettor", "--account", "a1"]) == 0
