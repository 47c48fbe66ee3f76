"""Where the data has holes: time nobody watched is a gap (SPEC 2), in intervals and reads."""

from __future__ import annotations

from core_helpers import NS, push_all

from gateway.core.edge import CHANNEL_10
from gateway.core.events import EventKind
from gateway.core.meter import CoreSettings
from gateway.core.reads import ReadingCore
from gateway.core.schedule import ReadSchedule
from gateway.timefmt import format_iso, parse_time_ns

H = 3600 * NS
UTC_READS = CoreSettings(read_schedule=ReadSchedule(timezone="UTC"))


def iso(text: str) -> int:
    return parse_time_ns(text)


def _one_kw(start_ns: int, count: int, first_level: int = 1) -> list[tuple[int, str, int]]:
    """1 kW on `10`: an edge (5 Wh) every 18 s after ``start_ns``."""
    return [
        (start_ns + k * 18 * NS, CHANNEL_10, (first_level + k - 1) % 2) for k in range(1, count + 1)
    ]


def test_an_outage_across_a_read_instant_is_split_between_both_periods() -> None:
    # Counting from 20:00Z on 30 November; down from 21:00Z to 02:00Z on 1 December, across
    # the read at midnight; the restarted core is the one a restarted daemon restores.
    start = iso("2026-11-30T20:00:00Z")
    first = ReadingCore("m1", UTC_READS, start_ns=start)
    push_all(first, _one_kw(start, 200))  # 200 edges to 21:00:00
    first.advance(start + H)
    core = ReadingCore("m1", UTC_READS)
    core.load_state(first.to_state())
    back = iso("2026-12-01T02:00:00Z")
    core.mark_gap(start + H, back, "down")
    core.advance(back)
    push_all(core, _one_kw(back, 10, first_level=1))
    core.advance(iso("2027-01-01T00:10:00Z"))
    november, december = core.take_reads()
    # November: not watched before 20:00Z (29 days 20 h) and from 21:00Z to midnight (3 h).
    assert (november.period, november.quality) == ("2026-11", "partial")
    assert november.gap_s == (29 * 24 + 20 + 3) * 3600
    # December carries its share: midnight to 02:00Z, two hours.
    assert (december.period, december.quality, december.gap_s) == ("2026-12", "partial", 2 * 3600)
    assert (november.energy_wh, december.energy_wh) == (1000, 50)


def test_intervals_nobody_watched_are_gap_and_carry_their_unwatched_seconds() -> None:
    start = iso("2026-11-30T20:00:00Z")
    core = ReadingCore("m1", UTC_READS, start_ns=start + 100 * NS)
    push_all(core, _one_kw(start + 100 * NS, 10))  # to 20:04:40
    core.mark_gap(start + 600 * NS, start + 2700 * NS, "down")  # 20:10 to 20:45
    closed = core.advance(start + H + NS)
    assert closed is not None
    got = [(format_iso(i.start_ns), i.quality, i.energy_wh, i.unwatched_s) for i in closed]
    assert got == [
        ("2026-11-30T20:00:00Z", "partial", 50, 100 + 300),  # began 20:01:40, down from 20:10
        ("2026-11-30T20:15:00Z", "gap", 0, 900),  # nobody watched: never complete with 0 Wh
        ("2026-11-30T20:30:00Z", "gap", 0, 900),
        ("2026-11-30T20:45:00Z", "complete", 0, 0),  # watched, and nothing came
    ]


# -- a changed schedule --------------------------------------------------------------------------

NEW_YORK = CoreSettings(read_schedule=ReadSchedule(timezone="America/New_York"))


def test_a_changed_time_zone_takes_effect_from_the_next_read_and_invents_none() -> None:
    # Counted from 4 December in UTC; restarted on 5 December with New York's midnight.
    start = iso("2026-12-04T00:00:00Z")
    first = ReadingCore("m1", UTC_READS, start_ns=start)
    push_all(first, _one_kw(start, 200))
    first.advance(start + H)
    peak_before = first.demand.peak if first.demand else None
    assert first.take_reads() == [] and peak_before is not None
    core = ReadingCore("m1", NEW_YORK)
    core.load_state(first.to_state())
    back = iso("2026-12-05T00:00:00Z")
    core.mark_gap(start + H, back, "down")
    core.advance(back)
    # No read for "November" from 1 December 00:00Z to 05:00Z, and the peak is not reset.
    assert core.take_reads() == []
    assert core.demand is not None and core.demand.peak == peak_before
    changes = [e for e in core.take_events() if e.kind == EventKind.SCHEDULE]
    assert [(format_iso(e.t_ns), e.detail) for e in changes] == [
        (
            "2026-12-05T00:00:00Z",
            "billing schedule changed from day 1 at 00:00 UTC to day 1 at 00:00 "
            "America/New_York; the period that began 2026-12-01T00:00:00Z ends at "
            "2027-01-01T05:00:00Z",
        )
    ]
    # Restarted again before that read, the period still ends there, once.
    again = ReadingCore("m1", NEW_YORK)
    again.load_state(core.to_state())
    again.advance(iso("2027-01-01T05:10:00Z"))
    (read,) = again.take_reads()
    assert (read.period, format_iso(read.start_ns), format_iso(read.t_ns)) == (
        "2026-12",
        "2026-12-01T00:00:00Z",
        "2027-01-01T05:00:00Z",
    )
    assert read.energy_wh == 1000 and read.peak == peak_before
    again.advance(iso("2027-02-01T05:10:00Z"))
    (february,) = again.take_reads()
    assert format_iso(february.start_ns) == "2027-01-01T05:00:00Z"
    assert format_iso(february.t_ns) == "2027-02-01T05:00:00Z"


def test_a_read_the_old_schedule_owed_before_the_change_is_still_taken() -> None:
    # Down from 30 November 20:00Z over the UTC read at midnight; back on 2 December with New
    # York's schedule: the read at 1 December 00:00Z was the old schedule's, before the change.
    start = iso("2026-11-30T18:00:00Z")
    first = ReadingCore("m1", UTC_READS, start_ns=start)
    push_all(first, _one_kw(start, 200))
    first.advance(start + 2 * H)
    core = ReadingCore("m1", NEW_YORK)
    core.load_state(first.to_state())
    core.mark_gap(start + 2 * H, iso("2026-12-02T00:00:00Z"), "down")
    core.advance(iso("2026-12-02T00:00:00Z"))
    (november,) = core.take_reads()
    assert (november.period, format_iso(november.t_ns)) == ("2026-11", "2026-12-01T00:00:00Z")
    assert core.next_read_ns == iso("2027-01-01T05:00:00Z")


def test_a_day_or_more_of_empty_intervals_is_held_as_one_range() -> None:
    start = iso("2026-11-30T00:00:00Z")
    core = ReadingCore("m1", UTC_READS, start_ns=start)
    push_all(core, _one_kw(start, 10))  # 00:00:18 to 00:03:00
    core.mark_gap(start + 900 * NS, start + 900 * NS + 2 * 24 * H, "down two days")
    closed = core.finish(iso("2026-12-02T12:00:00Z"))
    assert closed is not None and len(closed) == 2 * 96 + 48
    got = [
        (format_iso(i.start_ns), format_iso(i.end_ns), i.quality, i.energy_wh, i.unwatched_s)
        for i in closed.compact()
    ]
    assert got == [
        ("2026-11-30T00:00:00Z", "2026-11-30T00:15:00Z", "complete", 50, 0),
        ("2026-11-30T00:15:00Z", "2026-12-02T00:15:00Z", "gap", 0, 2 * 86400),
        # Watched and empty from 00:15 to 12:00 on 2 December: 47 intervals, less than a day,
        # one by one.
        *[
            (format_iso(t), format_iso(t + 900 * NS), "complete", 0, 0)
            for t in range(iso("2026-12-02T00:15:00Z"), iso("2026-12-02T12:00:00Z"), 900 * NS)
        ],
    ]
