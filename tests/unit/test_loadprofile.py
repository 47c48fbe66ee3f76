import gzip
import tempfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import loadprofile
from gateway.errors import PulseLogError
from gateway.loadprofile import LoadProfile, parse_kw_to_mw, read_profile
from gateway.timefmt import format_iso


def test_profile_rows_become_integer_mw(tmp_path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "# a comment\ntime,kw\n1764057600,12\n2025-11-25T08:05:00Z,0.0015\n1764058200,3\n"
    )
    profile = read_profile(path)
    assert profile.t_us.tolist() == [
        1_764_057_600_000_000,
        1_764_057_900_000_000,
        1_764_058_200_000_000,
    ]
    assert profile.power_mw.tolist() == [12_000_000, 1_500]  # the last row only ends the run
    assert profile.lines.tolist() == [3, 4, 5]


def test_kw_parsing_is_exact() -> None:
    assert parse_kw_to_mw("1.234567") == 1_234_567
    assert parse_kw_to_mw("0.1") == 100_000
    assert parse_kw_to_mw("1e1") == 10_000_000
    with pytest.raises(ValueError, match="negative"):
        parse_kw_to_mw("-1")
    with pytest.raises(ValueError, match="not a number"):
        parse_kw_to_mw("lots")
    with pytest.raises(ValueError, match="finite"):
        parse_kw_to_mw("nan")


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("time,power\n1,2\n", 1, "header"),
        ("time,kw\n1764057600,1\n1764057500,1\n", 3, "sorted"),
        ("time,kw\n1764057600,1\n1764057600,1\n", 3, "sorted"),
        ("time,kw\n1764057600,-2\n1764057900,1\n", 2, "negative"),
        ("time,kw\n1764057600,abc\n1764057900,1\n", 2, "not a number"),
        ("time,kw\n1764057600,1,3\n", 2, "2 fields"),
        ("time,kw\nsoon,1\n", 2, "time"),
    ],
)
def test_bad_profiles_name_file_and_line(tmp_path, body: str, line: int, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(PulseLogError, match=message) as info:
        read_profile(path)
    assert info.value.line == line
    assert str(path) in str(info.value)


def test_profile_needs_two_rows(tmp_path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("time,kw\n1764057600,1\n")
    with pytest.raises(PulseLogError, match="two rows"):
        read_profile(path)


# -- the vectorised reader against the reference line parser ------------------------------------

T0_S = 1_764_057_600


@st.composite
def profile_texts(draw: st.DrawFn) -> str:
    """Profile files, mostly plain rows, with every kind of line the reference parser meets.

    One file in three holds an error: a bad header, a bad row, or a time not after the last.
    """
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    lines = draw(st.lists(st.sampled_from(["# comment", "", "  "]), max_size=2))
    # A bare CR ends a line too: "# made by\rtime,kw" is a comment, then the header.
    lines.append(draw(st.sampled_from(["time,kw", "time,kw", "Time, KW", "# made by\rtime,kw"])))
    t_us = T0_S * 1_000_000 + draw(st.integers(-(10**6), 10**6))
    rows = draw(st.integers(2, 40))
    for _ in range(rows):
        # A time to 10**-digits s, after the last.
        digits = draw(st.sampled_from([0, 1, 3, 6, 6, 6, 9]))
        step_us = 10 ** max(0, 6 - digits)
        t_us = (t_us // step_us + 1 + draw(st.integers(0, 3) | st.just(60_000))) * step_us
        seconds, us = divmod(t_us, 1_000_000)
        extra = f"{draw(st.integers(0, 999)):03d}" if digits == 9 else ""  # truncated
        time_text = f"{seconds}.{us:06d}{extra}"[: 11 + digits] if digits else str(seconds)
        kw = draw(
            st.sampled_from(["0", "7", "12.5", "0.123456", "007.25", "999999999999.999999"])
            | st.builds("{}.{}".format, st.integers(0, 999), st.integers(0, 10**6))
        )
        odd = draw(st.integers(0, 20))
        if odd == 0:  # an ISO time
            time_text = format_iso(t_us * 1000)
        elif odd == 1:  # kW the line parser reads: Decimal, rounded, padded
            kw = draw(st.sampled_from(["1e1", ".5", "3.", "1.1234567", " 2 "]))
        line = f"{time_text},{kw}"
        if odd == 2:
            line = draw(st.sampled_from([f" {line} ", f"{line}\r", f"{line}{newline}# a note"]))
        lines.append(line)
    if draw(st.integers(0, 2)) == 0:  # one error, in a row the fast path might take
        first_row = len(lines) - rows
        where = draw(st.integers(first_row, len(lines) - 1))
        kind = draw(st.sampled_from(["repeat", "first", "last", "any"]))
        if kind == "repeat":  # a time equal to the one before
            lines.insert(where, lines[where].strip().split("#")[0].strip() or lines[where])
        elif kind == "first":  # times only the first row could have in order
            lines.insert(first_row, draw(st.sampled_from([".5,1", "17.,1", "-5,1"])))
        elif kind == "last":  # in order, but not a time: the last row
            later = seconds + 100
            lines.append(draw(st.sampled_from([f"{later}.,1", f"{later}.1234567891,1"])))
        else:
            bad = ["time,power", "1764057600,-1", "1764057600,x", "1764057600,1,2"]
            lines.insert(where, draw(st.sampled_from(bad)))
    return newline.join(lines) + draw(st.sampled_from([newline, ""]))


def _outcome(path: Path, reader: Callable[[str], LoadProfile]) -> tuple[object, ...]:
    try:
        profile = reader(str(path))
    except PulseLogError as exc:
        return ("error", str(exc), exc.line)
    return (profile.path, *(getattr(profile, k).tolist() for k in ("t_us", "power_mw", "lines")))


def _reference(path: str) -> LoadProfile:
    return loadprofile.read_lines(path).profile()


@settings(max_examples=500, deadline=None)
@given(text=profile_texts(), chunk_bytes=st.sampled_from([16, 64, 200, 1 << 20]), gz=st.booleans())
def test_the_fast_reader_agrees_with_the_line_parser(text: str, chunk_bytes: int, gz: bool) -> None:
    """Same rows, or the same error naming the same line, whatever the file holds."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ("p.csv.gz" if gz else "p.csv")
        data = text.encode()
        path.write_bytes(gzip.compress(data) if gz else data)
        with mock.patch.object(loadprofile, "CHUNK_BYTES", chunk_bytes):
            assert _outcome(path, read_profile) == _outcome(path, _reference)


def test_plain_rows_skip_the_line_parser(tmp_path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "# made by hand\ntime,kw\n"
        + "".join(f"{T0_S + 60 * i}.{i:06d},{i % 7}.{i:03d}\n" for i in range(1000))
        + f"{T0_S + 60_000}.5,0\r\n"
    )
    parse_line = loadprofile.Rows.line
    with mock.patch.object(loadprofile.Rows, "line", autospec=True, side_effect=parse_line) as spy:
        profile = read_profile(path)
    assert spy.call_count == 2  # the comment and the header
    assert profile.t_us[1] == (T0_S + 60) * 1_000_000 + 1
    assert profile.power_mw[999] == 5_999_000
    assert profile.end_us == (T0_S + 60_000) * 1_000_000 + 500_000
    assert profile.lines.tolist() == list(range(3, 1004))
    assert _outcome(path, read_profile) == _outcome(path, _reference)


def test_a_broken_gzip_profile_is_an_error_naming_the_file(tmp_path) -> None:
    path = tmp_path / "p.csv.gz"
    rows = "".join(f"{T0_S + i},1\n" for i in range(1000))
    path.write_bytes(gzip.compress(f"time,kw\n{rows}".encode())[:-30])
    with pytest.raises(PulseLogError, match="cannot read") as info:
        read_profile(path)
    assert info.value.path == str(path)
