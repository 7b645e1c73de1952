"""A whole ironbook cluster on one machine, from one data directory.

    <data-dir>/ironbook.json   what the cluster is (partitions): fixed at creation
    <data-dir>/nats/           3 nats-server nodes (config, JetStream store, logs)
    <data-dir>/logs/           one log file per replica process
    <data-dir>/run/            one liveness file per ironbook process (`services.supervisor`)
    <data-dir>/secrets/        CA, certificates, nkey seeds (docs/security.md)
    <data-dir>/up.json         what is running now (PIDs, URLs, the supervisor's view of
                               every child), for `ironbook status`
    <data-dir>/monitoring/     with monitoring: Prometheus, Alertmanager, alerts
                               (services/monitoring.py)

Secured by default: mutual TLS on every NATS link and one nkey identity per
service kind (`services/nats_identities.py`). The streams, buckets and object
stores are provisioned with the `ops` identity before any service starts
(`python -m ironbook.bootstrap provision`); services only use them.

Used by `ironbook up`, the integration tests and the benchmarks, so that all
three exercise the same processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from ironbook.adapters.ledger_keys import ledger_signing_key
from ironbook.adapters.nats.localproc import LOOPBACK, ManagedProcess, PortLease
from ironbook.adapters.nats.provision import NatsEndpoint
from ironbook.adapters.nats.security import (
    SECRETS_DIR,
    NatsCredentials,
    Permissions,
    SecretsLayout,
    ServerSecurity,
    provide_secrets,
)
from ironbook.adapters.nats.server import CLUSTER_FILE, LeafRemote, LocalNatsCluster, SiteOptions
from ironbook.adapters.netns import NamespaceNetwork, NodeNetwork
from ironbook.adapters.wan_relay import Route, format_routes
from ironbook.services import dr as dr_site
from ironbook.services import stretch as stretch_site
from ironbook.services.feed.processes import feed_processes
from ironbook.services.monitoring import (
    STARTED_LATER_JOBS,
    MonitoringStack,
    ScrapeTargets,
    StackPorts,
)
from ironbook.services.nats_identities import identities
from ironbook.services.process import LIVENESS_ENV, process_command
from ironbook.services.service_metrics import (
    CertificateMetrics,
    Sampled,
    SupervisorMetrics,
    serve_metrics,
)
from ironbook.services.status import STATUS_SUBJECT_ALL, ReplicaHeartbeat, decode_heartbeat
from ironbook.services.supervisor import ChildStatus, RestartPolicy, Supervisor
from ironbook.settings import BackupSettings, DrSettings, FeedSettings, MonitoringSettings

log = logging.getLogger("ironbook.local_cluster")

CLUSTER_CONFIG_FILE = "ironbook.json"
RUNTIME_FILE = "up.json"
PROVISION_TIMEOUT_MS = 60_000
SEAL_TIMEOUT_S = 5.0
"""How long a promotion tries to seal site A's streams (A may be gone)."""
CATCH_UP_TIMEOUT_S = 10.0
"""How long a promotion waits for site B's mirrors to copy what site A's
sealed streams hold, before it promotes them anyway."""


class ClusterConfigError(ValueError):
    """The data directory holds a cluster that differs from what was asked."""


class ClusterConfig(msgspec.Struct, frozen=True):
    partitions: int = 1
    replicas_per_partition: int = 3
    nats_nodes: int = 3


class ReplicaInfo(msgspec.Struct, frozen=True):
    node_id: str
    partition: int
    pid: int | None


class MonitoringInfo(msgspec.Struct, frozen=True):
    prometheus_url: str
    alertmanager_url: str
    console_url: str


class RuntimeInfo(msgspec.Struct, frozen=True):
    """`up.json`: how to reach a running cluster."""

    supervisor_pid: int
    nats_urls: list[str]
    partitions: int
    replicas: list[ReplicaInfo]
    started_at_ms: int
    children: list[ChildStatus] = msgspec.field(default_factory=list)
    """Every supervised process: pid, state (`gave_up`: a crash loop), restarts."""
    monitoring: MonitoringInfo | None = None
    secrets_dir: str | None = None
    """Where the cluster's credentials are (None: a plaintext cluster)."""

    def endpoint(self, identity: str = "ops") -> NatsEndpoint:
        """How an operator tool reaches this cluster (as `ops` by default)."""
        url = ",".join(self.nats_urls)
        if self.secrets_dir is None:
            return NatsEndpoint(url)
        return NatsEndpoint(url, NatsCredentials.load(Path(self.secrets_dir), identity))


def load_cluster_config(data_dir: Path, requested_partitions: int | None) -> ClusterConfig:
    """The data dir's cluster config, created on first use. Accounts are hashed
    to partitions, so the partition count of existing data cannot change."""
    path = data_dir / CLUSTER_CONFIG_FILE
    if path.exists():
        config = msgspec.json.decode(path.read_bytes(), type=ClusterConfig)
        if requested_partitions is not None and requested_partitions != config.partitions:
            raise ClusterConfigError(
                f"{data_dir} holds a cluster with {config.partitions} partition(s); "
                f"--partitions {requested_partitions} needs a new --data-dir"
            )
        return config
    if requested_partitions is not None and requested_partitions < 1:
        raise ClusterConfigError("--partitions must be at least 1")
    config = ClusterConfig(partitions=requested_partitions or 1)
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(config))
    return config


def _primary_of(data_dir: Path, dr: DrSettings | None) -> dr_site.PrimaryRecord:
    """The primary site; a data dir whose site B was promoted runs only as a DR pair."""
    primary = dr_site.read_primary(data_dir)
    if dr is None and primary.site != dr_site.SITE_A:
        raise ClusterConfigError(
            f"{data_dir}: site {primary.site} is primary (epoch {primary.epoch}); "
            "start it with --dr-site"
        )
    return primary


DrMode = Literal["mirror", "stretch"]


def _dr_mode_of(data_dir: Path, dr: DrSettings | None) -> DrMode | None:
    """The DR layout to run: the one asked for, which must be the one the
    data dir holds; a stretch cluster comes back as one without asking."""
    recorded_stretch = stretch_site.has_stretch(data_dir)
    if dr is None:
        return "stretch" if recorded_stretch else None
    if dr.mode == "mirror" and recorded_stretch:
        raise ClusterConfigError(
            f"{data_dir} holds a stretch cluster: start it with --dr-mode stretch "
            "(a mirror-mode DR site needs a new --data-dir)"
        )
    if dr.mode == "stretch" and not recorded_stretch:
        if dr_site.has_dr_site(data_dir):
            raise ClusterConfigError(
                f"{data_dir} holds a mirror-mode DR pair: --dr-mode stretch needs a new --data-dir"
            )
        if (data_dir / "nats" / CLUSTER_FILE).exists():
            raise ClusterConfigError(
                f"{data_dir} holds a cluster made without sites (its streams are placed "
                "regardless of sites): --dr-mode stretch needs a new --data-dir"
            )
    return dr.mode


def read_runtime(data_dir: Path) -> RuntimeInfo | None:
    path = data_dir / RUNTIME_FILE
    if not path.exists():
        return None
    return msgspec.json.decode(path.read_bytes(), type=RuntimeInfo)


def replica_node_id(partition: int, index: int) -> str:
    return f"p{partition}-r{index}"


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """HTTP gateway workers sharing one port (SO_REUSEPORT)."""

    port: int
    workers: int = 2
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    """`IRONBOOK_GATEWAY_*` overrides for every worker. Rate limits are for the
    whole host: each worker enforces 1/`workers` of them."""
    metrics_port: int | None = None
    """The workers' shared ops port for `/metrics` (on loopback); None: a free one."""


class LocalCluster:
    """NATS nodes plus replica processes, all supervised."""

    def __init__(
        self,
        data_dir: Path,
        *,
        partitions: int | None = None,
        gateway: GatewayOptions | None = None,
        network: NamespaceNetwork | None = None,
        feed: FeedSettings | None = None,
        backup: BackupSettings | None = None,
        config_file: Path | None = None,
        supervision: RestartPolicy | None = None,
        monitoring: MonitoringSettings | None = None,
        secure: bool = True,
        secrets_dir: Path | None = None,
        dr: DrSettings | None = None,
    ) -> None:
        """`config_file`: the settings file every child process reads too;
        `monitoring`: run the monitoring stack too, scraping every process;
        `secure`: mutual TLS and per-service identities, with the credentials
        in `secrets_dir` (default `<data_dir>/secrets`; missing ones are made);
        `dr`: a DR layout, as `dr.mode` says: mirror runs a DR site too (site
        B, `services/dr.py`) and serves from whichever site `dr/primary.json`
        names; stretch runs the cluster over three sites (`services/stretch.py`),
        as does a data dir made in stretch mode."""
        self.data_dir = data_dir.resolve()
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.config = load_cluster_config(self.data_dir, partitions)
        # Made before any process starts: the history projectors read its
        # public half, which the first replica would otherwise race to write.
        ledger_signing_key(self.data_dir)
        self._config_args = ["--config", str(config_file)] if config_file else []
        self.network = network
        """Node i (nats-server `n{i}` and replicas `p*-r{i}`) in namespace i of
        `network` (chaos partitions); None: everything on loopback."""
        placed = {name: self._node_network(name) for name in self._nats_names()} if network else {}
        self.feed = feed
        self.dr = dr
        self.dr_mode = _dr_mode_of(self.data_dir, dr)
        """mirror (a DR site B), stretch (one cluster over three sites) or None."""
        self.primary = _primary_of(self.data_dir, dr if self.dr_mode == "mirror" else None)
        self.secrets = (
            SecretsLayout((secrets_dir or self.data_dir / SECRETS_DIR).resolve())
            if secure
            else None
        )
        self._ports = PortLease()
        self.stretch = self._stretch_layout(dr, network) if self.dr_mode == "stretch" else None
        """The sites of a stretch cluster (docs/dr.md)."""
        self.nats = LocalNatsCluster(
            self.data_dir / "nats",
            size=self.config.nats_nodes,
            hosts={name: node.ip for name, node in placed.items()},
            launch_prefixes={name: node.prefix for name, node in placed.items()},
            security=(
                security := self._server_security(
                    {
                        **{
                            name: placed[name].ip if name in placed else LOOPBACK
                            for name in self._nats_names()
                        },
                        **{name: LOOPBACK for name in self._site_b_names()},
                    }
                )
            ),
            site=self._site_options(dr_site.SITE_A),
            stretch=None if self.stretch is None else self.stretch.placement,
        )
        self.child_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "IRONBOOK_NATS_SECURE": "true" if secure else "false",
            **(
                {"IRONBOOK_NATS_SECRETS_DIR": str(self.secrets.root)}
                if self.secrets is not None
                else {}
            ),
        }
        """The environment of every child process: with it, each connects as
        its kind's identity."""
        self.supervisor = Supervisor(supervision)
        self.supervisor.on_change = self.write_runtime
        self.operations = asyncio.Lock()
        """Held by an operator's request (drain, rolling restart, DR
        promotion) and by a remediation while it acts: one at a time, so a
        remediation never restarts what maintenance is moving."""
        self._started_at_ms = time.time_ns() // 1_000_000
        self.targets = ScrapeTargets()
        """What Prometheus scrapes, when monitoring (every process that has metrics)."""
        self.supervisor_metrics_port: int | None = None
        if monitoring is not None:
            self.supervisor_metrics_port = self._metrics_port("ironbook-supervisor", "supervisor")
        for name, node in self.nats.nodes.items():
            self.supervisor.add(
                f"nats-{name}",
                node.process,
                lambda name=name: self.nats.start_node(name, wait=False),  # type: ignore[misc]
            )
        self.site_b: LocalNatsCluster | None
        """Site B's NATS nodes, with a DR site (docs/dr.md)."""
        self.relay: ManagedProcess | None
        """The WAN relay, the only path between the sites."""
        self._link: LeafRemote | None = None
        """Site B's leafnode link to site A, through the relay."""
        self.site_b, self.relay = self._dr_processes(dr, security)
        self.primary_url = (
            self.site_b.url
            if self.site_b is not None and self.primary.site == dr_site.SITE_B
            else self.nats.url
        )
        """The URLs of the primary site's servers: every service connects there."""
        self.replicas: dict[str, ManagedProcess] = {}
        for partition in range(self.config.partitions):
            for index in range(1, self.config.replicas_per_partition + 1):
                node_id = replica_node_id(partition, index)
                process = ManagedProcess(
                    node_id,
                    [
                        *(self._node_network(node_id).prefix if network else ()),
                        *process_command("replica", self._config_args),
                        "--nats",
                        self._replica_url(node_id),
                        "--partition",
                        str(partition),
                        "--node-id",
                        node_id,
                        "--data-dir",
                        str(self.data_dir),
                        "--replicas",
                        str(min(3, self.config.nats_nodes)),
                        *self._replica_metrics_args(monitoring, node_id, partition),
                    ],
                    log_path=self.data_dir / "logs" / f"{node_id}.log",
                    env=self.child_env,
                )
                self.replicas[node_id] = process
                self._supervise(node_id, process)
        self.audit = ManagedProcess(
            "audit-verifier",
            [
                *process_command("audit-verifier", self._config_args),
                "--nats",
                self.primary_url,
                "--data-dir",
                str(self.data_dir),
                *(
                    ["--port", str(self._metrics_port("ironbook-audit-verifier", "audit-verifier"))]
                    if monitoring is not None
                    else []
                ),
            ],
            log_path=self.data_dir / "logs" / "audit-verifier.log",
            env=self.child_env,
        )
        self.recorder = ManagedProcess(
            "audit-events",
            [
                *process_command("audit-events", self._config_args),
                "--nats",
                self.primary_url,
                "--data-dir",
                str(self.data_dir),
                "--partitions",
                str(self.config.partitions),
                "--replicas",
                str(min(3, self.config.nats_nodes)),
            ],
            log_path=self.data_dir / "logs" / "audit-events.log",
            env=self.child_env,
        )
        """The independent checkpoint verifier and the significant-event
        recorder (docs/audit.md)."""
        for process in (self.audit, self.recorder):
            self._supervise(process.name, process)
        self.gateway = gateway
        self.gateway_metrics_port: int | None = None
        """Where the gateway workers serve `/metrics` (127.0.0.1)."""
        self.gateways: dict[str, ManagedProcess] = {}
        """HTTP workers and the history projectors that serve them."""
        if gateway is not None:
            self._add_gateways(gateway, monitoring)
        self.feeds: dict[str, ManagedProcess] = {}
        """The odds feed: simulator, ingester, settlement (docs/feed.md)."""
        if feed is not None:
            metrics_ports = {}
            if monitoring is not None:
                names = [*(["feed-sim"] if feed.source == "sim" else []), "feed-ingest"]
                for name in names:
                    metrics_ports[name] = self._metrics_port("ironbook-feed", name)
                metrics_ports["feed-settle"] = self._metrics_port(
                    "ironbook-settlement", "feed-settle"
                )
            self.feeds = self.feed_processes(feed, metrics_ports)
            for name, process in self.feeds.items():
                self._supervise(name, process)
        self.backup: ManagedProcess | None = None
        """Scheduled backups (docs/backup.md)."""
        if backup is not None and backup.to is not None:
            self.backup = self._backup_process(backup.to, backup.every_s)
            self._supervise("backup", self.backup)
        self.monitoring: MonitoringStack | None = None
        """Prometheus, Alertmanager, node_exporter, the NATS collector, the alert receiver."""
        if monitoring is not None:
            self.monitoring = self._monitoring_stack(monitoring)
            for name, process in self.monitoring.processes.items():
                self.supervisor.add(name, process, process.start)

    def _site_b_names(self) -> list[str]:
        if self.dr_mode != "mirror":
            return []
        return [f"b{index}" for index in range(1, self.config.nats_nodes + 1)]

    def _site_options(self, site: dr_site.Site) -> SiteOptions | None:
        """One site of a DR pair: site A (domain `a`) takes the link, site B
        (domain `b`) dials it through the relay; whichever is not primary is
        fenced: no identity may publish to the ledger or the checkpoints."""
        if self.dr_mode != "mirror":
            return None
        deny = dr_site.FENCED_SUBJECTS if self.primary.site != site else ()
        if site == dr_site.SITE_A:
            return SiteOptions(domain=dr_site.SITE_A, leaf_listen=True, publish_deny=deny)
        return SiteOptions(domain=dr_site.SITE_B, leaf_remote=self._link, publish_deny=deny)

    def _dr_processes(
        self, dr: DrSettings | None, security: ServerSecurity | None
    ) -> tuple[LocalNatsCluster | None, ManagedProcess | None]:
        """Site B and the relay (mirror mode), the relay alone (stretch), or neither."""
        if self.stretch is not None:
            return None, self._stretch_relay(self.stretch)
        if dr is not None and self.dr_mode == "mirror":
            return self._dr_site(dr, security)
        return None, None

    def _dr_site(
        self, dr: DrSettings, security: ServerSecurity | None
    ) -> tuple[LocalNatsCluster, ManagedProcess]:
        """Site B's nodes and the relay, supervised; the relay's ports are
        kept in `dr/site.json` like the nodes' in their `cluster.json`."""
        if dr_site.has_dr_site(self.data_dir):
            layout = dr_site.read_site(self.data_dir)
            for port in layout.relay_ports:
                self._ports.hold(port)
            ports = layout.relay_ports
        else:
            ports = self._ports.take(self.config.nats_nodes)
        layout = dr_site.SiteLayout(
            wan_rtt_ms=dr.wan_rtt_ms, relay_ports=ports, streams=self.mirrored_streams
        )
        dr_site.write_site(self.data_dir, layout)
        routes = [
            Route(LOOPBACK, port, node.host, node.ports.leaf)
            for port, node in zip(layout.relay_ports, self.nats.nodes.values(), strict=True)
        ]
        self._link = LeafRemote(
            tuple(f"nats-leaf://{LOOPBACK}:{port}" for port in layout.relay_ports),
            dr_site.LINK_IDENTITY if security is not None else None,
        )
        site_b = LocalNatsCluster(
            dr_site.dr_dir(self.data_dir) / "nats",
            size=self.config.nats_nodes,
            cluster_name=dr_site.SITE_B_CLUSTER,
            node_prefix="b",
            security=security,
            site=self._site_options(dr_site.SITE_B),
        )
        for name, node in site_b.nodes.items():
            self.supervisor.add(
                f"nats-{name}",
                node.process,
                lambda name=name: site_b.start_node(name, wait=False),  # type: ignore[misc]
            )
        return site_b, self._relay_process(routes, dr.wan_rtt_ms)

    def _relay_process(self, routes: list[Route], wan_rtt_ms: int) -> ManagedProcess:
        """The WAN relay carrying `routes`, supervised."""
        relay = ManagedProcess(
            "wan-relay",
            [
                *process_command("wan-relay", self._config_args),
                "--routes",
                format_routes(routes),
                "--wan-rtt-ms",
                str(wan_rtt_ms),
            ],
            log_path=self.data_dir / "logs" / "wan-relay.log",
            env=self.child_env,
        )
        self._supervise("wan-relay", relay)
        return relay

    def _stretch_layout(
        self, dr: DrSettings | None, network: NamespaceNetwork | None
    ) -> stretch_site.StretchLayout:
        """The sites, kept in `dr/stretch.json` (made on first use): the
        relay ports are held like the nodes' own."""
        if network is not None:
            raise ClusterConfigError("stretch mode runs on loopback, not in network namespaces")
        if self.secrets is None:
            raise ClusterConfigError(
                "stretch mode needs a secured cluster: its routes carry every ledger append "
                "between sites, and they run mutual TLS only on a secured cluster"
            )
        if stretch_site.has_stretch(self.data_dir):
            layout = stretch_site.read_stretch(self.data_dir)
            for port in layout.relay_ports.values():
                self._ports.hold(port)
            if dr is not None and dr.wan_rtt_ms != layout.wan_rtt_ms:
                layout = msgspec.structs.replace(layout, wan_rtt_ms=dr.wan_rtt_ms)
        else:
            assert dr is not None
            names = self._nats_names()
            try:
                layout = stretch_site.new_layout(names, self._ports.take(len(names)), dr.wan_rtt_ms)
            except dr_site.DrError as err:
                raise ClusterConfigError(str(err)) from None
        stretch_site.write_stretch(self.data_dir, layout)
        return layout

    def _stretch_relay(self, layout: stretch_site.StretchLayout) -> ManagedProcess:
        """One relay route in front of each node's route port: every route
        between two sites crosses the WAN."""
        routes = [
            Route(LOOPBACK, layout.relay_ports[name], node.host, node.ports.cluster)
            for name, node in self.nats.nodes.items()
        ]
        return self._relay_process(routes, layout.wan_rtt_ms)

    def _replica_url(self, node_id: str) -> str:
        """Where a replica connects: in stretch mode its own site's node only."""
        if self.stretch is None:
            return self.primary_url
        return self.nats.nodes[f"n{self.node_of(node_id)}"].url

    def _backup_process(self, to: str, every_s: int) -> ManagedProcess:
        return ManagedProcess(
            "backup",
            [
                *process_command("backup", self._config_args),
                "--nats",
                self.primary_url,
                "--partitions",
                str(self.config.partitions),
                "--data-dir",
                str(self.data_dir),
                "--replicas",
                str(min(3, self.config.nats_nodes)),
                "--to",
                to,
                "--every-s",
                str(every_s),
            ],
            log_path=self.data_dir / "logs" / "backup.log",
            env=self.child_env,
        )

    def _metrics_port(self, job: str, name: str, host: str = LOOPBACK, **labels: str) -> int:
        """A free port for `name`'s `/metrics` on `host`, scraped as `job`."""
        (port,) = self._ports.take(1)
        self.targets.add(job, f"{host}:{port}", name=name, **labels)
        return port

    def _metrics_args(
        self, monitoring: MonitoringSettings | None, job: str, name: str, **labels: str
    ) -> list[str]:
        if monitoring is None:
            return []
        return ["--metrics-port", str(self._metrics_port(job, name, **labels))]

    def _replica_metrics_args(
        self, monitoring: MonitoringSettings | None, node_id: str, partition: int
    ) -> list[str]:
        """A replica in a network namespace serves `/metrics` on its node's
        address, so that Prometheus reaches it (and loses it when the node is
        cut off, as it should)."""
        if monitoring is None:
            return []
        host = self._node_network(node_id).ip if self.network is not None else LOOPBACK
        port = self._metrics_port(
            "ironbook-replica",
            node_id,
            host,
            partition=str(partition),
            node=str(self.node_of(node_id)),
        )
        return ["--metrics-host", host, "--metrics-port", str(port)]

    def _monitoring_stack(self, settings: MonitoringSettings) -> MonitoringStack:
        def port(configured: int) -> int:
            if configured:
                return configured
            (taken,) = self._ports.take(1)
            return taken

        stack = MonitoringStack(
            self.data_dir,
            settings,
            StackPorts(
                prometheus=port(settings.prometheus_port),
                alertmanager=port(settings.alertmanager_port),
                node_exporter=port(settings.node_exporter_port),
                ops=port(settings.ops_port),
                nats_exporter=port(0),
            ),
            nats_url=self.primary_url,
            nats_servers={
                **{
                    f"{node.host}:{node.ports.http}": (name, str(self.node_of(name)))
                    for name, node in self.nats.nodes.items()
                },
                # Site B's servers are nodes of their own (mirror lag is theirs).
                **{
                    f"{node.host}:{node.ports.http}": (name, name)
                    for name, node in (self.site_b.nodes.items() if self.site_b else ())
                },
            },
            config_args=self._config_args,
            logs_dir=self.data_dir / "logs",
            env=self.child_env,
        )
        if self.gateway is not None:
            # Any worker answers for all the workers of the host, on the ops port.
            self.targets.add(
                "ironbook-gateway", f"{LOOPBACK}:{self.gateway_metrics_port}", name="gateway"
            )
        stack.add_own_targets(self.targets)
        return stack

    def _wait_metrics_listening(self, timeout_ms: int) -> None:
        """Until every child's `/metrics` port takes connections (bounded):
        Prometheus starting before them would see the cluster's own start as
        processes down, and page."""
        addresses = [
            target.address
            for job, members in self.targets.jobs.items()
            if job not in STARTED_LATER_JOBS
            for target in members
        ]
        deadline = time.monotonic() + timeout_ms / 1000
        for address in addresses:
            host, port = address.rsplit(":", 1)
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((host, int(port)), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.1)

    async def serve_supervisor_metrics(self) -> asyncio.Server | None:
        """With monitoring: the supervisor's `/metrics` (restarts per child,
        and the certificates' expiry when the cluster runs TLS), served from
        this process until the server is closed."""
        if self.supervisor_metrics_port is None:
            return None
        collectors: list[Sampled] = [SupervisorMetrics(self.supervisor)]
        if self.secrets is not None:
            collectors.append(CertificateMetrics(self.secrets))
        return await serve_metrics(collectors, LOOPBACK, self.supervisor_metrics_port)

    def _add_gateways(self, options: GatewayOptions, monitoring: MonitoringSettings | None) -> None:
        if options.metrics_port is None:
            self.gateway_metrics_port = self._ports.take(1)[0]
        else:
            self.gateway_metrics_port = options.metrics_port
        metrics_dir = self.data_dir / "gateway" / "metrics"
        env = {
            **self.child_env,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            **options.env,
        }
        for index in range(1, options.workers + 1):
            name = f"gw-{index}"
            process = ManagedProcess(
                name,
                [
                    *process_command("gateway", self._config_args),
                    "--nats",
                    self.primary_url,
                    "--partitions",
                    str(self.config.partitions),
                    "--host",
                    options.host,
                    "--port",
                    str(options.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--worker-id",
                    name,
                    "--worker-count",
                    str(options.workers),
                    "--metrics-port",
                    str(self.gateway_metrics_port),
                    "--nats-replicas",
                    str(min(3, self.config.nats_nodes)),
                ],
                log_path=self.data_dir / "logs" / f"{name}.log",
                env=env,
            )
            self.gateways[name] = process
            self._supervise(name, process)
        for partition in range(self.config.partitions):
            name = f"history-p{partition}"
            process = ManagedProcess(
                name,
                [
                    *process_command("history", self._config_args),
                    "--nats",
                    self.primary_url,
                    "--partition",
                    str(partition),
                    "--db",
                    str(self.data_dir / "history" / f"p{partition}.sqlite"),
                    "--data-dir",
                    str(self.data_dir),
                    *self._metrics_args(
                        monitoring, "ironbook-history", name, partition=str(partition)
                    ),
                ],
                log_path=self.data_dir / "logs" / f"{name}.log",
                env=self.child_env,
            )
            self.gateways[name] = process
            self._supervise(name, process)

    def _supervise(self, name: str, process: ManagedProcess) -> None:
        """An ironbook process, watched for exits and for silence."""
        liveness = self.data_dir / "run" / f"{name}.alive"
        process.set_env(LIVENESS_ENV, str(liveness))
        self.supervisor.add(name, process, process.start, liveness=liveness)

    def _server_security(self, hosts: dict[str, str]) -> ServerSecurity | None:
        if self.secrets is None:
            return None
        allowed = self._identities()
        keys = provide_secrets(
            self.secrets, identities=allowed, servers={name: [host] for name, host in hosts.items()}
        )
        return ServerSecurity(
            self.secrets,
            {identity: (keys[identity], permissions) for identity, permissions in allowed.items()},
        )

    def _identities(self) -> dict[str, Permissions]:
        """Every identity of the cluster with what it may do on NATS."""
        producers = [self.feed.producer] if self.feed is not None else []
        allowed = identities(self.config.partitions, producers)
        if self.dr_mode == "mirror":
            allowed[dr_site.LINK_IDENTITY] = dr_site.link_permissions(self.mirrored_streams)
        return allowed

    def credentials(self, identity: str) -> NatsCredentials | None:
        """What `identity` connects with (None on a plaintext cluster)."""
        if self.secrets is None:
            return None
        return NatsCredentials.load(self.secrets.root, identity)

    def endpoint(self, identity: str = "ops") -> NatsEndpoint:
        """The cluster as `identity` reaches it; `ops` for tests and tools."""
        return NatsEndpoint(self.primary_url, self.credentials(identity))

    @property
    def ops(self) -> NatsEndpoint:
        return self.endpoint("ops")

    def feed_processes(
        self, feed: FeedSettings, metrics_ports: dict[str, int] | None = None
    ) -> dict[str, ManagedProcess]:
        """The feed's processes for `feed`'s producer, with this cluster's
        environment and settings (its identities, when secured), not yet
        started nor supervised. A producer other than the cluster's own has
        no stream until one is made for it: only in a plaintext cluster do
        its processes make it themselves."""
        return feed_processes(
            feed,
            nats_url=self.primary_url,
            partitions=self.config.partitions,
            replicas=min(3, self.config.nats_nodes),
            logs_dir=self.data_dir / "logs",
            config_args=self._config_args,
            metrics_ports=metrics_ports,
            env=self.child_env,
        )

    def provision(self, timeout_ms: int = PROVISION_TIMEOUT_MS, url: str | None = None) -> None:
        """Create every stream, bucket and object store the services use,
        as `ops` (no service may create them), in a process of its own, on
        the primary site or the servers at `url`."""
        feed = ["--feed", "none"]
        if self.feed is not None:
            feed = ["--feed", self.feed.source, "--producer", self.feed.producer]
        command = [
            *process_command("provision", self._config_args),
            "--nats",
            url or self.primary_url,
            "--partitions",
            str(self.config.partitions),
            "--replicas",
            str(min(3, self.config.nats_nodes)),
            *feed,
        ]
        done = subprocess.run(
            command,
            env=self.child_env,
            capture_output=True,
            text=True,
            timeout=timeout_ms / 1000,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"provisioning failed ({done.returncode}):\n{done.stderr[-4000:]}")

    @property
    def mirrored_streams(self) -> list[str]:
        """The streams a DR site mirrors."""
        producers = [self.feed.producer] if self.feed is not None else []
        return dr_site.mirrored_streams(self.config.partitions, producers)

    def _nats_names(self) -> list[str]:
        return [f"n{index}" for index in range(1, self.config.nats_nodes + 1)]

    def node_of(self, name: str) -> int:
        """The node (1-based) that nats-server `n{i}` or replica `p*-r{i}`
        belongs to: i, wrapping around when there are more replicas than nodes."""
        index = int(name.rsplit("-r", 1)[1] if "-r" in name else name[1:])
        return (index - 1) % self.config.nats_nodes + 1

    def _node_network(self, name: str) -> NodeNetwork:
        assert self.network is not None
        return self.network.node(self.node_of(name))

    @property
    def http_url(self) -> str | None:
        if self.gateway is None:
            return None
        return f"http://{self.gateway.host}:{self.gateway.port}"

    @property
    def gateway_metrics_url(self) -> str | None:
        """The gateway workers' `/metrics` (any worker answers for all)."""
        if self.gateway_metrics_port is None:
            return None
        return f"http://127.0.0.1:{self.gateway_metrics_port}/metrics"

    @property
    def nats_url(self) -> str:
        """The primary site's servers."""
        return self.primary_url

    @property
    def partitions(self) -> int:
        return self.config.partitions

    def replica_ids(self, partition: int) -> list[str]:
        return [
            replica_node_id(partition, index)
            for index in range(1, self.config.replicas_per_partition + 1)
        ]

    def start(self, timeout_ms: int = 60_000) -> None:
        """Start NATS, wait for it to be healthy, provision its streams,
        then start the replicas and the other services."""
        self._start_nats(timeout_ms)
        for process in self.replicas.values():
            if not process.is_running():
                process.start()
        for process in (self.audit, self.recorder):
            if not process.is_running():
                process.start()
        if self.gateways:
            metrics_dir = self.data_dir / "gateway" / "metrics"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            for process in self.gateways.values():
                if not process.is_running():
                    process.start()
        for process in self.feeds.values():
            if not process.is_running():
                process.start()
        if self.backup is not None and not self.backup.is_running():
            self.backup.start()
        if self.monitoring is not None:
            self.monitoring.write_configs(self.targets)
            self._wait_metrics_listening(timeout_ms)
            for process in self.monitoring.processes.values():
                if not process.is_running():
                    process.start()
        self.write_runtime()

    def _start_nats(self, timeout_ms: int) -> None:
        """The relay first (a stretch cluster's routes go through it), the
        servers, then the streams (and site B's, with a DR site)."""
        if self.relay is not None and not self.relay.is_running():
            self.relay.start()
        self.nats.start(timeout_ms=timeout_ms)
        if self.site_b is not None:
            self.start_site_b(timeout_ms)
        else:
            self.provision()

    def start_site_b(self, timeout_ms: int) -> None:
        """Site B and the relay; then, in the first epoch, site A
        provisioned, mirrored on B, and B provisioned with what is not
        mirrored (so that a promotion need not); after a promotion or a
        failback (`primary.json` names a later epoch), the other site's
        streams sealed where it answers (a mirror is never sealed: after a
        failback, B mirrors A again), the primary's mirrors promoted if that
        was left undone, and the primary provisioned."""
        assert self.site_b is not None and self.relay is not None
        if not self.relay.is_running():
            self.relay.start()
        self.site_b.start(timeout_ms=timeout_ms)
        if self.primary.site == dr_site.SITE_A and self.primary.epoch == 1:
            self.provision()
            asyncio.run(
                dr_site.ensure_mirrors(
                    self.site_endpoint(dr_site.SITE_A),
                    self.site_endpoint(dr_site.SITE_B),
                    self.mirrored_streams,
                    dr_site.SITE_A,
                    log.info,
                )
            )
            # Provisioning keeps the mirrors.
            self.provision(url=self.site_b.url)
        else:
            asyncio.run(self._finish_promotion())
            self.provision()

    async def _finish_promotion(self) -> None:
        """A later epoch as this starts: what its promotion or failback may
        not have done yet (recorded with no `up` running, or stopped half
        way), done now; nothing where it was done."""
        sealed, missing, _ = await self.promote_streams()
        await dr_site.start_audit_epoch(
            self.site_endpoint(self.primary.site),
            self.data_dir,
            self.partitions,
            self.primary,
            sealed=sealed,
            missing=missing,
        )

    async def promote_streams(
        self, catch_up_timeout_s: float = CATCH_UP_TIMEOUT_S
    ) -> tuple[list[str], dict[str, int], list[str]]:
        """Seal the streams of the site that is not primary where it answers
        (bounded), let the primary's mirrors copy what the sealed ones hold
        (bounded), promote them, and start the primary's leadership terms
        above every term in its logs (`dr.lift_terms`); (sealed, entries
        still missing per stream, promoted)."""
        primary = self.primary.site
        other = dr_site.other_site(primary)
        origin, promoted_site = self.site_endpoint(other), self.site_endpoint(primary)
        sealed = []
        if self.site_cluster(other).running_nodes():  # else it is gone: nothing to seal now
            sealed = await dr_site.seal_site(origin, self.mirrored_streams, SEAL_TIMEOUT_S)
        missing = await dr_site.wait_caught_up(origin, promoted_site, sealed, catch_up_timeout_s)
        promoted = await dr_site.promote_mirrors(promoted_site, self.mirrored_streams)
        await dr_site.lift_terms(promoted_site, self.config.partitions)
        return sealed, missing, promoted

    def site_cluster(self, site: dr_site.Site) -> LocalNatsCluster:
        """Site `site`'s NATS nodes (`a`: the cluster's own; `b`: the DR site's)."""
        if site == dr_site.SITE_B:
            if self.site_b is None:
                raise dr_site.DrError("this cluster has no DR site")
            return self.site_b
        return self.nats

    def site_endpoint(self, site: dr_site.Site, identity: str = "ops") -> NatsEndpoint:
        """Site `site` (`a`, or `b` of a DR pair) as `identity` reaches it."""
        if site == dr_site.SITE_B:
            return NatsEndpoint(self.site_cluster(site).url, self.credentials(identity))
        return NatsEndpoint(self.nats.url, self.credentials(identity))

    def apply_fence(self) -> list[str]:
        """Every server of the pair reconfigured for `primary`: on the site
        that is not primary nobody may publish to the ledger or the
        checkpoints, on the primary the fence is lifted; the other site's
        servers first. Running servers reload (and so does every later start:
        its config is rendered from `primary.json`); the names reloaded."""
        primary = self.primary.site
        reloaded = []
        for site in (dr_site.other_site(primary), primary):
            options = self._site_options(site)
            assert options is not None
            reloaded += self.site_cluster(site).reconfigure(options)
        return reloaded

    def service_processes(self) -> dict[str, ManagedProcess]:
        """Every supervised process that connects to the primary site."""
        found = {
            **self.replicas,
            self.audit.name: self.audit,
            self.recorder.name: self.recorder,
            **self.gateways,
            **self.feeds,
        }
        if self.backup is not None:
            found["backup"] = self.backup
        if self.monitoring is not None:
            found["alert-receiver"] = self.monitoring.processes["alert-receiver"]
        return found

    def point_services_at(self, url: str) -> None:
        """From their next start on, the services connect to `url`."""
        for process in self.service_processes().values():
            process.argv = [url if arg == self.primary_url else arg for arg in process.argv]
        self.primary_url = url

    def write_runtime(self) -> None:
        info = RuntimeInfo(
            supervisor_pid=os.getpid(),
            nats_urls=self.primary_url.split(","),
            partitions=self.config.partitions,
            replicas=[
                ReplicaInfo(node_id=node_id, partition=int(node_id[1:].split("-")[0]), pid=p.pid)
                for node_id, p in self.replicas.items()
            ],
            started_at_ms=self._started_at_ms,
            children=self.supervisor.statuses(),
            monitoring=None
            if self.monitoring is None
            else MonitoringInfo(
                prometheus_url=self.monitoring.prometheus_url,
                alertmanager_url=self.monitoring.alertmanager_url,
                console_url=self.monitoring.console_url,
            ),
            secrets_dir=None if self.secrets is None else str(self.secrets.root),
        )
        path = self.data_dir / RUNTIME_FILE
        partial = path.with_suffix(".json.partial")
        partial.write_bytes(msgspec.json.encode(info))
        partial.replace(path)

    def stop(self, timeout_ms: int = 15_000) -> None:
        """Graceful: the monitoring stack (so that the shutdown pages no one),
        the backup, the feed, gateways, then replicas (a leader hands its
        lease over), then NATS."""
        monitoring = self.monitoring.processes.values() if self.monitoring else ()
        for process in monitoring:
            process.terminate()
        for process in monitoring:
            process.stop(timeout_ms=timeout_ms)
        if self.backup is not None:
            self.backup.stop(timeout_ms=timeout_ms)
        for process in self.feeds.values():
            process.terminate()
        for process in self.feeds.values():
            process.stop(timeout_ms=timeout_ms)
        for process in self.gateways.values():
            process.terminate()
        for process in self.gateways.values():
            process.stop(timeout_ms=timeout_ms)
        for process in (self.audit, self.recorder):
            process.terminate()
            process.stop(timeout_ms=timeout_ms)
        for process in self.replicas.values():
            process.terminate()
        for process in self.replicas.values():
            process.stop(timeout_ms=timeout_ms)
        if self.site_b is not None:
            self.site_b.close()
        self.nats.close()
        if self.relay is not None:
            self.relay.stop(timeout_ms=timeout_ms)
        self._ports.release()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / RUNTIME_FILE).unlink()

    async def wait_leaders(self, timeout_ms: int = 60_000) -> dict[int, ReplicaHeartbeat]:
        """Wait until every partition has a replica heartbeating as leader."""
        return await wait_for_leaders(self.ops, self.config.partitions, timeout_ms=timeout_ms)


async def collect_heartbeats(nats: NatsEndpoint, listen_ms: int) -> dict[str, ReplicaHeartbeat]:
    """The newest heartbeat of every replica heard within `listen_ms`."""
    nc = await nats.connect("ironbook-status")
    heard: dict[str, ReplicaHeartbeat] = {}
    try:

        async def on_msg(msg: object) -> None:
            data = getattr(msg, "data", b"")
            with contextlib.suppress(msgspec.MsgspecError):
                beat = decode_heartbeat(data)
                heard[beat.node_id] = beat

        subscription = await nc.subscribe(STATUS_SUBJECT_ALL, cb=on_msg)
        await asyncio.sleep(listen_ms / 1000)
        await subscription.unsubscribe()
    finally:
        await nc.close()
    return heard


async def wait_for_leaders(
    nats: NatsEndpoint, partitions: int, *, timeout_ms: int = 60_000, not_node: str | None = None
) -> dict[int, ReplicaHeartbeat]:
    """Heartbeats of one leader per partition (fresh ones only)."""
    deadline = time.monotonic() + timeout_ms / 1000
    nc = await nats.connect("ironbook-wait-leaders")
    leaders: dict[int, ReplicaHeartbeat] = {}
    try:

        async def on_msg(msg: object) -> None:
            with contextlib.suppress(msgspec.MsgspecError):
                beat = decode_heartbeat(getattr(msg, "data", b""))
                if beat.role == "leader" and beat.node_id != not_node:
                    leaders[beat.partition] = beat

        subscription = await nc.subscribe(STATUS_SUBJECT_ALL, cb=on_msg)
        while len(leaders) < partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no leader within {timeout_ms} ms for partitions "
                    f"{sorted(set(range(partitions)) - set(leaders))}"
                )
            await asyncio.sleep(0.05)
        await subscription.unsubscribe()
    finally:
        await nc.close()
    return leaders
