from __future__ import annotations

import argparse
import json

import pytest

from ironbook.cli import sim


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ironbook")
    sim.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", *argv])
    return int(args.func(args))


def test_json_summary_of_passing_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--seeds", "5", "--start", "100", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 5
    assert summary["violations"] == 0
    assert summary["failed_seeds"] == []
    assert summary["seconds"] >= 0


def test_failing_seeds_are_printed_and_exit_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--seeds", "20", "--mutation", "reply_before_ack"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert "lost: " in out


def test_parallel_jobs_give_the_same_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--seeds", "20", "--mutation", "reply_before_ack", "--json"]) == 1
    serial = json.loads(capsys.readouterr().out)
    assert _run(["--seeds", "20", "--mutation", "reply_before_ack", "--json", "--jobs", "2"]) == 1
    parallel = json.loads(capsys.readouterr().out)
    assert serial["failures"] == parallel["failures"]
    assert serial["violations"] == parallel["violations"] > 0


def test_trace_prints_the_timeline_of_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--seeds", "1", "--start", "891", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "lease: granted to" in out
    assert "landed at seq 1" in out
