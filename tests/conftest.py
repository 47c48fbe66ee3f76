"""Shared fixtures: run the command line as a user would, in a subprocess; a broker of the
test's own (integration tests and the sink contract suite)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_helpers import Broker


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto of the test's own, on a free port (so it can be stopped, paused, secured)."""
    directory = tmp_path / "broker"
    directory.mkdir()
    b = Broker(directory)
    b.start()
    yield b
    b.stop()
