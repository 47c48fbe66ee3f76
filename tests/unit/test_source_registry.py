"""A new source is one module plus one line in BACKENDS: config, wiring and the service follow."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config import Config, core_settings, meter_config, parse_config
from gateway.daemon.wiring import build_source
from gateway.errors import ConfigError
from gateway.sources import BACKENDS, SourceContext, is_live
from gateway.timeline import Timeline

MODULE = """
from dataclasses import dataclass, field

from gateway.core.edge import Edge
from gateway.sources import Poll, Source, SourceSettings


@dataclass(frozen=True)
class TickSettings(SourceSettings):
    period_s: int = field(default=1, metadata={"range": (1, 60)})

    def register_channel(self):
        return "1K"


class TickSource(Source):
    settings_type = TickSettings
    live = True

    @classmethod
    def from_settings(cls, settings, start, context):
        source = cls()
        source.meter, source.period_ns = settings.name, settings.backend.period_s * 10**9
        source.start_ns = start.start_ns
        return source

    def open(self):
        self.closed = False

    def poll(self, mono_ns):
        self.check_open()
        return Poll([Edge(self.start_ns + self.period_ns, self.meter, "10", 1)], mono_ns)

    def close(self):
        self.closed = True
"""


@pytest.fixture
def tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tickmod.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(BACKENDS, "tick", ("tickmod", "TickSource"))


def config(**keys: object) -> Config:
    meter = {"name": "t1", "model": "2O208-4W", "source": "tick", **keys}
    return parse_config({"mqtt": {"enabled": False}, "meters": [meter]}, "c.toml")


def test_a_registered_backend_takes_its_own_keys_and_no_other(tick: None) -> None:
    meter = config(period_s=5).meters[0]
    assert meter.backend.period_s == 5
    assert core_settings(meter, meter_config(meter, "m")).register_channel == "1K"
    assert is_live("tick")
    with pytest.raises(ConfigError, match=r"^c\.toml: meters\[0\]\.pin_10: unknown key$"):
        config(pin_10=17)
    with pytest.raises(ConfigError, match=r"^c\.toml: meters\[0\]\.period_s: 61 is out of range"):
        config(period_s=61)


def test_a_registered_backend_is_built_and_polled_through_the_registry(tick: None) -> None:
    meter = config(period_s=2).meters[0]
    context = SourceContext(Timeline(floor_ns=0))
    source = build_source(meter, meter_config(meter, "m"), 1_000, None, {}, context)
    with source:
        poll = source.poll(7)
    assert [(e.t_ns, e.meter, e.channel) for e in poll.edges] == [(2_000_001_000, "t1", "10")]
    assert source.closed


def test_an_unregistered_source_lists_the_registered_ones(tick: None) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"meters": [{"name": "a", "model": "2O208-4W", "source": "tock"}]}, "c.toml")
    assert str(info.value) == (
        "c.toml: meters[0].source: 'tock' is not one of gpio, serial, simulate, replay, tick"
    )
