"""The daemon with its web view on, as a subprocess, and plain HTTP requests to it."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mqtt_helpers import wait_for

# 0.6 kW from 22:00Z on 31 October 2026, 3 kW from 23:00Z to 23:30Z, 0.6 kW again until 02:00Z
# on 1 November: 3,600 Wh in all, the last edge exactly at 02:00:00. Read at midnight UTC.
PROFILE = """time,kw
2026-10-31T22:00:00Z,0.6
2026-10-31T23:00:00Z,3.0
2026-10-31T23:30:00Z,0.6
2026-11-01T02:00:00Z,0
"""
TOTAL_WH = 3600
# By hand: an edge (5 Wh) every 30 s at 0.6 kW, every 6 s at 3 kW. Register at 00:00Z:
# 600 + 1,500 + 300 = 2,400 Wh, less the edge exactly at the read (it belongs to the next
# period): 2,395 Wh. Peak: the window [23:00, 23:15) holds the 23:00:00 edge and 149 at 3 kW,
# 750 Wh in 0.25 h = 3.00 kW.
OCTOBER_WH = 2395
OCTOBER_PEAK_KW = 3.0
OCTOBER_PEAK_END = "2026-10-31T23:15:00Z"
METER = "unit-7"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> Any:
    """Run ``python -m gateway ARGS`` (tests/conftest.py's, for module-scoped fixtures)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_log(cli: Any, directory: Path, meter: str = METER) -> Path:
    profile = directory / "profile.csv"
    profile.write_text(PROFILE)
    log = directory / f"{meter}.csv"
    result = cli("simulate", "--profile", str(profile), "--out", str(log), "--meter", meter)
    assert result.returncode == 0, result.stderr
    return log


def write_config(directory: Path, meters: str, web: str = "", *, name: str = "config.toml") -> Path:
    config = directory / name
    config.write_text(
        f"""
[gateway]
id = "gw-web"
database = "sqlite:///{directory / "gateway.db"}"
commit_interval_s = 0.5
report_interval_s = 1

[mqtt]
enabled = false

[billing]
timezone = "UTC"

[web]
{web}
{meters}
"""
    )
    return config


def replay_meter(log: Path, meter: str = METER, speed: float = 1e6) -> str:
    return f"""
[[meters]]
name = "{meter}"
model = "2O208-4W"
source = "replay"
file = "{log}"
speed = {speed}
"""


def simulate_meter(meter: str = "sim-1", speed: float = 3600) -> str:
    return f"""
[[meters]]
name = "{meter}"
model = "2O208-4W"
source = "simulate"
speed = {speed}
"""


class Daemon:
    """``amr-gateway run`` with a web view; stdout to a file (read for the URL)."""

    def __init__(self, config: Path | None, *args: str, cwd: Path) -> None:
        self.out = cwd / "daemon.out"
        self.err = cwd / "daemon.err"
        command = [sys.executable, "-m", "gateway", "run"]
        if config is not None:
            command += ["--config", str(config)]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([*command, *args], cwd=cwd, stdout=out, stderr=err)
        self.url = wait_for(self._url, 30, "the web view's address")

    def _url(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited: {self.err.read_text()}")
        found = re.search(r"web view on (\S+)", self.out.read_text())
        return found.group(1) if found else None

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        return code, self.err.read_text()


def request(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send one request; return (status, headers, body)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def get_json(url: str, path: str, headers: dict[str, str] | None = None) -> Any:
    status, _, body = request(url, path, headers=headers)
    assert status == 200, body
    return json.loads(body)


def finished(url: str, meter: str = METER, total_wh: int = TOTAL_WH) -> bool:
    """The replay reached the end of its log and all of it is committed."""
    status, _, body = request(url, "/api/status")
    if status != 200:
        return False
    meters = json.loads(body)["meters"]
    return meter in meters and meters[meter]["energy_wh"] == total_wh
