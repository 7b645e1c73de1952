"""Every `ironbook bench NAME` names a benchmark module that parses its own flags."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from ironbook.cli import bench


@pytest.mark.parametrize("name", sorted(bench.BENCHMARKS))
def test_every_benchmark_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(bench.BENCHMARKS[name])
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    assert f"ironbook bench {name}" in capsys.readouterr().out


def test_every_launcher_runs_a_registered_benchmark() -> None:
    launchers = Path(__file__).resolve().parents[2] / "bench"
    modules = set(bench.BENCHMARKS.values())
    for launcher in sorted(launchers.glob("*.py")):
        text = launcher.read_text()
        assert "sys.path" not in text, launcher.name
        assert any(f"from {module} import main" in text for module in modules), launcher.name
