"""The monitoring stack of a local cluster: Prometheus, Alertmanager and
node_exporter from the Debian packages, the NATS collector and the alert
receiver with the ops console, all children of the cluster's supervisor.

    <data-dir>/monitoring/prometheus.yml     scrape config (every process) + rules
    <data-dir>/monitoring/alertmanager.yml   routes, grouping, inhibition -> the receiver
    <data-dir>/monitoring/prometheus/        Prometheus's time series
    <data-dir>/monitoring/alertmanager/      Alertmanager's silences and notification log
    <data-dir>/monitoring/alerts.jsonl       every notification the receiver got

Every port listens on `MonitoringSettings.host` (loopback by default): NATS's
monitoring port and these have no authentication. The configs are written
again on every start, from the ports the cluster's processes use now.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ironbook.adapters import prometheus
from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.services.process import process_command
from ironbook.settings import MonitoringSettings

RULES_FILE = Path(__file__).resolve().parents[3] / "deploy" / "prometheus-alerts.yml"
"""The alert rules, unit-tested by promtool (docs/alerting.md)."""
BINARIES = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "node-exporter": "prometheus-node-exporter",
}
NODE_COLLECTORS = ("cpu", "meminfo", "loadavg", "filesystem", "diskstats", "netdev", "pressure")
"""node_exporter's collectors ironbook uses (the rest cost CPU for nothing here)."""
WEBHOOK_PATH = "/alerts/webhook"
GROUP_WAIT_S = 1
GROUP_INTERVAL_S = 2
REPEAT_INTERVAL = "4h"
STARTED_LATER_JOBS = frozenset(
    {
        "ironbook-supervisor",
        "ironbook-nats-exporter",
        "ironbook-alert-receiver",
        "node",
        "prometheus",
        "alertmanager",
    }
)
"""Jobs whose processes start with the stack or after it (the supervisor's
`/metrics` is served once the cluster has started)."""
GROUP_BY = ["alertname", "partition", "server", "producer", "child", "instance", "name", "worker"]


class MonitoringUnavailable(RuntimeError):
    """A binary of the stack is not installed, or the rules are not found."""


@dataclass(frozen=True, slots=True)
class Target:
    """One process Prometheus scrapes: `host:port` and the labels that name it."""

    address: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ScrapeTargets:
    """Job name -> the processes of that job."""

    jobs: dict[str, list[Target]] = field(default_factory=dict)
    metric_relabels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Job name -> Prometheus `metric_relabel_configs` for it."""

    def add(self, job: str, address: str, **labels: str) -> None:
        self.jobs.setdefault(job, []).append(Target(address, labels))


@dataclass(frozen=True, slots=True)
class StackPorts:
    prometheus: int
    alertmanager: int
    node_exporter: int
    ops: int
    nats_exporter: int


def binary(name: str) -> str:
    """The installed binary of the stack's `name` (`adapters.prometheus` finds it)."""
    try:
        return prometheus.binary(BINARIES[name])
    except prometheus.MonitoringBinaryMissing as err:
        raise MonitoringUnavailable(str(err)) from err


def prometheus_config(
    settings: MonitoringSettings, targets: ScrapeTargets, alertmanager: str, rules: Path
) -> dict[str, object]:
    interval = f"{settings.scrape_interval_ms}ms"
    node_interval = f"{settings.node_scrape_interval_ms}ms"
    scrape_configs: list[dict[str, object]] = []
    for job, members in targets.jobs.items():
        slow = job in ("node", "prometheus", "alertmanager")
        scrape_configs.append(
            {
                "job_name": job,
                "scrape_interval": node_interval if slow else interval,
                "scrape_timeout": node_interval if slow else interval,
                "static_configs": [
                    {"targets": [target.address], "labels": target.labels} for target in members
                ],
                "metric_relabel_configs": targets.metric_relabels.get(job, []),
            }
        )
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": scrape_configs,
    }


def alertmanager_config(webhook_url: str) -> dict[str, object]:
    """One receiver (ironbook's), alerts grouped per failing thing, and
    inhibition: a NATS server that is down silences the alerts it causes on
    the same node (its replicas) and the other servers' unhealthy state; a
    partition without a leader silences the gateways' readiness alert; a
    process under planned maintenance (`IronbookMaintenance`, posted by
    `services.maintenance`) silences the page and ticket alerts about it."""
    return {
        "route": {
            "receiver": "ironbook",
            "group_by": GROUP_BY,
            "group_wait": f"{GROUP_WAIT_S}s",
            "group_interval": f"{GROUP_INTERVAL_S}s",
            "repeat_interval": REPEAT_INTERVAL,
        },
        "receivers": [
            {
                "name": "ironbook",
                "webhook_configs": [{"url": webhook_url, "send_resolved": True, "max_alerts": 0}],
            }
        ],
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="IronbookNatsServerDown"'],
                "target_matchers": ['alertname=~"IronbookReplicaDown|IronbookReplicaStale"'],
                "equal": ["node"],
            },
            {
                "source_matchers": ['alertname="IronbookNatsServerDown"'],
                "target_matchers": ['alertname="IronbookNatsServerUnhealthy"'],
            },
            {
                "source_matchers": ['alertname="IronbookNatsServerDown"'],
                "target_matchers": ['alertname="IronbookNatsServerSlow"'],
                "equal": ["server"],
            },
            {
                "source_matchers": ['alertname="IronbookNoLedgerLeader"'],
                "target_matchers": ['alertname="IronbookGatewayNotReady"'],
            },
            {
                "source_matchers": ['alertname="IronbookMaintenance"'],
                "target_matchers": ['severity=~"page|ticket"'],
                "equal": ["name"],
            },
        ],
    }


class MonitoringStack:
    """The stack's processes and configs for one data directory."""

    def __init__(
        self,
        data_dir: Path,
        settings: MonitoringSettings,
        ports: StackPorts,
        *,
        nats_url: str,
        nats_servers: dict[str, tuple[str, str]],
        config_args: list[str],
        logs_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        """`nats_servers`: each NATS server's monitoring address (`host:port`)
        -> (its name, its node); `env`: the processes' (the cluster's
        credentials), default this one's."""
        self.dir = data_dir / "monitoring"
        self.settings = settings
        self.ports = ports
        host = settings.host
        self.prometheus_url = f"http://{host}:{ports.prometheus}"
        self.alertmanager_url = f"http://{host}:{ports.alertmanager}"
        self.ops_url = f"http://{host}:{ports.ops}"
        self.console_url = f"{self.ops_url}/console"
        self.node_exporter_address = f"{host}:{ports.node_exporter}"
        self.nats_exporter_address = f"{host}:{ports.nats_exporter}"
        self.nats_servers = nats_servers
        env = env or {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            prometheus_server = prometheus.prometheus_process(
                self.dir / "prometheus.yml",
                self.dir / "prometheus",
                f"{host}:{ports.prometheus}",
                logs_dir / "prometheus.log",
                retention=settings.retention,
                env=env,
            )
            alertmanager = prometheus.alertmanager_process(
                self.dir / "alertmanager.yml",
                self.dir / "alertmanager",
                f"{host}:{ports.alertmanager}",
                logs_dir / "alertmanager.log",
                env=env,
            )
        except prometheus.MonitoringBinaryMissing as err:
            raise MonitoringUnavailable(str(err)) from err
        self.processes: dict[str, ManagedProcess] = {
            "prometheus": prometheus_server,
            "alertmanager": alertmanager,
            "node-exporter": ManagedProcess(
                "node-exporter",
                [
                    binary("node-exporter"),
                    f"--web.listen-address={self.node_exporter_address}",
                    "--collector.disable-defaults",
                    *(f"--collector.{name}" for name in NODE_COLLECTORS),
                    "--log.level=warn",
                ],
                log_path=logs_dir / "node-exporter.log",
                env=env,
            ),
            "nats-exporter": ManagedProcess(
                "nats-exporter",
                [
                    *process_command("nats-exporter", config_args),
                    "--monitor-urls",
                    ",".join(f"http://{address}" for address in nats_servers),
                    "--host",
                    host,
                    "--port",
                    str(ports.nats_exporter),
                ],
                log_path=logs_dir / "nats-exporter.log",
                env=env,
            ),
            "alert-receiver": ManagedProcess(
                "alert-receiver",
                [
                    *process_command("alert-receiver", config_args),
                    "--nats",
                    nats_url,
                    "--data-dir",
                    str(data_dir),
                    "--host",
                    host,
                    "--port",
                    str(ports.ops),
                    "--prometheus-url",
                    self.prometheus_url,
                    "--alertmanager-url",
                    self.alertmanager_url,
                ],
                log_path=logs_dir / "alert-receiver.log",
                env=env,
            ),
        }

    def add_own_targets(self, targets: ScrapeTargets) -> None:
        """The stack's own processes, scraped like the rest."""
        host = self.settings.host
        targets.add("ironbook-nats-exporter", self.nats_exporter_address, name="nats-exporter")
        # Each server's series get its name and node, as the replicas' do, so
        # that inhibition can match a server that is down with its node.
        targets.metric_relabels["ironbook-nats-exporter"] = [
            rule
            for address, (name, node) in self.nats_servers.items()
            for rule in (
                {
                    "source_labels": ["server"],
                    "regex": re.escape(address),
                    "target_label": label,
                    "replacement": value,
                }
                for label, value in (("name", name), ("node", node))
            )
        ]
        targets.add("ironbook-alert-receiver", f"{host}:{self.ports.ops}", name="alert-receiver")
        targets.add("node", self.node_exporter_address, name="node-exporter")
        targets.add("prometheus", f"{host}:{self.ports.prometheus}", name="prometheus")
        targets.add("alertmanager", f"{host}:{self.ports.alertmanager}", name="alertmanager")

    def write_configs(self, targets: ScrapeTargets) -> None:
        if not RULES_FILE.exists():
            raise MonitoringUnavailable(f"alert rules not found at {RULES_FILE}")
        self.dir.mkdir(parents=True, exist_ok=True)
        alertmanager = f"{self.settings.host}:{self.ports.alertmanager}"
        prometheus = prometheus_config(self.settings, targets, alertmanager, RULES_FILE)
        (self.dir / "prometheus.yml").write_text(_header() + json.dumps(prometheus, indent=2))
        receiver = alertmanager_config(self.ops_url + WEBHOOK_PATH)
        (self.dir / "alertmanager.yml").write_text(_header() + json.dumps(receiver, indent=2))


def _header() -> str:
    """JSON is YAML: the configs are written as JSON, with this comment on top."""
    return "# Written by `ironbook up --monitoring` on every start; edits are lost.\n"
