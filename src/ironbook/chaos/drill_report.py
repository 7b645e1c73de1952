"""A drill's report: `drill-report.json` (everything), `drill-report.md` (for
people) and `drill-report.png` (acknowledged bets per second and p99
latency over the drill, with the cut, the detection and the promotion
marked: the race day's chart, `demo.chart`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from ironbook.chaos.drill import DrillReport
from ironbook.demo.timeline import FaultMark, PhaseMark, SecondCounter, Timeline
from ironbook.replication.history import Operation

REPORT_JSON = "drill-report.json"
REPORT_MD = "drill-report.md"
REPORT_PNG = "drill-report.png"


def _show(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return f"{value}{unit}"


def summary_lines(report: DrillReport) -> list[str]:
    """The verdict and the figures, a few lines."""
    check = report.check
    lines = [
        f"VERDICT: {report.verdict.upper()} (dr drill, {report.mode} mode, seed {report.seed})",
        f"rto {_show(report.rto_s, ' s')} (detect {_show(report.detect_s, ' s')}, promote "
        f"{_show(report.promote_s, ' s')}); rpo {_show(report.rpo_acked_lost)} acknowledged "
        f"operations lost over {_show(report.rpo_s, ' s')}; WAN RTT "
        f"{_show(report.wan_rtt_ms, ' ms')} measured ({report.wan_rtt_ms_configured} ms set)",
        f"operations {report.ops:,}: {report.acks_on_a:,} writes acknowledged by site a, "
        f"{report.acks_on_b:,} by site b; duplicated {_show(report.duplicated)}; money "
        f"conserved on b {_show(report.conserved)}",
    ]
    if check is not None:
        lines.append(
            f"checker: {check.verdict}; lost {check.lost}, {check.info} unknown outcomes "
            f"({check.info_applied} applied, {check.info_absent} absent), replicas agree "
            f"{_show(check.replicas_agree)}, reads consistent {_show(check.reads_consistent)}"
            f" ({check.rpo_window_reads} in the rpo window not judged)"
        )
        lines += [f"  violation: {violation}" for violation in check.violations]
    lines.append(report.audit_summary)
    lines.append(f"failback: {report.failback}")
    lines += [f"error: {error}" for error in report.errors]
    return lines


def timeline(report: DrillReport, operations: Sequence[Operation]) -> Timeline:
    """Per second since the workload started: bets accepted and latency;
    site A's time, the outage and site B's time (from its first
    acknowledgement) as phases, and the cut as a fault lasting until then,
    labelled with when the loss was detected and B promoted."""
    marks = report.marks
    if not marks.workload_ms:
        return Timeline()
    counter = SecondCounter(marks.workload_ms)
    counter.take(operations)
    end_ms = max(marks.end_ms, *(op.complete_wall_ms for op in operations[-1:]))
    seconds = max(0, (end_ms - marks.workload_ms) // 1000 + 1)
    result = Timeline(samples=[counter.sample(t_s, 0) for t_s in range(seconds)])

    def at_s(wall_ms: int) -> float:
        return round((wall_ms - marks.workload_ms) / 1000, 2)

    def _since_cut(wall_ms: int) -> str:
        return f"+{(wall_ms - marks.cut_ms) / 1000:.1f} s" if wall_ms else "never"

    outage_end_ms = marks.first_ack_b_ms or end_ms
    steps = [
        ("site a", marks.workload_ms, marks.cut_ms),
        ("outage", marks.cut_ms, outage_end_ms),
        ("site b", outage_end_ms, end_ms),
    ]
    result.phases = [
        PhaseMark(name, at_s(start_ms), at_s(end))
        for name, start_ms, end in steps
        if start_ms and end
    ]
    if marks.cut_ms:
        result.faults = [
            FaultMark(
                kind=f"site a cut; lost {_since_cut(marks.detected_ms)}; "
                f"b promoted {_since_cut(marks.promoted_ms)}",
                target="site a",
                partition=0,
                start_s=at_s(marks.cut_ms),
                end_s=at_s(outage_end_ms),
                detail="SIGKILL of every site-a process",
                stall_ms=None if report.rto_s is None else int(report.rto_s * 1000),
            )
        ]
    return result


def write_markdown(report: DrillReport, path: Path, chart: Path) -> None:
    rows = [
        ("verdict", report.verdict),
        ("mode", report.mode),
        ("rto_s", report.rto_s),
        ("rpo_acked_lost", report.rpo_acked_lost),
        ("rpo_s", report.rpo_s),
        ("detect_s", report.detect_s),
        ("promote_s", report.promote_s),
        ("cut_at_s", report.cut_at_s),
        ("ledger entries b's mirror was behind just before the cut", report.gap_before_cut),
        ("last of a's entries b held (kept_seq)", report.kept_seq),
        ("wan_rtt_ms (measured)", report.wan_rtt_ms),
        ("ops", report.ops),
        ("duplicated", report.duplicated),
        ("conserved", report.conserved),
        ("acks on a / on b", f"{report.acks_on_a} / {report.acks_on_b}"),
        ("failback_s", f"{report.failback_s} ({report.failback})"),
        ("load average (1, 5, 15 min)", ", ".join(str(x) for x in report.load_average)),
    ]
    text = [
        f"# DR drill, seed {report.seed}: {report.verdict.upper()}",
        "",
        f"`{report.command}`",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {_show(value)} |" for name, value in rows),
        "",
        f"![acknowledged bets per second]({chart.name})",
        "",
        "## Summary",
        "",
        *(f"- {line}" for line in summary_lines(report)),
        "",
        "## Promotion",
        "",
        *(f"1. {step}" for step in report.promotion),
        "",
    ]
    if report.rpo_lost:
        text += [
            "## Acknowledged by site A, missing on site B",
            "",
            "| request id | kind | client | outcome | acknowledged (wall ms) |",
            "|---|---|---|---|---|",
            *(
                f"| {loss.request_id} | {loss.kind} | {loss.client} | {loss.outcome} | "
                f"{loss.acked_wall_ms} |"
                for loss in report.rpo_lost
            ),
            "",
        ]
    path.write_text("\n".join(text))


def write_drill_report(
    report: DrillReport, operations: Sequence[Operation], out_dir: Path
) -> list[Path]:
    """The three files in `out_dir`; their paths."""
    # matplotlib takes seconds to import: only when a report is written.
    from ironbook.demo.chart import write_chart  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = out_dir / REPORT_JSON, out_dir / REPORT_MD, out_dir / REPORT_PNG
    json_path.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    write_chart(
        timeline(report, operations),
        png_path,
        f"ironbook dr drill (seed {report.seed}, {report.mode}): {report.verdict.upper()} — "
        f"rto {_show(report.rto_s, ' s')}, {_show(report.rpo_acked_lost)} acknowledged lost",
    )
    write_markdown(report, md_path, png_path)
    return [json_path, md_path, png_path]
