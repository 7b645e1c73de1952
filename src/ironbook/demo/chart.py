"""The race day chart: bets/s and p99 latency over time, the phases shaded,
every fault marked as a labelled band from injection to healed, and (with
monitoring) every alert as a bar from its firing to its resolution, one row
per alert name, coloured by severity.

matplotlib with the Agg backend (no display needed); one axis per line.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from ironbook.demo.timeline import Timeline

FAULT_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
PHASE_COLOURS = {"steady": "#e8f4ea", "surge": "#fdf1e0", "the off": "#e6e6f7"}


SEVERITY_COLOURS = {"page": "#d62728", "ticket": "#ff7f0e", "info": "#7f7f7f"}


def write_chart(timeline: Timeline, path: Path, title: str) -> Path:
    """Draw `timeline` into a PNG at `path`."""
    rows = sorted({alert.alertname for alert in timeline.alerts})
    if rows:
        figure, (bets_axis, latency_axis, alerts_axis) = plt.subplots(
            3,
            1,
            sharex=True,
            figsize=(11, 6.5 + 0.22 * len(rows)),
            dpi=110,
            height_ratios=(3, 2, 0.6 + 0.25 * len(rows)),
        )
    else:
        figure, (bets_axis, latency_axis) = plt.subplots(
            2, 1, sharex=True, figsize=(11, 6.5), dpi=110, height_ratios=(3, 2)
        )
    try:
        seconds = [s.t_s + 0.5 for s in timeline.samples]
        bets_axis.plot(
            seconds, [s.bets_ok for s in timeline.samples], color="#1f77b4", linewidth=1.6
        )
        bets_axis.set_ylabel("bets accepted / s")
        bets_axis.set_ylim(bottom=0)
        # A second in which nothing completed has no latency: a gap, not a line.
        p99s = [
            math.nan if s.latency_ms_p99 is None else s.latency_ms_p99 for s in timeline.samples
        ]
        latency_axis.plot(seconds, p99s, color="#2ca02c", linewidth=1.4, marker=".", markersize=3)
        latency_axis.set_ylabel("p99 latency (ms)")
        known = [v for v in p99s if not math.isnan(v)]
        if known and max(known) > 50 * max(1.0, min(known)):
            latency_axis.set_yscale("log")
        axes = [bets_axis, latency_axis]
        if rows:
            _draw_alerts(alerts_axis, timeline, rows, end_s=seconds[-1] if seconds else 0.0)
            axes.append(alerts_axis)
        axes[-1].set_xlabel("seconds since the first bet")
        for axis in axes:
            _mark(axis, timeline)
            axis.grid(True, alpha=0.3)
        _label_faults(bets_axis, timeline)
        bets_axis.set_title(title, loc="left", fontsize=11)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path


def _draw_alerts(axis: Axes, timeline: Timeline, rows: list[str], end_s: float) -> None:
    """One row per alert name; a bar from each firing to its resolution (to
    the end of the chart if it had not resolved)."""
    for alert in timeline.alerts:
        row = rows.index(alert.alertname)
        until = alert.resolved_s if alert.resolved_s is not None else max(end_s, alert.fired_s)
        axis.broken_barh(
            [(alert.fired_s, max(until - alert.fired_s, 0.3))],
            (row - 0.35, 0.7),
            color=SEVERITY_COLOURS.get(alert.severity, "#1f77b4"),
            zorder=3,
        )
    axis.set_yticks(range(len(rows)))
    axis.set_yticklabels([row.removeprefix("Ironbook") for row in rows], fontsize=7)
    axis.set_ylim(-0.6, len(rows) - 0.4)
    axis.invert_yaxis()
    axis.set_ylabel("alerts", fontsize=9)


def _mark(axis: Axes, timeline: Timeline) -> None:
    for phase in timeline.phases:
        axis.axvspan(
            phase.start_s,
            max(phase.end_s, phase.start_s + 0.5),
            color=PHASE_COLOURS.get(phase.name, "#f0f0f0"),
            zorder=0,
        )
    for index, fault in enumerate(timeline.faults):
        colour = FAULT_COLOURS[index % len(FAULT_COLOURS)]
        axis.axvspan(fault.start_s, fault.end_s, color=colour, alpha=0.18, zorder=1)
        axis.axvline(fault.start_s, color=colour, linewidth=1.2, zorder=2)


def _label_faults(axis: Axes, timeline: Timeline) -> None:
    top = axis.get_ylim()[1]
    for phase in timeline.phases:
        axis.text(
            phase.start_s + 0.3, top * 0.97, phase.name, fontsize=8, va="top", color="#555555"
        )
    for index, fault in enumerate(timeline.faults):
        colour = FAULT_COLOURS[index % len(FAULT_COLOURS)]
        label = fault.kind.replace("_", " ")
        if fault.stall_ms is not None:
            label += f"\n(longest wait {fault.stall_ms / 1000:.1f} s)"
        axis.text(
            fault.start_s + 0.3,
            top * (0.86 - 0.16 * (index % 3)),
            label,
            fontsize=8,
            va="top",
            color=colour,
            fontweight="bold",
        )
