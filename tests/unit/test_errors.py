"""Errors are also the builtin they resemble, and carry what callers need without parsing text."""

from __future__ import annotations

import pytest

from gateway.config import BillingSettings, MeterSettings, read_schedule
from gateway.core import errors as core_errors
from gateway.core.schedule import ReadSchedule, ScheduleError
from gateway.errors import ConfigError, GatewayError, NotFoundError, SinkError, os_errors


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"read_day": 32}, "read_day"),
        ({"read_time": "24:00"}, "read_time"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../etc"}, "timezone"),
        ({"align_s": 0}, "align_s"),
    ],
)
def test_a_bad_schedule_names_its_key_and_is_a_value_error(kwargs: dict, key: str) -> None:
    with pytest.raises(ScheduleError) as info:
        ReadSchedule(**kwargs)
    assert info.value.key == key
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ConfigError)  # the command line's exit 2, no traceback


def test_the_core_raises_the_gateway_s_own_config_error_not_a_copy() -> None:
    assert core_errors.ConfigError is ConfigError
    assert core_errors.GatewayError is GatewayError


def test_the_configuration_names_a_bad_schedule_s_file_and_key() -> None:
    meter = MeterSettings("m1", read_day=0)
    with pytest.raises(
        ConfigError, match=r"^site.toml: meters\[0\]\.read_day: read_day 0 is"
    ) as info:
        read_schedule(BillingSettings(), meter, "site.toml: meters[0]")
    assert isinstance(info.value, ScheduleError) and info.value.key == "read_day"


def test_nothing_stored_is_a_lookup_and_a_usage_error() -> None:
    error = NotFoundError("no meter read in the database yet")
    assert isinstance(error, LookupError) and isinstance(error, ConfigError)


def test_a_file_failure_becomes_a_sink_error_naming_what_and_why(tmp_path) -> None:
    missing = tmp_path / "missing" / "f"
    with (
        pytest.raises(SinkError, match=r"^capture x: No such file or directory$") as info,
        os_errors("capture x"),
    ):
        missing.read_bytes()
    assert isinstance(info.value.__cause__, FileNotFoundError)
