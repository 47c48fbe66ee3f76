"""Shared fixtures: run the command line as a user would, in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


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
