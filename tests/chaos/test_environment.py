"""Start clean or say why not: the environment survey on a made-up /proc,
and `--strict-env` refusing to start on leftovers (before any cluster)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from ironbook.chaos import run as chaos_run
from ironbook.chaos.environment import (
    Environment,
    UncleanEnvironment,
    foreign_processes,
    held_port_locks,
    survey_environment,
)
from ironbook.chaos.run import ChaosOptions, run_chaos
from ironbook.cli import main


def _process(proc: Path, pid: int, *argv: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def _fake_proc(tmp_path: Path) -> Path:
    """This process (under an `ironbook chaos` parent) and a few others."""
    proc = tmp_path / "proc"
    _process(proc, os.getpid(), "python", "-m", "pytest")
    _process(proc, os.getppid(), "/venv/bin/ironbook", "chaos")  # our parent: not a leftover
    _process(proc, 4_000_002, "/venv/bin/nats-server", "-c", "/tmp/x/nats/n1/nats.conf")
    _process(proc, 4_000_003, "/venv/bin/python", "-m", "ironbook.services.replica")
    _process(proc, 4_000_004, "bash")
    (proc / "loadavg").write_text("0.50 0.40 0.30 1/100 4000005\n")
    (proc / "locks").write_text("")
    return proc


def test_processes_not_ours_are_leftovers_and_our_parents_are_not(tmp_path: Path) -> None:
    found = foreign_processes(_fake_proc(tmp_path))
    assert [line.split()[0] for line in found] == ["4000002", "4000003"]
    assert "nats-server" in found[0] and "ironbook.services.replica" in found[1]


def test_a_port_lock_held_by_a_process_is_found_in_proc_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _fake_proc(tmp_path)
    lock_dir = tmp_path / "ports"
    lock_dir.mkdir()
    held = lock_dir / "24001.lock"
    held.touch()
    (lock_dir / "24002.lock").touch()  # a lock file nobody holds
    monkeypatch.setattr("ironbook.chaos.environment.PORT_LOCK_DIR", lock_dir)
    (proc / "locks").write_text(
        f"1: FLOCK  ADVISORY  WRITE 4000003 fe:00:{held.stat().st_ino} 0 EOF\n"
        "2: POSIX  ADVISORY  READ 2511 fe:00:1 128 128\n"
    )
    assert held_port_locks(proc) == ["24001 (pid 4000003)"]


def test_the_survey_lists_each_kind_of_leftover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = iter([(1_000, 4_000), (1_180, 4_200)])  # 180 of 200 ticks busy
    monkeypatch.setattr("ironbook.chaos.environment.machine_jiffies", lambda: next(samples))
    environment = asyncio.run(survey_environment(_fake_proc(tmp_path)))
    assert environment.cpu_busy_share == 0.9
    assert environment.load_avg_1m == 0.5
    assert len(environment.processes) == 2
    assert environment.leftovers[0] == "2 nats-server/ironbook processes not this run's"
    assert environment.leftovers[-1].startswith("CPU 90% busy over 1 s before the start")


def _unclean() -> Environment:
    return Environment(
        processes=["4000002 nats-server -c x"],
        network=[],
        port_locks=[],
        cpu_busy_share=0.9,
        load_avg_1m=3.0,
        cpus=2,
        leftovers=["1 nats-server/ironbook processes not this run's", "CPU 90% busy"],
    )


async def _unclean_survey() -> Environment:
    return _unclean()


def test_strict_env_refuses_to_start_on_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chaos_run, "survey_environment", _unclean_survey)
    options = ChaosOptions(data_dir=tmp_path / "cluster", strict_env=True)
    with pytest.raises(UncleanEnvironment, match="CPU 90% busy"):
        asyncio.run(run_chaos(options))
    assert not (tmp_path / "cluster").exists()  # nothing was started


def test_the_command_exits_2_with_the_leftovers_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(chaos_run, "survey_environment", _unclean_survey)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # keep pytest's SIGTERM
    code = main(["chaos", "--strict-env", "--duration", "30", "--data-dir", str(tmp_path / "d")])
    assert code == 2
    error = capsys.readouterr().err
    assert "--strict-env: leftovers of earlier runs on this machine" in error
    assert "nats-server/ironbook processes" in error
