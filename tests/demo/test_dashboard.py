"""The dashboard renders a frame (and a plain line) from a `LiveState`."""

from __future__ import annotations

import time

from ironbook.cli.demo import big_word
from ironbook.demo.cluster_view import ClusterView, NodeView, ReplicaView
from ironbook.demo.dashboard import countdown, plain_line, render_to_text, sparkline
from ironbook.demo.raceday import LiveState
from ironbook.demo.timeline import Sample, Timeline

NOW_MS = 1_800_000_000_000


def live_state() -> LiveState:
    view = ClusterView(
        nats=[
            NodeView("n1", process="up", healthy=True, leads=[0]),
            NodeView("n2", process="down"),
            NodeView("n3", process="up", healthy=True, leads=[1], cut_off=True),
        ],
        replicas=[
            ReplicaView("p0-r1", 0, "up", "leader", 3, 1_234, NOW_MS - 200),
            ReplicaView("p0-r2", 0, "frozen", "leader", 2, 1_100, NOW_MS - 5_000),
            ReplicaView("p0-r3", 0, "up", "follower", 3, 1_233, NOW_MS - 300),
            ReplicaView("p1-r1", 1, "up", "follower", 1, 900, NOW_MS - 100),
            ReplicaView("p1-r2", 1, "down", "?", 0, 0, 0),
            ReplicaView("p1-r3", 1, "up", "follower", 1, 901, NOW_MS - 9_000),
        ],
    )
    samples = [
        Sample(t, 64, 100 * t, 100 * t + 5, 2, 1 if t == 9 else 0, 4.5, 180.0) for t in range(10)
    ]
    live = LiveState(
        seed=5,
        partitions=2,
        phase="surge: faults at the peak",
        started_monotonic=time.monotonic() - 10.2,
        off_at_s=40.0,
        clients=64,
        traffic=True,
        timeline=Timeline(samples=samples),
        fault_lines=["  10.0s  leader_kill (partition 0) injected"],
        fault_in_progress="leader_kill on partition 0",
        view=view,
        totals={"ok": 4_500, "bets_ok": 4_000, "fail": 20, "info": 1},
        retries=17,
        notes=["partition: needs root; injected leader_pause instead"],
    )
    return live


def test_a_frame_shows_nodes_leaders_traffic_faults_and_the_countdown() -> None:
    text = render_to_text(live_state(), width=120, now_ms=NOW_MS)
    assert "ironbook race day" in text
    assert "the off in 0:" in text
    # Leaders: the newest term among live leaders; p1 has none right now.
    assert "p0 p0-r1 (term 3)" in text
    assert "p1 electing" in text
    for expected in ("nats n1", "healthy", "nats n2", "down", "cut off", "frozen", "silent"):
        assert expected in text, expected
    assert "replica p0-r3" in text and "follower" in text
    assert "leads stream of p0" in text
    assert "900" in text  # bets/s of the last second
    assert "180 ms" in text and "4.5 ms" in text
    assert "1 gave up, 17 requests resent" in text
    assert "leader_kill (partition 0) injected" in text
    assert "waiting for the cluster to heal" in text
    assert "injected leader_pause instead" in text


def test_a_frame_before_the_cluster_is_up() -> None:
    text = render_to_text(LiveState(seed=1, partitions=2), width=100, now_ms=NOW_MS)
    assert "starting the cluster" in text
    assert "no faults yet" in text


def test_the_plain_line() -> None:
    line = plain_line(live_state(), now_ms=NOW_MS)
    assert line.startswith("t+ 10.")
    assert "clients 64 bets/s 900" in line
    assert "leaders p0=p0-r1 p1=?" in line
    assert "FAULT leader_kill on partition 0" in line


def test_countdown_and_sparkline() -> None:
    live = LiveState(seed=1, partitions=1, started_monotonic=time.monotonic() - 5, off_at_s=70.0)
    assert countdown(live) == "the off in 1:05"
    assert countdown(LiveState(seed=1, partitions=1)) == ""
    assert sparkline([]) == ""
    assert sparkline([0, 5, 10]) == " ▄█"


def test_the_verdict_in_big_letters() -> None:
    rows = big_word("PASS").splitlines()
    assert len(rows) == 5
    assert rows[0].startswith("█████")
    assert len(big_word("FAIL").splitlines()) == 5


def test_the_off_is_held_while_a_fault_heals() -> None:
    live = LiveState(
        seed=1,
        partitions=1,
        phase="surge: faults at the peak",
        started_monotonic=time.monotonic() - 50,
        off_at_s=40.0,
        fault_in_progress="partition on partition 0",
    )
    assert countdown(live) == "the off: held until the fault heals"


def test_the_last_cluster_view_is_shown_as_of_when_watching_ended() -> None:
    live = live_state()
    live.view_as_of_ms = NOW_MS
    text = render_to_text(live, width=120, now_ms=NOW_MS + 60_000)
    assert "cluster (when the traffic ended)" in text
    assert "p0 p0-r1 (term 3)" in text  # not "electing": heartbeats are judged as of then
