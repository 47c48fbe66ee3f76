"""Billing reads: the schedule's instants (DST, short months) and the reads a core takes."""

from __future__ import annotations

from fractions import Fraction

import pytest
from core_helpers import MS, NS, merged, model_edges, push_all, push_chunks

from gateway.core.edge import CHANNEL_10
from gateway.core.events import EventKind
from gateway.core.meter import CoreSettings
from gateway.core.reads import ReadingCore
from gateway.core.schedule import ReadSchedule
from gateway.timefmt import format_iso, parse_time_ns

H = 3600 * NS


def iso(text: str) -> int:
    return parse_time_ns(text)


# -- the schedule -------------------------------------------------------------------------------


def test_a_new_york_period_over_the_fall_back_has_721_hours() -> None:
    schedule = ReadSchedule(timezone="America/New_York")
    start, end = schedule.bounds(2026, 11)
    # Midnight EDT on 1 November is 04:00Z; midnight EST on 1 December is 05:00Z.
    assert (format_iso(start), format_iso(end)) == ("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z")
    assert (end - start) // H == 30 * 24 + 1


def test_a_new_york_period_over_the_spring_forward_has_743_hours() -> None:
    start, end = ReadSchedule(timezone="America/New_York").bounds(2026, 3)
    assert (end - start) // H == 31 * 24 - 1


def test_day_31_reads_on_the_last_day_of_short_months() -> None:
    schedule = ReadSchedule(read_day=31, read_time="06:30", timezone="UTC")
    assert format_iso(schedule.read_ns(2026, 2)) == "2026-02-28T06:30:00Z"
    assert format_iso(schedule.read_ns(2028, 2)) == "2028-02-29T06:30:00Z"
    assert format_iso(schedule.read_ns(2026, 4)) == "2026-04-30T06:30:00Z"


def test_a_read_time_in_the_skipped_hour_takes_the_offset_before_the_change() -> None:
    # 8 March 2026, 02:30 does not exist in New York; fold=0 reads it as 02:30 EST = 07:30Z.
    schedule = ReadSchedule(read_day=8, read_time="02:30", timezone="America/New_York")
    assert format_iso(schedule.read_ns(2026, 3)) == "2026-03-08T07:30:00Z"


def test_periods_hold_their_start_and_not_their_end() -> None:
    schedule = ReadSchedule(timezone="Europe/Berlin")
    start, end = schedule.bounds(2026, 7)
    assert format_iso(start) == "2026-06-30T22:00:00Z"
    assert schedule.period_of(start) == (2026, 7)
    assert schedule.period_of(start - 1) == (2026, 6)
    assert schedule.period_of(end) == (2026, 8)
    assert schedule.next_after(start) == end
    assert schedule.start_at_or_before(end - 1) == start


def test_an_unaligned_zone_reads_on_the_next_sub_interval_boundary() -> None:
    # Asia/Kathmandu is UTC+05:45: midnight is 18:15Z, on a 15-minute mark already; with
    # 20-minute sub-intervals the read moves up to 18:20Z.
    assert format_iso(ReadSchedule(timezone="Asia/Kathmandu").read_ns(2026, 5)) == (
        "2026-04-30T18:15:00Z"
    )
    assert format_iso(ReadSchedule(timezone="Asia/Kathmandu", align_s=1200).read_ns(2026, 5)) == (
        "2026-04-30T18:20:00Z"
    )


@pytest.mark.parametrize(
    "kwargs", [{"read_day": 0}, {"read_day": 32}, {"read_time": "24:00"}, {"timezone": "Mars/X"}]
)
def test_bad_schedules_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, KeyError)):
        ReadSchedule(**kwargs)  # type: ignore[arg-type]


# -- reads taken by the core --------------------------------------------------------------------

START = iso("2026-11-30T23:00:00Z")
READ = iso("2026-12-01T00:00:00Z")
END = iso("2026-12-01T01:00:00Z")
UTC_READS = CoreSettings(read_schedule=ReadSchedule(timezone="UTC"))


def _edges() -> list[tuple[int, str, int]]:
    # 12 kW from 23:00 to 23:30, 24 kW from 23:30 to 01:00.
    e10, e1k = model_edges([(START, 12_000_000), (START + H // 2, 24_000_000)], START, END)
    return merged(e10, e1k)


def _run(path: str) -> ReadingCore:
    core = ReadingCore("m1", UTC_READS, start_ns=START, record_subintervals=True)
    if path == "push":
        push_all(core, _edges())
    else:
        push_chunks(core, _edges(), [1000, 2500])
    core.advance(END + 10 * MS)
    return core


@pytest.mark.parametrize("path", ["push", "chunks"])
def test_the_read_at_midnight_by_hand(path: str) -> None:
    core = _run(path)
    (read,) = core.take_reads()
    # 6,000 Wh by 23:30 and 12,000 Wh more by 00:00; the edge at exactly 00:00 (18,000 Wh)
    # belongs to the next period, half-open: 17,995 Wh and 3,599 edges.
    assert (read.period, format_iso(read.t_ns)) == ("2026-11", "2026-12-01T00:00:00Z")
    assert (read.register_wh, read.energy_wh, read.edges, read.lcd_kwh) == (17995, 17995, 3599, 17)
    # The first window wholly at 24 kW ends 23:45; later equal ones do not replace it.
    assert read.peak is not None
    assert read.peak.demand_kw == 24 and format_iso(read.peak.window_end_us * 1000) == (
        "2026-11-30T23:45:00Z"
    )
    # Counting began 23:00 on the period's last day: 719 hours not watched.
    assert read.gap_s == 719 * 3600 and read.quality == "partial"
    # The key switch: the peak after the read is the first window ending after it.
    peak = core.demand.peak if core.demand else None
    assert peak is not None and format_iso(peak.window_end_us * 1000) == "2026-12-01T00:05:00Z"
    assert core.energy_wh == 42000


def test_both_paths_read_the_same() -> None:
    a, b = _run("push"), _run("chunks")
    assert a.take_reads() == b.take_reads()
    assert a.to_state() == b.to_state()


def test_the_read_resets_the_peak_as_an_event() -> None:
    core = _run("push")
    resets = [e for e in core.take_events() if e.kind == EventKind.PEAK_RESET]
    assert [(format_iso(e.t_ns), e.detail) for e in resets] == [
        ("2026-12-01T00:00:00Z", "billing read for 2026-11")
    ]


def test_a_restored_core_reads_once() -> None:
    edges = _edges()
    first = ReadingCore("m1", UTC_READS, start_ns=START)
    half = next(i for i, e in enumerate(edges) if e[0] >= READ - 600 * NS)  # 23:50
    push_all(first, edges[:half])
    first.advance(edges[half - 1][0])
    state = first.to_state()
    second = ReadingCore("m1", UTC_READS)
    second.load_state(state)
    assert first.take_reads() == []
    push_all(second, edges[half:])
    second.advance(END + 10 * MS)
    (read,) = second.take_reads()
    assert read == _run("push").take_reads()[0]
    second.advance(END + 2 * H)
    assert second.take_reads() == []


def test_a_gap_inside_the_period_makes_it_partial_with_a_bounded_estimate() -> None:
    settings = CoreSettings(read_schedule=ReadSchedule(timezone="UTC"), max_power_w=10_000.0)
    start = iso("2026-11-01T00:00:00Z")
    core = ReadingCore("m1", settings, start_ns=start)
    # 1 kW: an edge every 18 s, from 00:00 for one hour; then the gateway is down two hours.
    e10 = [(start + k * 18 * NS, CHANNEL_10, k % 2) for k in range(1, 201)]
    push_all(core, e10)
    core.advance(start + H)
    core.mark_gap(start + H, start + 3 * H, "down", missed_wh=5)
    core.advance(iso("2026-12-01T00:05:00Z"))
    (read,) = core.take_reads()
    # 200 edges; the edge at 01:00:00 (the 200th) was counted before the gap.
    assert read.energy_wh == 1000 and read.gap_s == 2 * 3600 and read.quality == "partial"
    # Never invented: energy stays what was counted; beside it, at least the 5 Wh the levels
    # prove missed, at most what 10 kW could carry in two hours.
    assert read.estimate_wh == (1005, 1000 + 20_000) and read.estimate_from == "gap"
    assert read.peak is not None and read.peak.demand_kw == Fraction(1)


def test_a_quiet_month_still_reads_at_its_instant() -> None:
    core = ReadingCore("m1", UTC_READS, start_ns=iso("2026-11-01T00:00:00Z"))
    core.advance(iso("2027-01-15T00:00:00Z"))
    reads = core.take_reads()
    # Nothing counted is no energy and a peak of 0 kW, and the period was watched whole.
    assert [(r.period, r.energy_wh, r.quality, r.peak and r.peak.demand_kw) for r in reads] == [
        ("2026-11", 0, "complete", 0),
        ("2026-12", 0, "complete", 0),
    ]
