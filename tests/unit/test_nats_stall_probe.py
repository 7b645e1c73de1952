"""Which NATS server stalls, judged against the quickest of the same round
(`services.nats_stall_probe`): probes answered by a scripted clock."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ironbook.services.nats_stall_probe import REFUSED, StallProbe

URLS = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]
A, B, C = (url.removeprefix("http://") for url in URLS)


class Script:
    """Answer times per round, and a clock that moves a second per round."""

    def __init__(self, rounds: list[Mapping[str, float]]) -> None:
        self.rounds = rounds
        self.index = 0
        self.now = 0.0

    async def probe(self, url: str, timeout_s: float) -> float:
        return min(timeout_s, self.rounds[self.index][url.removeprefix("http://")])

    def clock(self) -> float:
        return self.now


def run(script: Script, **options: float) -> StallProbe:
    probe = StallProbe(URLS, probe=script.probe, clock=script.clock, **options)

    async def all_rounds() -> None:
        for index in range(len(script.rounds)):
            script.index, script.now = index, float(index)
            await probe.round()

    asyncio.run(all_rounds())
    return probe


def test_a_server_answering_late_against_the_others_is_stalled() -> None:
    calm = {A: 0.002, B: 0.003, C: 0.002}
    late = {A: 0.002, B: 0.2, C: 0.003}
    probe = run(Script([calm, late, calm, late]), window_s=100.0)
    assert probe.ratios() == {A: 0.0, B: 0.5, C: 0.0}


def test_a_slow_host_that_delays_every_answer_alike_stalls_none() -> None:
    busy = {A: 0.3, B: 0.31, C: 0.32}
    probe = run(Script([busy, busy]), window_s=100.0)
    assert probe.ratios() == {A: 0.0, B: 0.0, C: 0.0}


def test_no_answer_in_time_is_a_stall_and_a_refusal_is_left_out() -> None:
    frozen = {A: 0.002, B: 10.0, C: REFUSED}
    probe = run(Script([frozen, frozen]), window_s=100.0, timeout_s=0.5)
    assert probe.ratios() == {A: 0.0, B: 1.0}  # C not running: reported down elsewhere


def test_only_the_last_window_counts() -> None:
    calm = {A: 0.002, B: 0.003, C: 0.002}
    late = {A: 0.002, B: 0.2, C: 0.003}
    probe = run(Script([late, late, calm, calm, calm]), window_s=2.0)
    assert probe.ratios() == {A: 0.0, B: 0.0, C: 0.0}


def test_a_round_where_nothing_answers_says_nothing() -> None:
    down = {A: REFUSED, B: REFUSED, C: REFUSED}
    assert run(Script([down]), window_s=100.0).ratios() == {}
