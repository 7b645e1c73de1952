"""The gateway workers' shared metrics directory, with real worker
processes. The workers share one scrape target, so a worker's death must
show in the metrics themselves: the count of workers running drops at the
next scrape (which forgets the dead, SIGKILL or not, with their in-flight
counts), and each worker's start time is its own series, which changes when
the worker is started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ironbook.services.gateway.metrics import MULTIPROC_ENV, GatewayMetrics

WORKER = """
import os, sys, time
from ironbook.services.gateway.metrics import GatewayMetrics, forget_dead_workers
print(",".join(map(str, forget_dead_workers())), flush=True)
metrics = GatewayMetrics(worker_id=sys.argv[1], workers=2)
metrics.flush(inflight_ledger_requests=int(sys.argv[2]))
sys.stdout.write(metrics.exposition()[0].decode() + "\\n=END=\\n")
sys.stdout.flush()
time.sleep(60)
"""
READ_TIMEOUT_S = 60


def _worker(
    directory: Path, worker_id: str, inflight: int
) -> tuple[subprocess.Popen[str], list[int], dict[str, float]]:
    """A worker process (left running): the pids it forgot, and the
    exposition it served, as {name{labels}: value}."""
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, worker_id, str(inflight)],
        env={**os.environ, MULTIPROC_ENV: str(directory)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + READ_TIMEOUT_S
    forgot_line = process.stdout.readline()
    lines = []
    while (line := process.stdout.readline()) != "=END=\n":
        assert line and time.monotonic() < deadline, "the worker served no metrics"
        lines.append(line)
    forgotten = [int(pid) for pid in forgot_line.strip().split(",") if pid]
    served = {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families("".join(lines))
        for sample in family.samples
    }
    return process, forgotten, served


def _scraped(directory: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """What a scrape of any worker would answer now."""
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    text = GatewayMetrics(CollectorRegistry()).exposition()[0].decode()
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=READ_TIMEOUT_S)


def test_a_killed_worker_shows_at_once_and_its_restart_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inflight = "ironbook_gateway_inflight_ledger_requests[]"
    running = "ironbook_gateway_workers[]"
    started = "ironbook_gateway_worker_start_time_seconds[('worker', 'gw-1')]"
    first, forgotten, served = _worker(tmp_path, "gw-1", 5)
    second = None
    try:
        assert forgotten == [] and served[inflight] == 5
        first_start = served[started]
        second, forgotten, served = _worker(tmp_path, "gw-2", 2)
        assert forgotten == [] and served[inflight] == 7 and served[running] == 2
        assert served["ironbook_gateway_workers_expected[]"] == 2
        _kill(first)
        scraped = _scraped(tmp_path, monkeypatch)
        assert scraped[running] == 1 and scraped[inflight] == 2
        restarted, forgotten, served = _worker(tmp_path, "gw-1", 1)
        try:
            assert served[running] == 2
            assert served[inflight] == 3
            assert served[started] > first_start  # the newest start of gw-1
            assert "ironbook_gateway_worker_start_time_seconds[('worker', 'gw-2')]" in served
        finally:
            _kill(restarted)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                _kill(process)
