"""What Linux's /proc says about a process and about the machine.

The one place that parses `/proc/<pid>/stat`, `/proc/<pid>/smaps_rollup` and
`/proc/stat`: the process supervisor reads a process's state letter, the
dashboard shows it, the benchmarks charge CPU time and memory to each process,
and the chaos environment survey walks a process's parents."""

from __future__ import annotations

import os
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
