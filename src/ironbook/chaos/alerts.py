"""Which alert caught which fault: the alert notifications a run's receiver
recorded, set against the faults the run injected.

A firing notification received between a fault's injection and
`AFTER_HEAL_S` after it healed is that fault's detection; its time to fire
is from the injection. When windows overlap (faults come one after another
and an alert comes seconds after its fault), it belongs to the fault whose
target it names (`n2`, `node2`, `p0-r1`, `gw-1` in its labels), else to the
latest fault injected before it. The fault's alerts are resolved when the
last of them is; the time to resolve is from the heal. A firing
notification outside every fault's window is a false alert: the run was
calm then. Only an alert's first firing notification counts: Alertmanager
sends a firing alert again with every change to its group.

A fault injected on a target while an alert naming that target is still
firing from the fault before (two faults on one node seconds apart) is
detected by it too, though no new notification comes: the operator sees it
firing throughout. Such detections are counted apart (`already_firing`) and
their time to fire is 0.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import msgspec

from ironbook.chaos.faults import FaultRecord
from ironbook.services.ops.alerts import AlertRecord, alert_spans

AFTER_HEAL_S = 15.0
"""How long after a heal an alert still counts as the fault's: the stages of
detection (scrape, `for:`, evaluation, Alertmanager's group wait) add up to
several seconds, and a fault's after-effects (a catch-up) last a little."""


PAGING_SEVERITIES = frozenset({"page", "ticket"})


class FaultAlerts(msgspec.Struct, frozen=True):
    injected: int
    detected: int
    median_fire_s: float | None
    """From injection to the first firing alert, over the detected ones."""
    median_resolve_s: float | None
    """From the heal to the last of its alerts resolved, over those resolved."""
    alertnames: list[str]
    """The alerts that caught this kind of fault."""
    paging: int
    """How many of the alerts caught were `page` or `ticket` (sent to a
    person), not `info`. Planned maintenance (`drain`, `rolling_restart`)
    is announced, not paged: for those kinds it should be 0."""
    already_firing: int = 0
    """Of the detected: those whose only alert was already firing about the
    same target when the fault was injected."""


class AlertVerdict(msgspec.Struct, frozen=True):
    alerts: dict[str, FaultAlerts]
    false_alerts: int
    false_alertnames: list[str]


def _names(record: AlertRecord, target: str) -> bool:
    """Whether the alert is about the fault's target: a process's name, or
    `node<N>` for a whole node."""
    labels = record.labels
    return target in labels.values() or target == f"node{labels.get('node', '')}"


class Attribution(msgspec.Struct, frozen=True):
    caught: list[list[AlertRecord]]
    """Per fault (in the order given): the alerts that detected it, first
    firing notifications only."""
    false: list[AlertRecord]
    """Alerts that fired outside every fault's window."""
    carried: list[list[AlertRecord]]
    """Per fault with nothing caught: the alerts naming its target that were
    firing when it was injected and still firing in its window."""


def attribute_alerts(faults: Sequence[FaultRecord], records: Sequence[AlertRecord]) -> Attribution:
    """Which fault each firing alert detected, or none (see the module's doc)."""
    windows = [
        (fault, fault.injected_wall_ms, fault.healed_wall_ms + int(AFTER_HEAL_S * 1000))
        for fault in faults
    ]
    fired: list[list[AlertRecord]] = [[] for _ in faults]
    false: list[AlertRecord] = []
    seen: set[tuple[str, str]] = set()
    for record in records:
        if record.status != "firing" or (record.fingerprint, record.starts_at) in seen:
            continue
        seen.add((record.fingerprint, record.starts_at))
        owner = max(
            (
                index
                for index, (_, start, end) in enumerate(windows)
                if start <= record.received_at_ms <= end
            ),
            key=lambda index: (_names(record, faults[index].target), windows[index][1]),
            default=None,
        )
        if owner is None:
            false.append(record)
        else:
            fired[owner].append(record)
    return Attribution(fired, false, _carried(faults, records, fired))


def _carried(
    faults: Sequence[FaultRecord],
    records: Sequence[AlertRecord],
    fired: Sequence[Sequence[AlertRecord]],
) -> list[list[AlertRecord]]:
    spans = alert_spans(records)
    carried: list[list[AlertRecord]] = []
    for fault, caught in zip(faults, fired, strict=True):
        window_end = fault.healed_wall_ms + int(AFTER_HEAL_S * 1000)
        carried.append(
            []
            if caught
            else [
                first
                for first, resolved in spans
                if first.received_at_ms < fault.injected_wall_ms
                and (resolved is None or resolved > fault.injected_wall_ms)
                and first.received_at_ms <= window_end
                and _names(first, fault.target)
            ]
        )
    return carried


def judge_alerts(faults: Sequence[FaultRecord], records: Sequence[AlertRecord]) -> AlertVerdict:
    attribution = attribute_alerts(faults, records)
    fired = attribution.caught
    false_names = [record.alertname for record in attribution.false]
    resolved_at: dict[str, int] = {}
    for record in records:
        if record.status == "resolved":
            resolved_at[record.fingerprint] = record.received_at_ms
    by_kind: dict[str, list[tuple[FaultRecord, list[AlertRecord], list[AlertRecord]]]] = {}
    for index, fault in enumerate(faults):
        by_kind.setdefault(fault.kind, []).append((fault, fired[index], attribution.carried[index]))
    alerts = {}
    for kind, injections in sorted(by_kind.items()):
        fire_s: list[float] = []
        resolve_s: list[float] = []
        names: set[str] = set()
        paging = 0
        already_firing = 0
        for fault, caught, carried in injections:
            if not caught and carried:
                already_firing += 1
                fire_s.append(0.0)
                names.update(record.alertname for record in carried)
                continue
            if not caught:
                continue
            names.update(record.alertname for record in caught)
            paging += sum(1 for record in caught if record.severity in PAGING_SEVERITIES)
            fire_s.append((min(r.received_at_ms for r in caught) - fault.injected_wall_ms) / 1000)
            resolutions = [resolved_at.get(record.fingerprint) for record in caught]
            if all(at is not None and at >= record.received_at_ms for at, record in zip(
                    resolutions, caught, strict=True)):  # fmt: skip
                last = max(at for at in resolutions if at is not None)
                resolve_s.append(max(0.0, (last - fault.healed_wall_ms) / 1000))
        alerts[kind] = FaultAlerts(
            injected=len(injections),
            detected=len(fire_s),
            median_fire_s=round(statistics.median(fire_s), 2) if fire_s else None,
            median_resolve_s=round(statistics.median(resolve_s), 2) if resolve_s else None,
            alertnames=sorted(names),
            paging=paging,
            already_firing=already_firing,
        )
    return AlertVerdict(
        alerts=alerts, false_alerts=len(false_names), false_alertnames=sorted(set(false_names))
    )
