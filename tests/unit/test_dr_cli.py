"""`ironbook dr failback` and `dr promote` refusals that need no running
cluster, and the control request the failback is sent as."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from ironbook.cli import main
from ironbook.services import dr
from ironbook.services.control import ControlRequest


def test_failback_needs_a_dr_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dr", "failback", "--data-dir", str(tmp_path)]) == 2
    assert "has no DR site" in capsys.readouterr().err


def test_failback_needs_the_running_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dr.write_site(tmp_path, dr.SiteLayout(wan_rtt_ms=30, relay_ports=[1, 2, 3]))
    dr.write_primary(tmp_path, dr.next_primary(tmp_path, "b", "operator:test"))
    assert main(["dr", "failback", "--json", "--data-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "no `ironbook up --dr-site` runs" in captured.err and not captured.out
    assert dr.read_primary(tmp_path).site == "b"  # nothing changed


def test_failback_is_a_control_request() -> None:
    request = msgspec.json.decode(b'{"op": "dr_failback"}', type=ControlRequest)
    assert request.op == "dr_failback"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"op": "dr_fallback"}', type=ControlRequest)


def test_failback_help_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_code:
        main(["dr", "failback", "--help"])
    assert exit_code.value.code == 0
    out = capsys.readouterr().out
    assert "site-a-epoch-<n>" in out and "--json" in out
