"""The race day report: `report.json` (everything, machine-readable),
`report.md` (for people) and `report.png` (the chart), in one directory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ironbook.demo.raceday import RaceDayResult
from ironbook.demo.timeline import AlertMark

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"


@dataclass(frozen=True, slots=True)
class ReportFiles:
    markdown: Path
    json: Path
    chart: Path


def verdict_lines(result: RaceDayResult) -> list[str]:
    """The checker's verdict with its counts, a few short lines."""
    yes = {True: "yes", False: "NO"}
    check = result.check
    if check is None:
        return [f"VERDICT: {result.verdict.upper()}", "the day ended before the history check"]
    return [
        f"VERDICT: {result.verdict.upper()}",
        f"operations {check.ops:,}: {check.ok:,} ok, {check.fail:,} refused by a ledger "
        f"rule, {check.info:,} unknown (resolved: {check.info_applied:,} applied, "
        f"{check.info_absent:,} never happened), {check.reads:,} balance reads",
        f"lost {check.lost}   duplicated {check.duplicated}   "
        f"money conserved {yes[check.conserved]}   "
        f"no negative balance {yes[check.no_negative_balance]}   "
        f"replicas agree {yes[check.replicas_agree]}   "
        f"reads consistent {yes[check.reads_consistent]}",
    ]


def write_report(result: RaceDayResult, out_dir: Path) -> ReportFiles:
    # matplotlib takes seconds to import; every `ironbook` command loads this
    # module (the CLI builds all subcommands), so it is imported only here.
    from ironbook.demo.chart import write_chart  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / REPORT_MD, out_dir / REPORT_JSON, out_dir / REPORT_PNG)
    files.json.write_bytes(msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    write_chart(
        result.timeline,
        files.chart,
        f"ironbook race day (seed {result.seed}): {result.verdict.upper()} — "
        f"{result.bets_ok:,} bets, {len(result.timeline.faults)} faults, "
        + (
            f"{result.check.lost} lost, {result.check.duplicated} duplicated"
            if result.check is not None
            else "not checked"
        ),
    )
    files.markdown.write_text(render_markdown(result, files))
    return files


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def render_markdown(result: RaceDayResult, files: ReportFiles) -> str:
    timeline = result.timeline
    check = result.check
    samples = timeline.samples
    p99s = [s.latency_ms_p99 for s in samples if s.latency_ms_p99 is not None]
    p50s = sorted(s.latency_ms_p50 for s in samples if s.latency_ms_p50 is not None)
    lines = [
        "# ironbook race day report",
        "",
        f"**Verdict: {result.verdict.upper()}**",
        "",
        "```",
        *verdict_lines(result),
        "```",
        "",
        "## What ran",
        "",
        f"- A real local cluster: 3 `nats-server` nodes (JetStream, R3, `sync_interval: always`), "
        f"{result.partitions} ledger partition(s) × 3 replica processes; odds feed: "
        f"{result.feed}.",
        *(f"- {note}." for note in result.notes),
        f"- {result.seconds:.0f} s of traffic from up to {result.peak_clients} concurrent clients "
        "(the chaos workload: bets, deposits, withdrawals, balance reads; a settler opening, "
        "closing and settling an undercard race every few seconds).",
        "- A steady phase, then a surge onto the big race with faults injected at the peak, "
        "then the off: the big race closed to bets and settled.",
        f"- {result.big_race}.",
        f"- {result.bets_ok:,} bets accepted; peak {result.peak_bets_per_s:,} bets/s; "
        f"p99 latency per second from {_fmt_ms(min(p99s, default=None))} to "
        f"{_fmt_ms(max(p99s, default=None))} ms (median second's p50 "
        f"{_fmt_ms(p50s[len(p50s) // 2] if p50s else None)} ms).",
        (
            f"- {check.log_entries:,} log entries were replayed and checked against the history "
            f"of {check.ops:,} client operations"
            if check is not None
            else "- The history was not checked: the day ended before the check"
        )
        + (
            f" (kept in `{result.history}`)."
            if result.history
            else " (not kept: the run used a temporary directory; `--data-dir` keeps it)."
        ),
        "",
        "## Phases",
        "",
        "| phase | seconds |",
        "|---|---:|",
        *(f"| {p.name} | {p.seconds:.1f} |" for p in result.phases),
        "",
        "Traffic phases (seconds since the first bet):",
        "",
        *(f"- {p.name}: {p.start_s:.1f} – {p.end_s:.1f} s" for p in timeline.phases),
        "",
        "## Faults",
        "",
    ]
    monitored = bool(result.alerts)
    if timeline.faults:
        lines += [
            "| at (s) | fault | target | partition | healed after (s) | longest wait "
            "for a write (ms) |"
            + (" alerts (after the injection) |" if monitored else "")
            + " detail |",
            "|---:|---|---|---:|---:|---:|" + ("---|" if monitored else "") + "---|",
        ]
        for fault in timeline.faults:
            alerts = f" {', '.join(fault.alerts) or 'none'} |" if monitored else ""
            lines.append(
                f"| {fault.start_s:.1f} | {fault.kind} | {fault.target} | {fault.partition} | "
                f"{fault.end_s - fault.start_s:.1f} | "
                f"{'-' if fault.stall_ms is None else f'{fault.stall_ms:,}'} |{alerts} "
                f"{fault.detail} |"
            )
        lines += [
            "",
            "*Healed after*: from injection until every process was running, every NATS node "
            "healthy and every partition had a leader again. *Longest wait for a write*: the "
            "longest gap between two acknowledged writes on the faulted partition meanwhile, "
            "which is what a punter felt as latency (the client retries with the same "
            "request id, so a failover is a delay, never an error or a duplicate).",
        ]
        if monitored:
            lines += [
                "*Alerts*: those Alertmanager sent to ironbook's receiver between the injection "
                "and 15 s after the heal (an alert naming the fault's target belongs to it when "
                "two faults' windows overlap), with the seconds from the injection to the "
                "notification.",
            ]
    else:
        lines.append("No fault was injected.")
    lines += [f"- not injected: {note}" for note in timeline.skipped_faults]
    events = _with_alerts(result.events, timeline.alerts)
    if events:
        lines += ["", "## Timeline", "", "Seconds since the first bet:", "", "```", *events, "```"]
    if result.errors:
        lines += ["", "## Errors", "", *(f"- {error}" for error in result.errors)]
    if check is not None and check.violations:
        lines += ["", "## Violations (first of each kind)", ""]
        for violation in check.violations:
            lines.append(f"- **{violation.kind}**: {violation.detail}")
    if result.evidence_dir:
        lines += [
            "",
            f"The evidence (history, logs, faults, failure.md) is in `{result.evidence_dir}`.",
        ]
    lines += [
        "",
        "## Chart",
        "",
        f"![bets/s and p99 latency, faults marked]({files.chart.name})",
        "",
        "## Repeat it",
        "",
        "```sh",
        result.command or f"ironbook demo --seed {result.seed} --seconds {result.seconds:.0f}",
        "```",
        "",
        "The same seed gives the same fault plan and the same client choices; timings differ "
        "from run to run, as they do on a real race day.",
        "",
    ]
    return "\n".join(lines)


def _with_alerts(events: Sequence[str], alerts: Sequence[AlertMark]) -> list[str]:
    """The day's events (each starts with its second, `  12.3s  ...`) with
    every alert's firing and resolution in their place."""
    timed: list[tuple[float, str]] = []
    for line in events:  # a line without its second keeps its place after the one before
        timed.append((_second_of(line, timed[-1][0] if timed else 0.0), line))
    for alert in alerts:
        about = f" {alert.about}" if alert.about else ""
        what = f"{alert.alertname}{about} ({alert.severity})"
        timed.append((alert.fired_s, f"{alert.fired_s:.1f}s  ALERT {what}"))
        if alert.resolved_s is not None:
            timed.append((alert.resolved_s, f"{alert.resolved_s:.1f}s  resolved {what}"))
    return [line for _, line in sorted(timed, key=lambda item: item[0])]


def _second_of(line: str, otherwise: float) -> float:
    head = line.strip().split("s", 1)[0]
    try:
        return float(head)
    except ValueError:
        return otherwise
