"""Bad input never crashes, hangs or lies (issue #12): the parsers and the config loader.

Every case the fuzzing pass of the issue found has a regression test here; then hypothesis
fuzzes the pulse-log reader (its fast numpy paths against the reference row parser), the profile
reader and the config loader with the invariant: the exact answer, or the gateway's own error
with a one-line message naming the file and line (or the key). Never any other exception.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logs import read_log_and_metadata

from gateway.config import BOUNDS, backend_bounds, core_settings, meter_config, parse_config
from gateway.core.edge import CHANNELS, Edge
from gateway.errors import ConfigError, PulseLogError
from gateway.loadprofile import read_profile
from gateway.pulselog import HEADER, parse_row
from gateway.timefmt import MAX_TIME_NS, NS_PER_S, format_epoch, format_iso, parse_time_ns

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
T0 = 1_764_057_600  # 2025-11-25T08:00:00Z


def scan(path: Path) -> tuple[list[Edge], dict[str, str]]:
    return read_log_and_metadata(path)


def reference(path: Path, text: str) -> list[Edge] | int:
    """The oracle: the rows the reference parser reads, or the line it rejects first."""
    text = text.removeprefix("\ufeff")  # a leading byte-order mark is no content (issue #12)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    edges: list[Edge] = []
    header_seen = False
    for line_no, line in enumerate(lines, 1):
        # Metadata may stand anywhere (a capture writes its end= last) and is checked as rows are.
        if line.startswith("#"):
            for token in line[1:].split():
                key, sep, value = token.partition("=")
                if sep and key in ("start", "end"):
                    try:
                        parse_time_ns(value)
                    except ValueError:
                        return line_no
            continue
        if not header_seen:
            if not line.strip():
                continue
            if line.strip() != HEADER:
                return line_no
            header_seen = True
            continue
        if not line.strip():
            continue
        try:
            edges.append(parse_row(str(path), line_no, line))
        except PulseLogError:
            return line_no
    return edges


def assert_one_line(exc: Exception, path: object) -> None:
    message = str(exc)
    assert "\n" not in message and "\r" not in message
    assert str(path) in message


# -- regressions: the cases issue #12 names ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "10000000000",  # overflowed int64 ns in the fast path: came out as 1680-1702
        "99999999999.5",
        "7258118400",  # 2200-01-01T00:00:00Z: the first time out of range
        "-1",
        "9999-12-31T23:59:58Z",
        "0001-01-01T00:00:00-01:00",
        "2200-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "１７64057600",  # full-width digits
        "2025-11-25T08:00:00+24:00",
        "9" * 5000,
    ],
)
def test_times_outside_the_range_or_not_ascii_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="bad time"):
        parse_time_ns(text)


def test_the_range_ends_are_exact() -> None:
    assert parse_time_ns("0") == 0
    assert parse_time_ns("1970-01-01T01:00:00+01:00") == 0
    assert parse_time_ns("7258118399.999999999") == MAX_TIME_NS - 1
    assert parse_time_ns("2199-12-31T23:59:59.999999999Z") == MAX_TIME_NS - 1


@pytest.mark.parametrize(
    "time_text",
    ["10000000000.5", "99999999999.123456", "999999999999999999.5", "10000000000"],
)
@pytest.mark.parametrize("rows", [1, 3])
def test_huge_epoch_times_are_an_error_in_every_fast_path(tmp_path, time_text, rows) -> None:
    # Equal widths go through the fixed-width path, mixed widths through the general one.
    good = [f"{T0}.{i:0{len(time_text.split('.')[-1])}d},m,10,{i % 2}" for i in range(rows)]
    good = [g if "." in time_text else g.split(".")[0] + g[g.index(",") :] for g in good]
    log = tmp_path / "log.csv"
    log.write_text(f"{HEADER}\n" + "".join(f"{g}\n" for g in good) + f"{time_text},m,10,1\n")
    with pytest.raises(PulseLogError) as info:
        scan(log)
    assert f"log.csv:{rows + 2}: bad time" in str(info.value)


@pytest.mark.parametrize("width", ["1764057600.", "1764057600.,"])
def test_a_dot_without_digits_is_malformed_on_every_path(tmp_path, width) -> None:
    log = tmp_path / "log.csv"
    log.write_text(f"{HEADER}\n1764057600.,m,10,1\n1764057601.,m,10,0\n")
    with pytest.raises(PulseLogError, match=r"log\.csv:2: bad time"):
        scan(log)


@pytest.mark.parametrize(
    ("comment", "line"),
    [
        ("# start=abc", 1),
        ("# amr-gateway\n# end=99999999999", 2),  # replay allocated intervals to year 5138
        ("# end=9000000000", 1),
        ("# start=0001-01-01T00:00:00-01:00", 1),
        ("# end=１７64057600", 1),
    ],
)
def test_bad_start_or_end_metadata_is_an_error_naming_the_line(tmp_path, comment, line) -> None:
    log = tmp_path / "log.csv"
    log.write_text(f"{comment}\n{HEADER}\n{T0}.5,m,10,1\n")
    with pytest.raises(PulseLogError) as info:
        scan(log)
    assert f"log.csv:{line}: " in str(info.value) and "bad time" in str(info.value)


def test_good_metadata_is_kept(tmp_path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(f"# start={format_iso(T0 * NS_PER_S)} end={T0 + 60}\n{HEADER}\n{T0}.5,m,10,1\n")
    assert scan(log)[1] == {"start": "2025-11-25T08:00:00Z", "end": str(T0 + 60)}


def test_a_byte_order_mark_is_read_as_the_text_it_precedes(tmp_path) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes(f"\ufeff{HEADER}\n{T0}.5,m,10,1\n".encode())
    assert scan(log)[0] == [Edge(T0 * NS_PER_S + NS_PER_S // 2, "m", "10", 1)]
    profile = tmp_path / "profile.csv"
    profile.write_bytes(f"\ufefftime,kw\n{T0},1\n{T0 + 60},0\n".encode())
    assert read_profile(profile).start_us == T0 * 1_000_000


def test_a_meter_name_with_a_trailing_newline_is_not_a_name() -> None:
    from gateway.pulselog import valid_meter_name

    assert valid_meter_name("m") and not valid_meter_name("m\n")


@pytest.mark.parametrize("kw", ["１２", "1e400", "9" * 40, "1000001", "nan", "0x10"])
def test_profile_kw_beyond_sense_is_an_error(tmp_path, kw) -> None:
    profile = tmp_path / "profile.csv"
    profile.write_text(f"time,kw\n{T0},{kw}\n{T0 + 60},0\n")
    with pytest.raises(PulseLogError, match=r"profile\.csv:2: kw"):
        read_profile(profile)


@pytest.mark.parametrize("time_text", ["10000000000", "9999-12-31T23:59:58Z", "-5"])
def test_profile_times_outside_the_range_are_an_error(tmp_path, time_text) -> None:
    profile = tmp_path / "profile.csv"
    profile.write_text(f"time,kw\n{T0},1\n{time_text},0\n")
    with pytest.raises(PulseLogError, match=r"profile\.csv:3: bad time"):
        read_profile(profile)


def meter_table(**extra: object) -> dict[str, object]:
    return {"name": "m", "model": "2O208-4W", "source": "gpio", "pin_10": 17, **extra}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"ct_rating_a": 1e-300}, "meters[0].ct_rating_a: 1e-300 is out of range"),
        ({"interval_s": 2**40, "window_s": 2**40}, "meters[0].window_s"),
        ({"wh_per_edge_10": 2**62}, "meters[0].wh_per_edge_10"),
        ({"glitch_ms": 1e20}, "meters[0].glitch_ms"),
        ({"ct_rating_a": 10**400}, "meters[0].ct_rating_a"),
        ({"pin_10": 99}, "meters[0].pin_10: 99 is out of range: 0 to 27"),
        ({"pin_1k": -1}, "meters[0].pin_1k"),
        ({"name": "m\n"}, "meters[0].name"),
        ({"source": "simulate", "pin_10": None, "speed": 1e308}, "meters[0].speed"),
    ],
)
def test_config_numbers_beyond_physical_sense_are_named(extra, needle) -> None:
    table = {k: v for k, v in meter_table(**extra).items() if v is not None}
    with pytest.raises(ConfigError) as info:
        parse_config({"meters": [table]}, "c.toml")
    assert needle in str(info.value) and str(info.value).startswith("c.toml: ")


# -- fuzz: the pulse-log reader --------------------------------------------------------------

NAMES = st.sampled_from(["m", "unit-101", "A_1", "x" * 64])
TIMES = st.integers(0, MAX_TIME_NS - 1)


def render_time(t_ns: int, form: int) -> str:
    if form == 0:
        return format_epoch(t_ns, 9)
    if form == 1:
        return format_epoch(t_ns - t_ns % 1000, 6)
    if form == 2:
        return format_epoch(t_ns - t_ns % NS_PER_S, 0)
    return format_iso(t_ns - t_ns % 1000)


@st.composite
def clean_logs(draw: st.DrawFn) -> str:
    rows = draw(
        st.lists(
            st.tuples(TIMES, NAMES, st.sampled_from(CHANNELS), st.integers(0, 1)),
            min_size=1,
            max_size=40,
        )
    )
    # One form for every row (the fixed-width path) or one per row (the general path).
    forms = draw(st.sampled_from([[0], [1], [2], [3], [0, 1, 2], [0, 1, 2, 3]]))
    lines = [
        f"{render_time(t, draw(st.sampled_from(forms)))},{name},{ch},{lv}\n"
        for t, name, ch, lv in rows
    ]
    head = ""
    if draw(st.booleans()):
        start, end = sorted(draw(st.lists(TIMES, min_size=2, max_size=2)))
        head = f"# amr-gateway start={format_iso(start)} end={format_epoch(end, 3)}\n"
    return head + HEADER + "\n" + "".join(lines)


NASTY = st.sampled_from(
    [
        "10000000000",
        "99999999999999999",
        "9999999999999999999999",
        "7258118400",
        "9999-12-31T23:59:58Z",
        "0001-01-01T00:00:00-01:00",
        "２",
        "\ufeff",
        "-",
        ".",
        ",",
        "\r",
        "\n",
        "#",
        " ",
        "e5",
        "1K",
        "\x00",
        "é",
        "x" * 65,
        "# end=99999999999\n",
        "# start=abc\n",
    ]
)


@st.composite
def mutated_logs(draw: st.DrawFn) -> str:
    text = draw(clean_logs())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(NASTY | st.text(max_size=3)) + text[at + cut :]
    return text


def check_against_reference(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    expected = reference(path, text)
    try:
        edges, _ = scan(path)
    except PulseLogError as exc:
        assert_one_line(exc, path)
        if isinstance(expected, int):
            assert exc.line == expected, (exc, expected)
        else:
            assert exc.line is None and "no header" in str(exc), exc  # a log with no header
        return
    assert edges == expected


@FUZZ
@given(text=clean_logs())
def test_fuzz_clean_logs_read_exactly(tmp_path_factory, text) -> None:
    path = tmp_path_factory.mktemp("clean") / "log.csv"
    check_against_reference(path, text)
    assert not isinstance(reference(path, text), int)


@FUZZ
@given(text=mutated_logs())
def test_fuzz_mutated_logs_agree_with_the_reference_parser(tmp_path_factory, text) -> None:
    check_against_reference(tmp_path_factory.mktemp("mutated") / "log.csv", text)


# -- fuzz: the profile reader ----------------------------------------------------------------

PROFILE_TOKENS = st.sampled_from(
    ["time,kw", "\n", ",", str(T0), str(T0 + 60), "1.5", "１", "1e400", "-1", "nan", "#", "\ufeff"]
)


@FUZZ
@given(
    parts=st.lists(PROFILE_TOKENS | NASTY | st.text(max_size=4), max_size=30),
    times=st.lists(st.integers(-(10**12), 10**12), max_size=3),
)
def test_fuzz_profiles_read_or_fail_on_one_line(tmp_path_factory, parts, times) -> None:
    path = tmp_path_factory.mktemp("profile") / "profile.csv"
    text = "time,kw\n" + "".join(parts) + "".join(f"\n{t},1" for t in times) + "\n"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        profile = read_profile(path)
    except PulseLogError as exc:
        assert_one_line(exc, path)
        return
    assert len(profile.t_us) >= 2
    assert 0 <= profile.start_us < profile.end_us < MAX_TIME_NS // 1000
    assert int(profile.power_mw.min()) >= 0 and int(profile.power_mw.max()) <= 10**12


# -- fuzz: the config loader -----------------------------------------------------------------

VALUES = (
    st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 27, 28, 63, 64, 2**62, 10**400, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e-300, 1e308, 1e20, 0.0, -0.0, 5.0])
    | st.booleans()
    | st.text(max_size=8)
    | st.sampled_from(["m\n", "gw#1", "2O208-4W", "gpio"])
)
METER_KEYS = st.sampled_from(
    [
        "ct_rating_a",
        "has_demand",
        "wh_per_edge_10",
        "wh_per_edge_1k",
        "glitch_ms",
        "sub_interval_s",
        "window_s",
        "interval_s",
        "speed",
        "pin_10",
        "pin_1k",
        "baudrate",
        "input_10",
        "name",
        "model",
        "colour",
    ]
)


@FUZZ
@given(
    source=st.sampled_from(["gpio", "serial", "simulate", "replay"]),
    changes=st.dictionaries(METER_KEYS, VALUES, max_size=4),
    gateway=st.dictionaries(
        st.sampled_from(["commit_interval_s", "report_interval_s", "capture_keep_days", "id"]),
        VALUES,
        max_size=2,
    ),
    mqtt=st.dictionaries(
        st.sampled_from(["keepalive_s", "state_interval_s", "port"]), VALUES, max_size=2
    ),
)
def test_fuzz_configs_load_within_bounds_or_name_the_key(source, changes, gateway, mqtt) -> None:
    table: dict[str, object] = {"name": "m", "model": "2O208-4W", "source": source}
    table.update(
        {"gpio": {"pin_10": 17}, "serial": {"port": "/dev/x", "input_10": 0}}.get(source, {})
    )
    table.update({"file": "log.csv"} if source == "replay" else {})
    table.update(changes)
    data = {"gateway": gateway, "mqtt": mqtt, "meters": [table]}
    try:
        config = parse_config(data, "c.toml")
        meter = config.meters[0]
        settings_ = core_settings(meter, meter_config(meter, "c.toml: meters[0]"))
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("c.toml: "), message
        return
    for key, (lo, hi) in BOUNDS["meters"].items():
        value = getattr(meter, key)
        assert value is None or (math.isfinite(value) and lo <= value <= hi), key
    for key, (lo, hi) in backend_bounds(meter.backend).items():
        value = getattr(meter.backend, key)
        assert value is None or (math.isfinite(value) and lo <= value <= hi), key
    for section, values in (("gateway", config.gateway), ("mqtt", config.mqtt)):
        for key, (lo, hi) in BOUNDS[section].items():
            assert lo <= getattr(values, key) <= hi
    assert 0 <= settings_.glitch_ns <= 10**9
    assert settings_.max_power_w > 0
