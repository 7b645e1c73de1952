"""What Linux's /proc says about a process and about the machine.

The one place that parses `/proc/<pid>/stat`, `/proc/<pid>/smaps_rollup`,
`/proc/stat` and the memory limits (`/proc/meminfo`, the memory cgroup): the
process supervisor reads a process's state letter, the dashboard shows it, the
benchmarks charge CPU time and memory to each process, the chaos environment
survey walks a process's parents, and a replica reports the memory it may use."""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import NamedTuple

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class ProcessStat(NamedTuple):
    state: str
    """The state letter: R running, S sleeping, T stopped (SIGSTOP), Z zombie..."""
    cpu_s: float
    """User + system CPU time used so far."""
    ppid: int = 0
    """The parent's process id."""
    rss_bytes: int = 0
    """Resident memory."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_stat(pid: int) -> ProcessStat | None:
    """The process's state and CPU time; None if it is gone (or not Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ")".
    fields = text.rsplit(")", 1)[1].split()
    if len(fields) < 22:
        return None
    return ProcessStat(
        fields[0],
        (int(fields[11]) + int(fields[12])) / _TICKS_PER_S,
        ppid=int(fields[1]),
        rss_bytes=int(fields[21]) * _PAGE_BYTES,
    )


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds `pid` has used; 0.0 if it is gone or unknown."""
    stat = None if pid is None else process_stat(pid)
    return 0.0 if stat is None else stat.cpu_s


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values)
    return total - values[3] - values[4], total


def private_dirty_bytes(pid: int) -> int | None:
    """Memory only `pid` has written to (its own allocations, and for a forked
    child the copy-on-write pages it has copied); None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) * 1024
    return None


def memory_limit_bytes(proc: Path = Path("/proc"), sys_fs: Path = Path("/sys/fs/cgroup")) -> int:
    """The memory this process may use: the least of the machine's memory
    (`MemTotal`), its own address-space limit (`RLIMIT_AS`) and its memory
    cgroup's limit (v1 `memory.limit_in_bytes` or v2 `memory.max`; "no limit"
    is a huge number or `max`, which the machine's memory then bounds)."""
    limits = [_mem_total_bytes(proc)]
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft > 0:
        limits.append(soft)
    cgroup = _cgroup_memory_limit(proc, sys_fs)
    if cgroup is not None:
        limits.append(cgroup)
    return min(limits)


def _mem_total_bytes(proc: Path) -> int:
    for line in (proc / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{proc / 'meminfo'}: no MemTotal line")


def _cgroup_memory_limit(proc: Path, sys_fs: Path) -> int | None:
    """This process's memory cgroup limit, or None when it has none or it
    cannot be read. `/proc/self/cgroup` lines are `id:controllers:path`: v1's
    memory controller names `memory`, v2's single hierarchy has id 0 and none."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if "memory" in controllers.split(","):
            candidates = [sys_fs / "memory" / path.lstrip("/") / "memory.limit_in_bytes"]
        elif hierarchy == "0" and controllers == "":
            candidates = [sys_fs / path.lstrip("/") / "memory.max"]
        else:
            continue
        for candidate in candidates:
            try:
                text = candidate.read_text().strip()
            except OSError:
                continue
            if text.isdigit():
                return int(text)
    return None
