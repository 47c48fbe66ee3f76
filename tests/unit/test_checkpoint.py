"""The commit policy and what waits for a failing database (pure: no clock, no database)."""

from __future__ import annotations

import itertools

from gateway.checkpoint import MAX_PENDING, Checkpoint, CommitPolicy
from gateway.core.events import Event, EventKind
from gateway.core.intervals import Interval
from gateway.core.reads import MeterRead

S = 1_000_000_000


def test_nothing_changed_means_no_commit() -> None:
    policy = CommitPolicy(10 * S, last_ns=0)
    assert not policy.due(3600 * S, urgent=False, dirty=False)


def test_edges_commit_at_most_every_interval() -> None:
    policy = CommitPolicy(10 * S, last_ns=0)
    assert not policy.due(9 * S, urgent=False, dirty=True)
    assert policy.due(10 * S, urgent=False, dirty=True)


def test_something_closing_commits_at_once_but_at_most_once_a_second() -> None:
    policy = CommitPolicy(10 * S, last_ns=0)
    assert policy.due(1 * S, urgent=True, dirty=False)
    policy.succeeded(1 * S)
    assert not policy.due(1 * S + S // 10, urgent=True, dirty=True)  # a fast replay's next tick
    assert policy.due(2 * S, urgent=True, dirty=False)


def test_a_failing_database_is_retried_with_growing_pauses() -> None:
    policy = CommitPolicy(10 * S, last_ns=0)
    tries = []
    now = 0
    for _ in range(400):
        now += S
        if policy.due(now, urgent=True, dirty=True):
            tries.append(now // S)
            policy.failed(now)
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps[:5] == [1, 2, 5, 10, 30] and set(gaps[5:]) == {60}
    assert policy.succeeded(now + S) == tries[0] * S  # since when it failed
    assert policy.failing_since_ns is None and policy.due(now + 2 * S, urgent=True, dirty=False)


def test_what_waits_is_bounded_and_the_storage_events_stay() -> None:
    checkpoint = Checkpoint("m", "2O208-4W", "gpio")
    outage = Event(0, EventKind.STORAGE, None, "the database failed")
    checkpoint.add_events([outage])
    checkpoint.add_events(Event(t, EventKind.GLITCH, "10", "x") for t in range(1, 1500))
    checkpoint.add_intervals(
        Interval("m", k * 900 * S, (k + 1) * 900 * S, 0, 0, "complete") for k in range(3100)
    )
    checkpoint.trim(now_ns=42)
    assert len(checkpoint.intervals) == MAX_PENDING["intervals"]
    assert checkpoint.intervals[0].start_ns == 100 * 900 * S  # the oldest went
    # The limit, and beyond it only the storage event that tells of the outage.
    assert checkpoint.events[0] is outage and len(checkpoint.events) == MAX_PENDING["events"] + 1
    assert checkpoint.events[1].t_ns == 500  # glitches 1..499 went
    assert checkpoint.dropped == {"intervals": 100, "events": 499}


def test_a_billing_read_alone_is_urgent() -> None:
    """A read must be on the card before MQTT publishes it, even with no interval, event or
    peak reset beside it (a meter without demand, its read between two interval ends)."""
    checkpoint = Checkpoint("m", "2O208-4W", "gpio")
    assert not checkpoint.urgent
    checkpoint.reads.append(
        MeterRead("m", "2025-11", 0, 600 * S, "10", 1_000, 1_000, 200, None, 900, 0, 0, 0, 0)
    )
    assert checkpoint.urgent
    policy = CommitPolicy(10 * S, last_ns=0)
    assert policy.due(1 * S, urgent=checkpoint.urgent, dirty=False)  # at once, not in 10 s
