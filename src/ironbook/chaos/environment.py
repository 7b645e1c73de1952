"""Start clean or say why not: what earlier runs (chaos, demo, benchmarks,
`ironbook up`) or other work left on this machine that can change a run's
outcome.

- processes: `nats-server` and ironbook processes that are not this run's
  (nor its parents);
- network namespaces, veths and bridges with the chaos prefix
  (`adapters.netns.leftover_names`);
- loopback ports still locked by a process (`adapters.nats.localproc.PortLease`
  lock files, found in /proc/locks without taking them);
- a busy CPU: the machine's CPU use over a one-second sample of /proc/stat,
  and the load average.

    environment = await survey_environment()
    if strict and environment.leftovers:
        raise UncleanEnvironment(environment)   # `--strict-env`
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec

from ironbook.adapters.nats.localproc import PORT_LOCK_DIR
from ironbook.adapters.netns import leftover_names, unavailable_reason
from ironbook.adapters.procfs import machine_jiffies, process_stat

BUSY_CPU_SHARE = 0.5
"""Above this share of the machine's CPU in use before the start, the CPU is busy."""
CPU_SAMPLE_S = 1.0
MAX_LISTED = 20
"""Leftovers listed per kind (the count is always whole)."""


class Environment(msgspec.Struct):
    processes: list[str]
    """`pid command line` of each nats-server / ironbook process not ours."""
    network: list[str]
    """Namespace and interface names left by chaos runs."""
    port_locks: list[str]
    """`port (pid)` of each loopback port lock another process holds."""
    cpu_busy_share: float
    """Share of the machine's CPU in use over a `CPU_SAMPLE_S` sample."""
    load_avg_1m: float
    cpus: int
    leftovers: list[str]
    """One line per kind found that can change the outcome; empty: clean."""


class UncleanEnvironment(RuntimeError):
    """Leftovers of earlier runs are on this machine and a strict run refuses them."""

    def __init__(self, environment: Environment) -> None:
        super().__init__("; ".join(environment.leftovers))
        self.environment = environment


async def survey_environment(proc: Path = Path("/proc")) -> Environment:
    """What this machine holds now (takes about `CPU_SAMPLE_S`). `proc`:
    where the process list, the locks and the load average are read."""
    busy_before = machine_jiffies()
    await asyncio.sleep(CPU_SAMPLE_S)
    busy_after = machine_jiffies()
    busy = busy_after[0] - busy_before[0]
    total = busy_after[1] - busy_before[1]
    cpu_busy_share = round(busy / total, 3) if total > 0 else 0.0
    processes = foreign_processes(proc)
    network = _network_leftovers()
    port_locks = held_port_locks(proc)
    load_avg_1m = _load_avg_1m(proc)
    cpus = os.cpu_count() or 1
    leftovers = []
    if processes:
        leftovers.append(f"{len(processes)} nats-server/ironbook processes not this run's")
    if network:
        leftovers.append(f"{len(network)} network namespaces/interfaces of earlier chaos runs")
    if port_locks:
        leftovers.append(f"{len(port_locks)} loopback ports locked by other ironbook processes")
    if cpu_busy_share > BUSY_CPU_SHARE:
        leftovers.append(
            f"CPU {cpu_busy_share:.0%} busy over {CPU_SAMPLE_S:g} s before the start "
            f"(load average {load_avg_1m:.2f} on {cpus} CPUs)"
        )
    return Environment(
        processes=processes[:MAX_LISTED],
        network=network[:MAX_LISTED],
        port_locks=port_locks[:MAX_LISTED],
        cpu_busy_share=cpu_busy_share,
        load_avg_1m=load_avg_1m,
        cpus=cpus,
        leftovers=leftovers,
    )


def foreign_processes(proc: Path = Path("/proc")) -> list[str]:
    """nats-server and ironbook processes other than this one and its parents."""
    ours = _ancestors(os.getpid())
    found = []
    for entry in sorted(proc.iterdir(), key=lambda p: (len(p.name), p.name)):
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        words = [arg.decode(errors="replace") for arg in argv if arg]
        if words and _is_cluster_process(words):
            found.append(f"{entry.name} {' '.join(words)[:200]}")
    return found


def _is_cluster_process(argv: list[str]) -> bool:
    if Path(argv[0]).name == "nats-server":
        return True
    return any(Path(arg).name == "ironbook" or arg.startswith("ironbook.") for arg in argv[:4])


def _ancestors(pid: int) -> set[int]:
    chain = set()
    while pid > 0 and pid not in chain:
        chain.add(pid)
        stat = process_stat(pid)
        if stat is None:
            break
        pid = stat.ppid
    return chain


def held_port_locks(proc: Path = Path("/proc")) -> list[str]:
    """`port (pid N)` for each port lock file some process holds a lock on."""
    lock_dir = PORT_LOCK_DIR
    if not lock_dir.is_dir():
        return []
    ports_by_inode = {}
    for path in lock_dir.glob("*.lock"):
        try:
            ports_by_inode[path.stat().st_ino] = path.stem
        except OSError:
            continue
    try:
        locks = (proc / "locks").read_text().splitlines()
    except OSError:
        return []
    held = []
    for line in locks:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 2382 fe:00:2147853 0 EOF"
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        inode = int(fields[5].rsplit(":", 1)[1])
        if inode in ports_by_inode:
            held.append(f"{ports_by_inode[inode]} (pid {fields[4]})")
    return sorted(held)


def _network_leftovers() -> list[str]:
    if unavailable_reason() is not None:
        return []
    return sorted(name for names in leftover_names().values() for name in names)


def _load_avg_1m(proc: Path) -> float:
    return float((proc / "loadavg").read_text().split()[0])
