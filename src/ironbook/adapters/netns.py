"""One Linux network namespace per cluster node, joined by veth pairs to one
bridge: the plumbing behind the `partition` and `latency` chaos faults.

    network = NamespaceNetwork.create(nodes=3)   # needs root and `ip`
    try:
        node = network.node(1)    # NodeNetwork(ip="10.213.7.11", prefix=["ip", "netns", ...])
        network.cut(1)            # node 1 cut off from the bridge (and the host)
        network.heal(1)
    finally:
        network.destroy()

Layout of one run (every name carries the run's prefix `ibk<id>`, so that
runs never collide and leftovers are recognisable; Linux interface names are
at most 15 characters):

    host (root namespace)             bridge ibk<id>br, 10.A.B.1/24
      ibk<id>h1 ── veth ── ibk<id>p1  in namespace ibk<id>n1, 10.A.B.11/24
      ibk<id>h2 ── veth ── ibk<id>p2  in namespace ibk<id>n2, 10.A.B.12/24
      ...

Traffic stays between the namespaces the run made and the host's bridge
address (no route out, no forwarding). A partition sets the host-side veth of
one node down (its namespace keeps its own loopback, so the processes inside
still reach each other); latency is a `tc netem` delay on both ends of one
node's veth pair. Where the kernel has no `sch_netem` (some minimal kernels),
latency falls back to a `tbf` rate limit whose queue delays packets: a slow,
congested link rather than a fixed delay, and the fault says which it used.

Commands are plain argv lists built by pure functions (`plan_*`), so tests can
check what would run without root. `cleanup_leftovers()` removes what runs
whose owner process died (kill -9, power cut) left behind; a live run is
also torn down by `atexit` if its owner forgets.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import random
import re
import shutil
import string
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import msgspec

from ironbook.adapters.procfs import pid_alive

PREFIX = "ibk"
"""Every namespace and interface of every run starts with this."""
RUN_ID_LENGTH = 5
STATE_DIR = Path("/run/ironbook-netns")
"""One JSON file per live run: its owner PID and its names."""
HOST_OCTET = 1
NODE_OCTET_BASE = 10
MAX_NODES = 9
"""Names end with one digit per node."""
COMMAND_TIMEOUT_S = 20.0
SLOW_LINK_RATE_KBIT = 2_000
"""The `tbf` fallback's rate: far below what a node's replication traffic
needs under the chaos workload, so packets queue (and some drop)."""

_NAME_RE = re.compile(rf"^{PREFIX}([a-z0-9]{{{RUN_ID_LENGTH}}})(?:br|[hpn][1-9])$")


class NetnsError(RuntimeError):
    """A namespace command failed (its stderr is in the message)."""


class NetnsUnavailable(NetnsError):
    """Namespaces cannot be made here (not root, no `ip`): a reason to skip."""


@dataclass(frozen=True, slots=True)
class NodeNetwork:
    """How to place one node's processes: its address and the argv prefix
    that runs a command inside its namespace (`ip netns exec` execs, so the
    process keeps the PID it was started with)."""

    index: int
    ip: str
    namespace: str
    host_veth: str
    peer_veth: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]


@dataclass(frozen=True, slots=True)
class Layout:
    run_id: str
    subnet: str
    """A /24, e.g. `10.213.7.0/24`."""
    nodes: int

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.run_id}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def host_ip(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[HOST_OCTET])

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def node(self, index: int) -> NodeNetwork:
        if not 1 <= index <= self.nodes:
            raise ValueError(f"node {index} is not in 1..{self.nodes}")
        return NodeNetwork(
            index=index,
            ip=str(ipaddress.ip_network(self.subnet)[NODE_OCTET_BASE + index]),
            namespace=f"{self.prefix}n{index}",
            host_veth=f"{self.prefix}h{index}",
            peer_veth=f"{self.prefix}p{index}",
        )

    def all_nodes(self) -> list[NodeNetwork]:
        return [self.node(index) for index in range(1, self.nodes + 1)]


class _State(msgspec.Struct, frozen=True):
    owner_pid: int
    run_id: str
    subnet: str
    nodes: int


# -- the commands (pure) ----------------------------------------------------


def plan_create(layout: Layout) -> list[list[str]]:
    """Bridge with the host's address, then per node: namespace, veth pair,
    peer moved in and addressed, both ends and the namespace's loopback up."""
    bridge = layout.bridge
    commands = [
        ["ip", "link", "add", bridge, "type", "bridge"],
        ["ip", "addr", "add", f"{layout.host_ip}/{layout.prefix_len}", "dev", bridge],
        ["ip", "link", "set", bridge, "up"],
    ]
    for node in layout.all_nodes():
        in_ns = node.prefix
        commands += [
            ["ip", "netns", "add", node.namespace],
            ["ip", "link", "add", node.host_veth, "type", "veth", "peer", "name", node.peer_veth],
            ["ip", "link", "set", node.peer_veth, "netns", node.namespace],
            ["ip", "link", "set", node.host_veth, "master", bridge],
            ["ip", "link", "set", node.host_veth, "up"],
            [*in_ns, "ip", "addr", "add", f"{node.ip}/{layout.prefix_len}", "dev", node.peer_veth],
            [*in_ns, "ip", "link", "set", node.peer_veth, "up"],
            [*in_ns, "ip", "link", "set", "lo", "up"],
        ]
    return commands


def plan_destroy(layout: Layout) -> list[list[str]]:
    """Deleting the host end of a veth pair deletes both ends."""
    commands = [["ip", "link", "del", node.host_veth] for node in layout.all_nodes()]
    commands += [["ip", "netns", "del", node.namespace] for node in layout.all_nodes()]
    commands.append(["ip", "link", "del", layout.bridge])
    return commands


def plan_cut(node: NodeNetwork) -> list[list[str]]:
    return [["ip", "link", "set", node.host_veth, "down"]]


def plan_heal(node: NodeNetwork) -> list[list[str]]:
    return [["ip", "link", "set", node.host_veth, "up"]]


def plan_netem_delay(node: NodeNetwork, delay_ms: int, jitter_ms: int) -> list[list[str]]:
    """A delay on both directions: the host end delays what goes into the
    namespace, the peer end what comes out of it."""
    netem = ["netem", "delay", f"{delay_ms}ms", f"{jitter_ms}ms"]
    return [
        ["tc", "qdisc", "replace", "dev", node.host_veth, "root", *netem],
        [*node.prefix, "tc", "qdisc", "replace", "dev", node.peer_veth, "root", *netem],
    ]


def plan_slow_link(node: NodeNetwork, rate_kbit: int, max_queue_ms: int) -> list[list[str]]:
    """Without netem: a token bucket that queues packets (up to `max_queue_ms`
    of them, dropping beyond) on both ends of the node's link."""
    burst_bytes = max(1600, rate_kbit * 1000 // 8 // 100)  # ~10 ms worth
    tbf = [
        "tbf",
        "rate",
        f"{rate_kbit}kbit",
        "burst",
        str(burst_bytes),
        "latency",
        f"{max_queue_ms}ms",
    ]
    return [
        ["tc", "qdisc", "replace", "dev", node.host_veth, "root", *tbf],
        [*node.prefix, "tc", "qdisc", "replace", "dev", node.peer_veth, "root", *tbf],
    ]


def plan_clear_latency(node: NodeNetwork) -> list[list[str]]:
    return [
        ["tc", "qdisc", "del", "dev", node.host_veth, "root"],
        [*node.prefix, "tc", "qdisc", "del", "dev", node.peer_veth, "root"],
    ]


# -- running them -----------------------------------------------------------


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NetnsError(f"{' '.join(argv)}: {error}") from error
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return "no Linux network namespaces on this system"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root to get partition/latency faults)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    return None


def _used_networks() -> list[ipaddress.IPv4Network]:
    done = _run(["ip", "-4", "-o", "addr", "show"], check=False)
    used = []
    for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", done.stdout):
        used.append(ipaddress.ip_network(match.group(1), strict=False))
    routes = _run(["ip", "-4", "route", "show"], check=False)
    for match in re.finditer(r"^(\d+\.\d+\.\d+\.\d+/\d+)", routes.stdout, re.MULTILINE):
        used.append(ipaddress.ip_network(match.group(1), strict=False))
    return [network for network in used if isinstance(network, ipaddress.IPv4Network)]


def pick_subnet(rng: random.Random, used: list[ipaddress.IPv4Network]) -> str:
    """A free /24 in 10.200.0.0-10.250.255.0 that overlaps nothing in use."""
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{rng.randint(200, 250)}.{rng.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(network) for network in used):
            return str(candidate)
    raise NetnsError("no free 10.x.y.0/24 subnet for the namespace bridge")


def new_run_id(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=RUN_ID_LENGTH))


@dataclass
class NamespaceNetwork:
    """A live layout: created by `create`, removed by `destroy` (idempotent)."""

    layout: Layout
    latency_method: str = "netem"
    """`netem` (a real delay) or `tbf` (a slow link) when netem is missing."""
    _destroyed: bool = field(default=False, repr=False)

    @classmethod
    def create(cls, nodes: int = 3, *, rng: random.Random | None = None) -> Self:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be in 1..{MAX_NODES}")
        # The run id and subnet must differ between runs even under a fixed
        # chaos seed, so they never come from the caller's seeded generator.
        rng = rng or random.Random()
        cleanup_leftovers()
        layout = Layout(
            run_id=new_run_id(rng), subnet=pick_subnet(rng, _used_networks()), nodes=nodes
        )
        network = cls(layout)
        network._write_state()
        atexit.register(network.destroy)
        try:
            for argv in plan_create(layout):
                _run(argv)
            network.latency_method = network._probe_latency_method()
        except BaseException:
            network.destroy()
            raise
        return network

    def node(self, index: int) -> NodeNetwork:
        return self.layout.node(index)

    @property
    def nodes(self) -> list[NodeNetwork]:
        return self.layout.all_nodes()

    @property
    def host_ip(self) -> str:
        return self.layout.host_ip

    # -- faults -----------------------------------------------------------

    def cut(self, index: int) -> None:
        """Isolate node `index` from every other node and from the host."""
        for argv in plan_cut(self.node(index)):
            _run(argv)

    def heal(self, index: int) -> None:
        for argv in plan_heal(self.node(index)):
            _run(argv)

    def add_latency(self, index: int, delay_ms: int, jitter_ms: int) -> str:
        """Slow node `index`'s link down; returns what was done, for the log."""
        node = self.node(index)
        self.clear_latency(index)
        if self.latency_method == "netem":
            for argv in plan_netem_delay(node, delay_ms, jitter_ms):
                _run(argv)
            return f"netem delay {delay_ms}ms ±{jitter_ms}ms each way"
        rate_kbit = SLOW_LINK_RATE_KBIT
        for argv in plan_slow_link(node, rate_kbit, max_queue_ms=delay_ms * 2):
            _run(argv)
        return (
            f"tbf {rate_kbit} kbit/s, queue up to {delay_ms * 2} ms each way "
            "(no sch_netem in this kernel)"
        )

    def clear_latency(self, index: int) -> None:
        for argv in plan_clear_latency(self.node(index)):
            _run(argv, check=False)  # nothing to delete is fine

    def heal_everything(self) -> None:
        for node in self.nodes:
            self.clear_latency(node.index)
            self.heal(node.index)

    def link_up(self, index: int) -> bool:
        done = _run(["ip", "-o", "link", "show", self.node(index).host_veth], check=False)
        return done.returncode == 0 and "state DOWN" not in done.stdout and ",UP" in done.stdout

    # -- lifecycle --------------------------------------------------------

    def destroy(self) -> None:
        """Remove every veth, namespace and the bridge of this run. Stop the
        processes inside first: a namespace lives on while a process uses it."""
        if self._destroyed:
            return
        self._destroyed = True
        _destroy(self.layout)
        with contextlib.suppress(OSError):
            (STATE_DIR / f"{self.layout.run_id}.json").unlink()
        with contextlib.suppress(Exception):
            atexit.unregister(self.destroy)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _write_state(self) -> None:
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        state = _State(os.getpid(), self.layout.run_id, self.layout.subnet, self.layout.nodes)
        (STATE_DIR / f"{self.layout.run_id}.json").write_bytes(msgspec.json.encode(state))

    def _probe_latency_method(self) -> str:
        """Whether the kernel has netem: try it on the first node's loopback."""
        node = self.node(1)
        probe = [*node.prefix, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        if _run(probe, check=False).returncode != 0:
            return "tbf"
        _run([*node.prefix, "tc", "qdisc", "del", "dev", "lo", "root"], check=False)
        return "netem"


def _destroy(layout: Layout) -> None:
    for argv in plan_destroy(layout):
        _run(argv, check=False)  # idempotent: a missing name is fine


def leftover_names() -> dict[str, list[str]]:
    """Namespaces and interfaces with the ironbook prefix, by run id."""
    found: dict[str, list[str]] = {}
    namespaces = _run(["ip", "netns", "list"], check=False).stdout
    links = _run(["ip", "-o", "link", "show"], check=False).stdout
    names = [line.split()[0] for line in namespaces.splitlines() if line.strip()]
    names += [m.group(1) for m in re.finditer(r"^\d+: ([^:@\s]+)", links, re.MULTILINE)]
    for name in names:
        match = _NAME_RE.match(name)
        if match:
            found.setdefault(match.group(1), []).append(name)
    return found


def live_runs() -> set[str]:
    """Run ids whose owner process is still alive."""
    alive = set()
    for path in STATE_DIR.glob("*.json") if STATE_DIR.is_dir() else []:
        try:
            state = msgspec.json.decode(path.read_bytes(), type=_State)
        except (OSError, msgspec.MsgspecError):
            continue
        if pid_alive(state.owner_pid):
            alive.add(state.run_id)
    return alive


def cleanup_leftovers(run_id: str | None = None) -> list[str]:
    """Remove the namespaces, veths and bridges of runs whose owner died (or
    of `run_id`, live or not). Returns the names removed."""
    if unavailable_reason() is not None:
        return []
    alive = live_runs()
    removed: list[str] = []
    for found_id, names in sorted(leftover_names().items()):
        if (run_id is None and found_id in alive) or (run_id is not None and found_id != run_id):
            continue
        for name in sorted(names, key=lambda n: (not n.endswith(tuple("123456789")), n)):
            if name[len(PREFIX) + RUN_ID_LENGTH] == "n":
                _run(["ip", "netns", "del", name], check=False)
            else:
                _run(["ip", "link", "del", name], check=False)
            removed.append(name)
        with contextlib.suppress(OSError):
            (STATE_DIR / f"{found_id}.json").unlink()
    if STATE_DIR.is_dir():
        for path in STATE_DIR.glob("*.json"):
            if path.stem not in alive and (run_id is None or path.stem == run_id):
                with contextlib.suppress(OSError):
                    path.unlink()
    return removed
