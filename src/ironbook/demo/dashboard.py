"""The live race day dashboard (rich), and its plain-text fallback.

`render(live)` builds one frame from a `LiveState`: the countdown to the off,
the cluster (NATS nodes, ledger replicas with role and term, the leader of
each partition), the traffic (bets/s, p50/p99 latency, refusals, timeouts),
and the fault timeline as it happens. `plain_line(live)` is the one-line
summary printed each second when stdout is not a terminal.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ironbook.demo.raceday import LiveState
from ironbook.demo.timeline import Sample

SPARK = " ▁▂▃▄▅▆▇█"
SPARK_SECONDS = 48
FAULT_LINES_SHOWN = 9
_STATUS_STYLE = {
    "leader": "bold green",
    "follower": "green",
    "up": "green",
    "healthy": "green",
    "frozen": "bold yellow",
    "cut off": "bold red",
    "silent": "yellow",
    "unhealthy": "yellow",
    "down": "bold red",
}


def countdown(live: LiveState) -> str:
    if live.off_at_s is None or live.started_monotonic is None:
        return ""
    left_s = live.off_at_s - live.t_s()
    if left_s <= 0:
        if live.fault_in_progress:
            return "the off: held until the fault heals"
        return "the off: now" if live.phase.startswith("surge") else "off"
    minutes, seconds = divmod(int(left_s + 0.999), 60)
    return f"the off in {minutes}:{seconds:02d}"


def sparkline(values: Sequence[float]) -> str:
    if not values:
        return ""
    top = max(values) or 1
    return "".join(SPARK[min(len(SPARK) - 1, round(v / top * (len(SPARK) - 1)))] for v in values)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _styled(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _cluster_table(live: LiveState, now_ms: int) -> Table:
    title = "cluster" if live.view_as_of_ms is None else "cluster (when the traffic ended)"
    table = Table(title=title, expand=True, title_justify="left", pad_edge=False)
    table.add_column("process")
    table.add_column("state")
    table.add_column("detail")
    view = live.view
    if view is None:
        return table
    for node in view.nats:
        state = node.process if node.process != "up" else "healthy" if node.healthy else "unhealthy"
        if node.cut_off:
            state = "cut off"
        leads = ", ".join(f"p{p}" for p in node.leads)
        table.add_row(
            f"nats {node.name}", _styled(state), f"leads stream of {leads}" if leads else ""
        )
    for replica in view.replicas:
        status = replica.status(now_ms)
        detail = ""
        if replica.heard_ms:
            detail = f"term {replica.term}, applied seq {replica.applied_seq:,}"
        table.add_row(f"replica {replica.node_id}", _styled(status), detail)
    for name, state in sorted(view.extra.items()):
        table.add_row(name, _styled(state), "")
    return table


def _leaders(live: LiveState, now_ms: int) -> Text:
    text = Text("leaders: ")
    if live.view is None:
        return text
    for partition in range(live.partitions):
        leader = live.view.leader_of(partition, now_ms)
        if partition:
            text.append("   ")
        if leader is None:
            text.append(f"p{partition} electing…", style="bold yellow")
        else:
            text.append(f"p{partition} {leader.node_id} (term {leader.term})", style="green")
    return text


def _traffic(live: LiveState) -> Table:
    samples = live.timeline.samples
    last: Sample | None = samples[-1] if samples else None
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("clients", str(live.clients))
    table.add_row("bets/s", f"{last.bets_ok:,}" if last else "-")
    recent = [s.bets_ok for s in samples[-SPARK_SECONDS:]]
    table.add_row("", Text(sparkline(recent), style="cyan"))
    table.add_row("latency p50", _ms(last.latency_ms_p50 if last else None))
    table.add_row("latency p99", _ms(last.latency_ms_p99 if last else None))
    totals = live.totals
    table.add_row(
        "accepted",
        f"{totals.get('ok', 0):,} ops ({totals.get('bets_ok', 0):,} bets)",
    )
    table.add_row("refused", f"{totals.get('fail', 0):,} (a ledger rule said no: not an error)")
    unknown = totals.get("info", 0)
    table.add_row(
        "timeouts",
        Text(
            f"{unknown:,} gave up, {live.retries:,} requests resent",
            style="bold red" if unknown else "",
        ),
    )
    return table


def _faults(live: LiveState) -> Group:
    lines: list[RenderableType] = [Text(line) for line in live.fault_lines[-FAULT_LINES_SHOWN:]]
    if live.fault_in_progress:
        waiting = f"▶ {live.fault_in_progress}: waiting for the cluster to heal"
        lines.append(Text(waiting, style="bold yellow"))
    if not lines:
        lines.append(Text("no faults yet: they come at the peak of the surge", style="dim"))
    lines.extend(Text(f"note: {note}", style="dim") for note in live.notes)
    return Group(*lines)


def render(live: LiveState, now_ms: int | None = None) -> RenderableType:
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if live.view_as_of_ms is not None:
        now_ms = min(now_ms, live.view_as_of_ms)
    header = Text()
    header.append("ironbook race day", style="bold")
    header.append(f"   seed {live.seed}   t+{live.t_s():5.1f}s   ")
    header.append(live.phase, style="bold magenta")
    off = countdown(live)
    if off:
        header.append(f"   {off}", style="bold cyan")
    return Group(
        header,
        _leaders(live, now_ms),
        _cluster_table(live, now_ms),
        Panel(_traffic(live), title="traffic (last second)", title_align="left"),
        Panel(_faults(live), title="faults", title_align="left"),
    )


def render_to_text(live: LiveState, width: int = 110, now_ms: int | None = None) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(render(live, now_ms))
    return console.export_text()


def plain_line(live: LiveState, now_ms: int | None = None) -> str:
    """One line a second for logs and pipes."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    samples = live.timeline.samples
    last = samples[-1] if samples else None
    parts = [f"t+{live.t_s():5.1f}s", live.phase]
    off = countdown(live)
    if off:
        parts.append(off)
    if last is not None:
        parts.append(
            f"clients {live.clients} bets/s {last.bets_ok} p50 {_ms(last.latency_ms_p50)} "
            f"p99 {_ms(last.latency_ms_p99)} refused {last.refused} timeouts {last.unknown}"
        )
    if live.view is not None:
        leaders = []
        for partition in range(live.partitions):
            leader = live.view.leader_of(partition, now_ms)
            leaders.append(f"p{partition}={leader.node_id if leader else '?'}")
        parts.append("leaders " + " ".join(leaders))
    if live.fault_in_progress:
        parts.append(f"FAULT {live.fault_in_progress}")
    return " | ".join(parts)
