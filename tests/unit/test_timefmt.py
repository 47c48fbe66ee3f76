import pytest

from gateway.timefmt import format_epoch, format_iso, parse_time_ns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1764057600", 1_764_057_600_000_000_000),
        ("1764057600.123456", 1_764_057_600_123_456_000),
        ("1764057600.123456789", 1_764_057_600_123_456_789),
        ("1764057600.5", 1_764_057_600_500_000_000),
        ("2025-11-25T08:00:00Z", 1_764_057_600_000_000_000),
        ("2025-11-25T08:00:00.123456Z", 1_764_057_600_123_456_000),
        ("2025-11-25T09:00:00+01:00", 1_764_057_600_000_000_000),
        ("2025-11-25T03:00:00-0500", 1_764_057_600_000_000_000),
    ],
)
def test_parse_time_exactly(text: str, expected: int) -> None:
    assert parse_time_ns(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "abc", "1764057600.1234567890", "2025-11-25T08:00:00", "2025-13-25T08:00:00Z", "1e9"],
)
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_time_ns(text)


def test_format_round_trips() -> None:
    t_ns = 1_764_057_600_123_456_000
    assert format_epoch(t_ns) == "1764057600.123456"
    assert format_iso(t_ns) == "2025-11-25T08:00:00.123456Z"
    assert format_iso(1_764_057_600_000_000_000) == "2025-11-25T08:00:00Z"
    assert parse_time_ns(format_iso(t_ns)) == t_ns
    assert parse_time_ns(format_epoch(t_ns, 9)) == t_ns
