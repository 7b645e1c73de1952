"""A failing run explains itself.

On a failing verdict (or a run that crashed), `ironbook chaos` and `ironbook
demo` write `failure.md` into the data directory: each violated rule with
its request ids and log positions, the faults active within
`FAULT_WINDOW_MS` of the operations involved, the lines of each process's
log about them, and the command that reruns the same seed. Then the whole
evidence (history, process and NATS logs, fault timeline, the JSON report,
failure.md) is copied to `<keep root>/<seed>-<UTC time>/`, so it outlives a
data directory its caller removes.

    failure = Failure(seed=7, command="ironbook chaos --seed 7", ...)
    evidence_dir = keep_evidence(failure, data_dir, evidence_path(Path("chaos-failures"), 7))
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import msgspec

from ironbook.chaos.faults import FaultRecord
from ironbook.chaos.history import HISTORY_FILE
from ironbook.replication.checker import CheckReport, Violation
from ironbook.replication.history import Operation

FAILURE_FILE = "failure.md"
FAULTS_FILE = "faults.jsonl"
DEFAULT_KEEP_ROOT = Path("chaos-failures")
FAULT_WINDOW_MS = 10_000
"""A fault this close to an operation involved in a violation is listed with it."""
LOG_LINES_PER_PROCESS = 25
"""Per violation and process log: lines naming a request id first, then
lines from the window around it."""
TAIL_LINES_PER_PROCESS = 20
"""Per process log, when the run failed without a violation to place in time."""
MAX_LOG_BYTES = 64 * 1024 * 1024
"""Only the end of a longer log is searched."""
_TELLING = re.compile(r"WRN|ERR|WARNING|ERROR|CRITICAL|leader|Fenced|fenced|step|lost|timed out")
"""Log lines worth showing first when a window holds more than fit."""
_STAMP = re.compile(r"(\d{4})[-/](\d{2})[-/](\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,6}))?")


class RunReport(Protocol):
    """What a chaos report and a race-day result both say about a run."""

    @property
    def seed(self) -> int: ...
    @property
    def command(self) -> str: ...
    @property
    def errors(self) -> Sequence[str]: ...
    @property
    def check(self) -> CheckReport | None: ...
    @property
    def fault_log(self) -> Sequence[FaultRecord]: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failing run knows about itself."""

    seed: int
    command: str
    """The command line that reruns the same seed."""
    errors: Sequence[str]
    """Failures of the run itself (a fault that did not heal, a crashed load)."""
    violations: Sequence[Violation]
    faults: Sequence[FaultRecord]
    operations: Sequence[Operation]
    report_json: bytes
    report_name: str
    """The file the JSON report is kept as (chaos-report.json, report.json)."""

    @classmethod
    def of(cls, report: RunReport, operations: Sequence[Operation], report_name: str) -> Failure:
        """The failure a run's report describes, with the operations its
        clients recorded."""
        return cls(
            seed=report.seed,
            command=report.command,
            errors=report.errors,
            violations=report.check.violations if report.check is not None else [],
            faults=report.fault_log,
            operations=operations,
            report_json=msgspec.json.format(msgspec.json.encode(report)),
            report_name=report_name,
        )


def causes(error: BaseException) -> list[str]:
    """`Type: message` of `error`, or of each error an exception group holds
    (task groups wrap what their tasks raise)."""
    if isinstance(error, BaseExceptionGroup):
        return [cause for inner in error.exceptions for cause in causes(inner)]
    return [f"{type(error).__name__}: {error}"]


def evidence_path(keep_root: Path, seed: int, now_s: float | None = None) -> Path:
    """Where a failing run of `seed` keeps its evidence: one new directory per run."""
    stamp = datetime.fromtimestamp(time.time() if now_s is None else now_s, UTC)
    return keep_root.resolve() / f"{seed}-{stamp:%Y%m%dT%H%M%SZ}"


def keep_evidence(failure: Failure, data_dir: Path, evidence_dir: Path) -> Path:
    """Write failure.md, the fault timeline and the report into `data_dir`,
    then copy them with the history and every log to `evidence_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / FAULTS_FILE).write_bytes(
        b"".join(msgspec.json.encode(record) + b"\n" for record in failure.faults)
    )
    (data_dir / failure.report_name).write_bytes(failure.report_json + b"\n")
    (data_dir / FAILURE_FILE).write_text(render_failure(failure, _process_logs(data_dir)))
    evidence_dir.mkdir(parents=True, exist_ok=True)
    for name in (FAILURE_FILE, FAULTS_FILE, failure.report_name, HISTORY_FILE):
        if (data_dir / name).is_file():
            shutil.copy2(data_dir / name, evidence_dir / name)
    for log in _log_files(data_dir):
        target = evidence_dir / log.relative_to(data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, target)
    return evidence_dir


def _log_files(data_dir: Path) -> Iterator[Path]:
    """Every process's log: logs/*.log and the nats-server logs under nats/
    (not the JetStream store)."""
    for root in (data_dir / "logs", data_dir / "nats"):
        if root.is_dir():
            yield from sorted(path for path in root.rglob("*.log") if path.is_file())


@dataclass(frozen=True, slots=True)
class _LogLine:
    wall_ms: int | None
    text: str


def _process_logs(data_dir: Path) -> dict[str, list[_LogLine]]:
    logs: dict[str, list[_LogLine]] = {}
    for path in _log_files(data_dir):
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - MAX_LOG_BYTES))
            data = handle.read()
        lines = data.decode(errors="replace").splitlines()
        logs[str(path.relative_to(data_dir))] = [_LogLine(_wall_ms(t), t) for t in lines]
    return logs


def _wall_ms(line: str) -> int | None:
    """The time at the start of a log line (local time, as the processes
    write it), or None."""
    match = _STAMP.search(line, 0, 64)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = (match.group(7) or "0").ljust(6, "0")
    try:
        stamp = datetime(year, month, day, hour, minute, second, int(fraction))
    except ValueError:
        return None
    return int(stamp.timestamp() * 1000)


def render_failure(failure: Failure, logs: dict[str, list[_LogLine]]) -> str:
    by_request: dict[str, list[Operation]] = {}
    wanted = {request_id for v in failure.violations for request_id in v.request_ids}
    for op in failure.operations:
        if op.request_id in wanted:
            by_request.setdefault(op.request_id, []).append(op)
    lines = [
        f"# Chaos failure: seed {failure.seed}",
        "",
        "Rerun the same seed:",
        "",
        "```",
        failure.command,
        "```",
        "",
    ]
    if failure.errors:
        lines += ["## The run itself failed", ""]
        lines += [f"- {error}" for error in failure.errors]
        lines.append("")
    shown: dict[tuple[str, tuple[str, ...]], int] = {}
    for number, violation in enumerate(failure.violations, start=1):
        ops = [op for request_id in violation.request_ids for op in by_request.get(request_id, [])]
        lines += _explain(number, violation, ops, failure.faults, logs, shown)
    if not failure.violations:
        lines += ["## The end of each process's log", ""]
        for name, log in logs.items():
            lines += [f"`{name}`:", "", "```"]
            lines += [line.text for line in log[-TAIL_LINES_PER_PROCESS:]]
            lines += ["```", ""]
    lines += ["## Fault timeline", ""]
    lines += [_fault_line(record) for record in failure.faults] or ["no faults were injected"]
    lines.append("")
    return "\n".join(lines)


def _explain(
    number: int,
    violation: Violation,
    ops: Sequence[Operation],
    faults: Sequence[FaultRecord],
    logs: dict[str, list[_LogLine]],
    shown: dict[tuple[str, tuple[str, ...]], int],
) -> list[str]:
    """One violation; a process's lines already shown for an earlier one
    (the same window) are referred to, not repeated."""
    lines = [
        f"## {number}. {violation.kind}",
        "",
        violation.detail,
        "",
        f"- request ids: {', '.join(violation.request_ids) or 'none'}",
        f"- log positions: {', '.join(map(str, violation.seqs)) or 'none'}",
    ]
    for op in ops:
        lines.append(
            f"- {op.request_id}: {op.kind} by {op.client}, {op.outcome}, invoked "
            f"{_utc(op.invoke_wall_ms)}, completed {_utc(op.complete_wall_ms)}"
            + (f" ({op.error})" if op.error else "")
        )
    if ops:
        start_ms = min(op.invoke_wall_ms for op in ops) - FAULT_WINDOW_MS
        end_ms = max(op.complete_wall_ms for op in ops) + FAULT_WINDOW_MS
    elif violation.at_ms is not None:
        lines.append(f"- log time: {_utc(violation.at_ms)}")
        start_ms = violation.at_ms - FAULT_WINDOW_MS
        end_ms = violation.at_ms + FAULT_WINDOW_MS
    else:
        lines += ["", "Not tied to a client operation: see the fault timeline below.", ""]
        return lines
    near = [f for f in faults if f.injected_wall_ms <= end_ms and f.healed_wall_ms >= start_ms]
    lines += ["", f"Faults active within {FAULT_WINDOW_MS // 1000} s:", ""]
    lines += [_fault_line(record) for record in near] or ["- none"]
    lines.append("")
    ids = violation.request_ids
    for name, log in logs.items():
        chosen = _relevant(log, ids, start_ms, end_ms)
        if not chosen:
            continue
        earlier = shown.setdefault((name, tuple(chosen)), number)
        if earlier != number:
            lines += [f"`{name}`: the same lines as for {earlier}.", ""]
        else:
            lines += [f"`{name}`:", "", "```", *chosen, "```", ""]
    return lines


def _relevant(log: Sequence[_LogLine], ids: Sequence[str], start_ms: int, end_ms: int) -> list[str]:
    """Lines naming a request id, then lines from the window (warnings,
    errors and leadership changes first), shown in log order."""
    naming = {i for i, line in enumerate(log) if any(rid in line.text for rid in ids)}
    in_window = [
        i
        for i, line in enumerate(log)
        if line.wall_ms is not None and start_ms <= line.wall_ms <= end_ms and i not in naming
    ]
    in_window.sort(key=lambda i: _TELLING.search(log[i].text) is None)
    room = max(0, LOG_LINES_PER_PROCESS - len(naming))
    chosen = sorted(naming | set(in_window[:room]))[:LOG_LINES_PER_PROCESS]
    shown = [log[i].text for i in chosen]
    left_out = len(naming) + len(in_window) - len(chosen)
    if left_out > 0:
        shown.append(f"... {left_out} more lines in the window")
    return shown


def _fault_line(record: FaultRecord) -> str:
    return (
        f"- {_utc(record.injected_wall_ms)} to {_utc(record.healed_wall_ms)}: {record.kind} "
        f"{record.target}" + (f" ({record.detail})" if record.detail else "")
    )


def _utc(wall_ms: int) -> str:
    return f"{datetime.fromtimestamp(wall_ms / 1000, UTC):%H:%M:%S.%f}"[:-3] + "Z"
