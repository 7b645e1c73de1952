"""`ironbook dr drill`'s options and refusals (the drill itself runs in
tests/integration/test_dr_drill.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ironbook.chaos.drill import DrillOptions, DrillUnavailable, run_drill
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


def test_stretch_mode_is_not_in_this_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DrillUnavailable, match="not available"):
        asyncio.run(run_drill(DrillOptions(data_dir=tmp_path, mode="stretch")))
    assert main(["dr", "drill", "--dr-mode", "stretch", "--data-dir", str(tmp_path)]) == 2
    assert "not available in this build" in capsys.readouterr().err
    assert main(["dr", "drill", "--duration", "3", "--data-dir", str(tmp_path)]) == 2
    assert "at least 20" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
