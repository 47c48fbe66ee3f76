import pytest

from gateway.errors import PulseLogError
from gateway.loadprofile import parse_kw_to_mw, read_profile


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
