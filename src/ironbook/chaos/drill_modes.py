"""`ironbook dr drill --dr-mode mirror|stretch|both`: one drill per DR mode,
or both in one run, one after the other with the same seed, duration, WAN
RTT and clients, so that what stretch mode costs in bets per second stands
beside mirror mode's (and what mirror mode loses beside stretch's nothing).

    report = await run_modes("both", DrillOptions(data_dir=path, seed=1))

`mirror`: `chaos.drill` (site A cut off, B promoted, failback); `stretch`:
`chaos.stretch_drill` (one of three sites cut off; the cluster goes on). In
`both`, each runs in its own sub-directory of the data dir (`mirror/`,
`stretch/`), and the verdict passes only if both do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import msgspec

from ironbook.chaos.drill import DrillOptions, DrillReport, require_fresh, run_drill
from ironbook.chaos.stretch_drill import StretchDrillOptions, StretchDrillReport, run_stretch_drill

DrMode = Literal["mirror", "stretch", "both"]
DR_MODES: tuple[DrMode, ...] = ("mirror", "stretch", "both")


class ModesReport(msgspec.Struct):
    """`--dr-mode both`: the two drills and their ratios."""

    mode: str
    verdict: str
    seed: int
    duration_s: float
    wan_rtt_ms_configured: int
    mirror: DrillReport
    stretch: StretchDrillReport
    stretch_vs_mirror: dict[str, float | None]
    """`bets_per_s` (stretch's over mirror's: below 1 is what RPO 0 costs),
    `rto_s`, and `rpo_acked_lost` of each mode."""


def stretch_options(options: DrillOptions) -> StretchDrillOptions:
    """The stretch drill with the mirror drill's seed, duration, RTT and clients."""
    return StretchDrillOptions(
        data_dir=options.data_dir,
        seconds=options.duration_s,
        seed=options.seed,
        wan_rtt_ms=options.wan_rtt_ms,
        clients=options.clients,
    )


async def run_modes(
    mode: DrMode, options: DrillOptions, say: Callable[[str], None] = lambda _: None
) -> DrillReport | StretchDrillReport | ModesReport:
    require_fresh(options.data_dir.resolve())
    if mode == "mirror":
        return await run_drill(options, say)
    if mode == "stretch":
        return await run_stretch_drill(stretch_options(options), say)
    say("mirror mode first, in mirror/")
    mirror = await run_drill(replace(options, data_dir=options.data_dir / "mirror"), say)
    say("then stretch mode, in stretch/")
    stretch = await run_stretch_drill(
        stretch_options(replace(options, data_dir=options.data_dir / "stretch")), say
    )
    return ModesReport(
        mode="both",
        verdict="pass" if mirror.verdict == stretch.verdict == "pass" else "fail",
        seed=options.seed,
        duration_s=options.duration_s,
        wan_rtt_ms_configured=options.wan_rtt_ms,
        mirror=mirror,
        stretch=stretch,
        stretch_vs_mirror=compare(mirror, stretch),
    )


def compare(mirror: DrillReport, stretch: StretchDrillReport) -> dict[str, float | None]:
    ratio = (
        round(stretch.bets_per_s / mirror.bets_per_s, 3)
        if mirror.bets_per_s and stretch.bets_per_s
        else None
    )
    return {
        "bets_per_s": ratio,
        "mirror_bets_per_s": mirror.bets_per_s,
        "stretch_bets_per_s": stretch.bets_per_s,
        "mirror_rto_s": mirror.rto_s,
        "stretch_rto_s": stretch.rto_s,
        "mirror_rpo_acked_lost": mirror.rpo_acked_lost,
        "stretch_rpo_acked_lost": stretch.rpo_acked_lost,
    }
