"""Which ledger events the event recorder finds already recorded on start,
when its last window of in-flight events was only partly stored."""

from __future__ import annotations

import random

from ironbook.services.audit_events import PUBLISH_WINDOW, RecordedSources, Source


def _sources(count: int, per_entry: int = 7) -> list[Source]:
    """`count` consecutive significant events, `per_entry` to a log entry."""
    return [(1 + n // per_entry, n % per_entry) for n in range(count)]


def test_nothing_recorded_yet() -> None:
    recorded = RecordedSources.restored([])
    assert not recorded.stored((1, 0))
    assert not recorded.all_stored(1)


def test_a_gap_in_the_last_window_is_found_and_everything_else_is_stored() -> None:
    events = _sources(5_000)
    rng = random.Random(7)
    window_start = 5_000 - PUBLISH_WINDOW
    missing = set(rng.sample(events[window_start:-1], 9))
    stored = [s for s in events if s not in missing]
    rng.shuffle(stored)  # the stream holds a window's events in any order
    recorded = RecordedSources.restored(stored)
    assert recorded.newest == events[-1]
    assert {s for s in events if not recorded.stored(s)} == missing
    assert not recorded.stored((events[-1][0] + 1, 0))
    # Entries wholly before the kept tail need no event-by-event look.
    assert recorded.all_stored(events[window_start - 2 * PUBLISH_WINDOW][0] - 1)
    assert not recorded.all_stored(min(missing)[0])


def test_a_short_history_is_told_apart_one_by_one() -> None:
    events = _sources(100)
    missing = {events[3], events[50]}
    recorded = RecordedSources.restored([s for s in events if s not in missing])
    assert {s for s in events if not recorded.stored(s)} == missing


def test_past_the_tail_everything_up_to_the_newest_is_stored() -> None:
    events = _sources(3_000)
    recorded = RecordedSources.restored(events[:-2] + events[-1:])
    assert not recorded.stored(events[-2])
    after = (events[-1][0] + 1, 0)
    assert recorded.past_tail(after)
    recorded.add(events[-2])
    assert recorded.stored(events[-2])
    recorded.leave_tail()
    assert not recorded.past_tail(after)
    assert all(recorded.stored(s) for s in events)
    recorded.add(after)
    assert recorded.stored(after) and recorded.all_stored(after[0] - 1)
