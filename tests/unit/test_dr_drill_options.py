"""`ironbook dr drill`'s options and refusals (the drill itself runs in
tests/integration/test_dr_drill.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from ironbook.chaos import drill_modes
from ironbook.chaos.drill import DrillOptions
from ironbook.chaos.stretch_drill import StretchDrillOptions
from ironbook.cli import main


def test_the_cut_is_seeded_after_the_warm_up_and_in_the_first_half(tmp_path: Path) -> None:
    for seed in range(50):
        options = DrillOptions(data_dir=tmp_path, seed=seed, duration_s=120)
        assert options.warm_up_s <= options.cut_at_s <= 60
        assert options.cut_at_s == DrillOptions(data_dir=tmp_path, seed=seed).cut_at_s
    assert len({DrillOptions(data_dir=tmp_path, seed=s).cut_at_s for s in range(5)}) == 5


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 20"):
        DrillOptions(data_dir=tmp_path, duration_s=5)
    with pytest.raises(ValueError, match="client"):
        DrillOptions(data_dir=tmp_path, clients=0)
    with pytest.raises(ValueError, match="negative"):
        DrillOptions(data_dir=tmp_path, wan_rtt_ms=-1)


def test_bad_usage_exits_2_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["dr", "drill", "--dr-mode", "active-active", "--data-dir", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["dr", "drill", "--duration", "3", "--data-dir", str(tmp_path)]) == 2
    assert "at least 20" in capsys.readouterr().err
    for duration in ("nan", "inf"):
        assert main(["dr", "drill", "--duration", duration, "--data-dir", str(tmp_path)]) == 2
        assert "at least 20" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    # Never a directory that holds anything: a drill kills and re-seeds what runs there.
    (tmp_path / "cluster.json").write_text("{}")
    assert main(["dr", "drill", "--data-dir", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_both_modes_run_one_after_the_other_in_their_own_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[tuple[str, Path, int, float, int]] = []

    async def mirror(options: DrillOptions, say: object) -> SimpleNamespace:
        ran.append(("mirror", options.data_dir, options.seed, options.duration_s, options.clients))
        return SimpleNamespace(verdict="pass", bets_per_s=400.0, rto_s=12.0, rpo_acked_lost=3)

    async def stretch(options: StretchDrillOptions, say: object) -> SimpleNamespace:
        ran.append(("stretch", options.data_dir, options.seed, options.seconds, options.clients))
        return SimpleNamespace(verdict="pass", bets_per_s=100.0, rto_s=8.0, rpo_acked_lost=0)

    monkeypatch.setattr(drill_modes, "run_drill", mirror)
    monkeypatch.setattr(drill_modes, "run_stretch_drill", stretch)
    options = DrillOptions(data_dir=tmp_path, seed=7, duration_s=60, clients=4)
    report = asyncio.run(drill_modes.run_modes("both", options))
    assert ran == [
        ("mirror", tmp_path / "mirror", 7, 60, 4),
        ("stretch", tmp_path / "stretch", 7, 60, 4),
    ]
    assert isinstance(report, drill_modes.ModesReport) and report.verdict == "pass"
    assert report.stretch_vs_mirror["bets_per_s"] == 0.25
    assert report.stretch_vs_mirror["stretch_rpo_acked_lost"] == 0
