"""CPU time charged to groups of processes over a measured phase.

On a shared machine wall-clock rates move with the neighbours' load; the CPU
seconds each process used (`/proc`, user + system) are the fairer measure."""

from __future__ import annotations

import time

from ironbook.adapters.procfs import machine_jiffies, process_cpu_s
from ironbook.services.local_cluster import LocalCluster

CLUSTER_GROUPS = ("nats", "replicas", "gateways", "history", "audit")
"""The server side of a local cluster; their sum is `cluster_cpu_s`."""

PidGroups = dict[str, list[int | None]]


def cluster_groups(cluster: LocalCluster) -> PidGroups:
    """The cluster's processes by group (`CLUSTER_GROUPS`), and `monitoring`
    (Prometheus, Alertmanager, node_exporter, the NATS collector and the
    alert receiver) when the cluster runs that stack: it is not counted in
    `cluster_cpu_s`, so that runs with and without it compare."""
    groups: PidGroups = {
        "nats": [node.process.pid for node in cluster.nats.nodes.values()],
        "replicas": [p.pid for p in cluster.replicas.values()],
        "gateways": [p.pid for name, p in cluster.gateways.items() if name.startswith("gw-")],
        # The history projectors: every bet, also into the gateway's SQLite.
        "history": [p.pid for name, p in cluster.gateways.items() if name.startswith("history-")],
        # The audit verifier and the event recorder: each reads every log entry.
        "audit": [cluster.audit.pid, cluster.recorder.pid],
    }
    if cluster.monitoring is not None:
        groups["monitoring"] = [p.pid for p in cluster.monitoring.processes.values()]
    return groups


class CpuMeter:
    """CPU seconds used by each group of processes between `start` and `stop`."""

    def __init__(self, groups: PidGroups) -> None:
        self._groups = groups
        self._start: dict[str, float] = {}
        self._machine = (0, 0)
        self._wall = 0.0
        self._own = 0.0

    def _sample(self) -> dict[str, float]:
        return {
            group: sum(process_cpu_s(pid) for pid in pids) for group, pids in self._groups.items()
        }

    def start(self) -> None:
        self._start = self._sample()
        self._machine = machine_jiffies()
        self._wall = time.monotonic()
        self._own = time.process_time()

    def stop(self) -> dict[str, float]:
        """`<group>_cpu_s` for each group; `cluster_cpu_s`, the sum of the
        cluster groups; `bench_cpu_s`, this process's own; `machine_busy`, the
        busy fraction of the whole machine; `wall_s`."""
        end = self._sample()
        busy, total = machine_jiffies()
        spent = {group: end[group] - self._start[group] for group in end}
        used = {f"{group}_cpu_s": round(seconds, 2) for group, seconds in spent.items()}
        used["cluster_cpu_s"] = round(sum(spent.get(g, 0.0) for g in CLUSTER_GROUPS), 2)
        used["bench_cpu_s"] = round(time.process_time() - self._own, 2)
        total_delta = total - self._machine[1]
        used["machine_busy"] = (
            round((busy - self._machine[0]) / total_delta, 3) if total_delta else 0.0
        )
        used["wall_s"] = round(time.monotonic() - self._wall, 2)
        return used
