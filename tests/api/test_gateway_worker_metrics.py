"""The gateway workers' shared metrics directory, with real worker
processes: each worker's start time is its own series, so a worker killed
and started again shows as a changed start time behind the one shared
scrape target; and a worker starting forgets the in-flight count a killed
one left behind, which would otherwise stay in the sum for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ironbook.services.gateway.metrics import MULTIPROC_ENV

WORKER = """
import os, sys, time
from ironbook.services.gateway.metrics import GatewayMetrics, forget_dead_workers
print(",".join(map(str, forget_dead_workers())), flush=True)
metrics = GatewayMetrics(worker_id=sys.argv[1])
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


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=READ_TIMEOUT_S)


def test_a_restarted_worker_shows_and_a_killed_one_is_forgotten(tmp_path: Path) -> None:
    inflight = "ironbook_gateway_inflight_ledger_requests[]"
    started = "ironbook_gateway_worker_start_time_seconds[('worker', 'gw-1')]"
    first, forgotten, served = _worker(tmp_path, "gw-1", 5)
    second = None
    try:
        assert forgotten == [] and served[inflight] == 5
        first_start = served[started]
        second, forgotten, served = _worker(tmp_path, "gw-2", 2)
        assert forgotten == [] and served[inflight] == 7  # both alive
        _kill(first)
        time.sleep(0.01)
        restarted, forgotten, served = _worker(tmp_path, "gw-1", 1)
        try:
            assert forgotten == [first.pid]
            assert served[inflight] == 3  # the dead worker's 5 is gone
            assert served[started] > first_start  # the newest start of gw-1
            assert "ironbook_gateway_worker_start_time_seconds[('worker', 'gw-2')]" in served
        finally:
            _kill(restarted)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                _kill(process)
