"""``run --config``: one validated configuration; every mistake named, exit status 2."""

from __future__ import annotations

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

GOOD = """
[gateway]
id = "gw1"
database = "sqlite:///{db}"

[mqtt]
host = "localhost"
port = 1883

[[meters]]
name = "unit-101"
model = "2O208-4W"
source = "simulate"
speed = 60

[[meters]]
name = "unit-102"
model = "1K240-3W"
source = "gpio"
pin_10 = 17
pin_1k = 27
"""


def test_a_good_file_loads_into_typed_settings(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD.format(db=tmp_path / "g.db"))
    config = load_config(str(path))
    assert config.gateway.id == "gw1"
    assert [m.name for m in config.meters] == ["unit-101", "unit-102"]
    assert config.meters[0].backend.speed == 60.0 and isinstance(
        config.meters[0].backend.speed, float
    )
    assert config.meters[1].backend.pin_10 == 17 and config.meters[1].source == "gpio"
    assert config.mqtt.commands == ()  # commands are off by default


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (("speed = 60", "speed = 60\ncolour = 'red'"), "meters[0].colour: unknown key"),
        (("speed = 60", 'speed = "fast"'), "meters[0].speed: expected a number"),
        (('name = "unit-101"\n', ""), "meters[0].name: missing required key"),
        (("port = 1883", 'port = "1883"'), "mqtt.port: expected an integer"),
        (("[mqtt]", "[mqtt]\nhots = 'x'"), "mqtt.hots: unknown key"),
        (
            ("pin_1k = 27", "pin_1k = 17"),
            "meters[1].pin_1k: 17 is already used by meters[1].pin_10",
        ),
        (('source = "simulate"', 'source = "modbus"'), "meters[0].source: 'modbus'"),
        (("pin_10 = 17", 'port = "/dev/ttyUSB0"'), "meters[1].port: unknown key"),
        (('model = "2O208-4W"', 'model = "9X999"'), "meters[0].model"),
        (('id = "gw1"', 'id = "gw1"\n[extra]'), "extra: unknown section"),
        (("speed = 60", "speed = 60 60"), "not valid TOML"),
    ],
)
def test_mistakes_stop_start_up_naming_the_key(cli, tmp_path, change, needle) -> None:
    path = tmp_path / "config.toml"
    old, new = change
    text = GOOD.format(db=tmp_path / "g.db")
    assert old in text
    path.write_text(text.replace(old, new, 1))
    result = cli("run", "--config", str(path), cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr, result.stderr
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "g.db").exists()  # stopped before touching anything


def test_missing_file(cli, tmp_path) -> None:
    result = cli("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "nope.toml: no such configuration file" in result.stderr


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (("speed = 60", "speed = nan"), "meters[0].speed: nan is out of range"),
        (("speed = 60", "speed = 60\nglitch_ms = -1.0"), "meters[0].glitch_ms"),
        (('id = "gw1"', 'id = "gw#1"'), "gateway.id: 'gw#1'"),
        (("port = 1883", 'port = 1883\nbase_topic = "amr/+"'), "mqtt.base_topic"),
        (("port = 1883", "port = 1883\nkeepalive_s = 0"), "mqtt.keepalive_s"),
        (
            ("speed = 60", "speed = 60\nsub_interval_s = 420"),
            "meters[0].sub_interval_s: 420 s must divide",
        ),
        (('id = "gw1"', 'id = "gw1"\ncommit_interval_s = nan'), "gateway.commit_interval_s"),
    ],
)
def test_values_out_of_range_are_named(cli, tmp_path, change, needle) -> None:
    path = tmp_path / "config.toml"
    old, new = change
    path.write_text(GOOD.format(db=tmp_path / "g.db").replace(old, new, 1))
    result = cli("run", "--config", str(path), cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_demand_and_interval_lengths_are_configurable(tmp_path) -> None:
    from gateway.config import core_settings, meter_config

    path = tmp_path / "config.toml"
    path.write_text(
        GOOD.format(db=tmp_path / "g.db").replace(
            "speed = 60", "speed = 60\nsub_interval_s = 60\nwindow_s = 1800\ninterval_s = 3600"
        )
    )
    meter = load_config(str(path)).meters[0]
    settings = core_settings(meter, meter_config(meter, "m"))
    assert settings.demand.sub_interval_s == 60 and settings.demand.window_s == 1800
    assert settings.interval_s == 3600


@pytest.mark.parametrize("second", ["Unit-101", "unit_101", "UNIT_101"])
def test_names_that_differ_only_by_case_or_dash_are_refused(tmp_path, second) -> None:
    # Home Assistant folds both into one entity id (test_ha_discovery.py), so two such meters
    # would overwrite each other's entities (issue #11).
    path = tmp_path / "config.toml"
    path.write_text(GOOD.format(db=tmp_path / "g.db").replace('"unit-102"', f'"{second}"'))
    with pytest.raises(ConfigError, match=r"meters\[1\]\.name: .*only by case"):
        load_config(str(path))
