"""The one /proc reader: a process's state and CPU time, the machine's ticks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ironbook.adapters.procfs import (
    machine_jiffies,
    memory_limit_bytes,
    private_dirty_bytes,
    process_cpu_s,
    process_stat,
)
from ironbook.benchmarks.cpu import CpuMeter


def _burn_cpu_s(seconds: float) -> None:
    started = time.process_time()
    while time.process_time() - started < seconds:
        sum(range(1_000))


def test_a_running_process_has_a_state_and_cpu_time() -> None:
    _burn_cpu_s(0.05)
    stat = process_stat(os.getpid())
    assert stat is not None and stat.ppid == os.getppid()
    assert stat is not None
    assert stat.state in "RS"
    assert stat.cpu_s > 0


def test_a_stopped_process_reads_t_and_a_gone_one_reads_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while (stat := process_stat(child.pid)) is not None and stat.state != "T":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert stat is not None and stat.state == "T"
    finally:
        child.kill()
        child.wait()
    assert process_stat(child.pid) is None
    assert process_cpu_s(child.pid) == 0.0
    assert process_cpu_s(None) == 0.0


def test_machine_ticks_grow_and_busy_is_part_of_total() -> None:
    busy, total = machine_jiffies()
    _burn_cpu_s(0.05)
    busy_after, total_after = machine_jiffies()
    assert 0 <= busy <= total
    assert busy_after >= busy and total_after > total


def test_the_meter_charges_cpu_to_its_group() -> None:
    meter = CpuMeter({"me": [os.getpid()], "nobody": [None]})
    meter.start()
    _burn_cpu_s(0.3)
    used = meter.stop()
    # The clock ticks in 10 ms steps: 0.3 s burnt reads at least 0.2 s.
    assert used["me_cpu_s"] >= 0.2
    assert used["nobody_cpu_s"] == 0.0
    assert used["bench_cpu_s"] >= 0.2
    assert 0.0 <= used["machine_busy"] <= 1.0


def test_private_dirty_memory_grows_with_what_the_process_writes() -> None:
    before = private_dirty_bytes(os.getpid())
    assert before is not None
    written = bytearray(32 << 20)
    written[::4096] = b"x" * len(written[::4096])
    after = private_dirty_bytes(os.getpid())
    assert after is not None and after - before >= 16 << 20
    del written
    assert private_dirty_bytes(2**22 + 1) is None


def _proc(tmp_path: Path, cgroup: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:       4000000 kB\nMemFree:        1000 kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    return proc


def test_the_memory_limit_is_the_machine_without_a_cgroup_limit(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "9:memory:/\n8:pids:/\n")
    sys_fs = tmp_path / "cgroup"
    (sys_fs / "memory").mkdir(parents=True)
    (sys_fs / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory_limit_bytes(proc, sys_fs) == 4_000_000 * 1024


def test_a_cgroup_v1_memory_limit_bounds_the_process(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "9:memory:/ironbook/p0-r1\n8:cpu,cpuacct:/\n")
    sys_fs = tmp_path / "cgroup"
    limit_dir = sys_fs / "memory" / "ironbook" / "p0-r1"
    limit_dir.mkdir(parents=True)
    (limit_dir / "memory.limit_in_bytes").write_text("536870912\n")
    assert memory_limit_bytes(proc, sys_fs) == 536_870_912


def test_a_cgroup_v2_memory_max_bounds_the_process(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "0::/ironbook.slice\n")
    sys_fs = tmp_path / "cgroup"
    (sys_fs / "ironbook.slice").mkdir(parents=True)
    (sys_fs / "ironbook.slice" / "memory.max").write_text("1073741824\n")
    assert memory_limit_bytes(proc, sys_fs) == 1_073_741_824
    (sys_fs / "ironbook.slice" / "memory.max").write_text("max\n")
    assert memory_limit_bytes(proc, sys_fs) == 4_000_000 * 1024


def test_the_real_limit_is_positive_and_at_most_the_machine() -> None:
    limit = memory_limit_bytes()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < limit <= total + 1024 * 1024
