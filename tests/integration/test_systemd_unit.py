"""The shipped systemd unit: systemd accepts it, it is hardened, and it is what the docs install.

``systemd-analyze verify`` needs every command the unit runs to exist. The unit's ExecStart is the
venv installed by docs/install.md (/opt/amr-gateway), which a test machine does not have, so the
verify test builds a throw-away root (``--root``): the shipped unit copied byte for byte to
/etc/systemd/system, the host's system units (for network.target and friends), a stand-in
executable at each command path under /opt/amr-gateway, and a copy of the host's file for every
other command (/bin/kill). Nothing in the unit itself is substituted.

``systemd-analyze security --offline=true`` reads the shipped file directly.

Only the tests that run systemd-analyze skip when it is not installed (CI installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "amr-gateway.service"
INSTALL_DOC = ROOT / "docs" / "install.md"
UNIT_NAME = UNIT.name
MAX_EXPOSURE = 2.0
VENV = "/opt/amr-gateway/"
SYSTEM_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) ")

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed"
)


def parse_unit(text: str) -> dict[str, list[str]]:
    """Return ``{"Section.Key": [values in order]}``; later values override earlier ones."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{UNIT}: not a key=value line: {raw!r}"
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def last(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(f"Service.{key}")
    assert values, f"{UNIT_NAME}: no {key}="
    return values[-1]


def commands(unit: dict[str, list[str]]) -> list[str]:
    """The executable paths of every Exec*= line, without systemd's prefixes (-, @, +, !, :)."""
    paths = []
    for key, values in unit.items():
        if key.startswith("Service.Exec"):
            for value in values:
                paths.append(value.split()[0].lstrip("-@+!:"))
    return paths


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "--no-pager", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def make_root(root: Path, unit_text: str) -> Path:
    """Lay out a root for ``systemd-analyze verify --root`` holding ``unit_text``; return root."""
    system_units = next((d for d in SYSTEM_UNIT_DIRS if d.is_dir()), None)
    assert system_units is not None, "systemd-analyze is installed but no system unit directory"
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    target = root / "etc/systemd/system" / UNIT_NAME
    target.parent.mkdir(parents=True)
    target.write_text(unit_text, encoding="utf-8")
    for command in commands(parse_unit(unit_text)):
        assert command.startswith("/"), f"{UNIT_NAME}: command {command!r} is not absolute"
        placed = root / command.lstrip("/")
        placed.parent.mkdir(parents=True, exist_ok=True)
        if command.startswith(VENV):
            placed.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
            placed.chmod(0o755)
        else:
            host = Path(command)
            assert host.is_file(), f"{UNIT_NAME}: {command} does not exist on this system"
            shutil.copy2(host.resolve(), placed)
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return analyze("verify", f"--root={root}", UNIT_NAME)


# The unit's content: what the daemon and the docs rely on.


def test_unit_is_a_notify_service_with_a_watchdog(unit: dict[str, list[str]]) -> None:
    assert last(unit, "Type") == "notify"
    assert last(unit, "NotifyAccess") == "main"
    watchdog = last(unit, "WatchdogSec")
    assert re.fullmatch(r"[1-9]\d*s?", watchdog), f"WatchdogSec={watchdog}"


def test_unit_restarts_on_failure(unit: dict[str, list[str]]) -> None:
    assert last(unit, "Restart") == "on-failure"
    assert last(unit, "RestartSec")


def test_unit_keeps_state_and_is_hardened(unit: dict[str, list[str]]) -> None:
    assert last(unit, "StateDirectory") == "amr-gateway"
    assert last(unit, "ProtectSystem") == "strict"
    assert last(unit, "DevicePolicy") == "closed"
    assert last(unit, "NoNewPrivileges") == "yes"
    assert last(unit, "CapabilityBoundingSet") == ""
    filters = unit.get("Service.SystemCallFilter", [])
    assert any(f and not f.startswith("~") for f in filters), "no SystemCallFilter allow list"
    allowed = " ".join(unit.get("Service.DeviceAllow", []))
    assert "char-gpiochip" in allowed
    assert "char-ttyUSB" in allowed


def test_unit_does_not_run_as_root(unit: dict[str, list[str]]) -> None:
    dynamic = unit.get("Service.DynamicUser", ["no"])[-1] in ("yes", "true", "on", "1")
    user = unit.get("Service.User", [""])[-1]
    assert user not in ("root", "0")
    assert dynamic or user, "neither User= nor DynamicUser=yes: the service would run as root"


def test_install_doc_installs_what_the_unit_runs(unit: dict[str, list[str]]) -> None:
    doc = INSTALL_DOC.read_text(encoding="utf-8")
    exec_start = last(unit, "ExecStart")
    assert exec_start.startswith(VENV), exec_start
    assert exec_start in doc, f"docs/install.md does not show ExecStart={exec_start}"
    assert "systemd/amr-gateway.service" in doc


# systemd's own judgement.


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_shipped_unit(tmp_path: Path) -> None:
    root = make_root(tmp_path, UNIT.read_text(encoding="utf-8"))
    result = verify(root)
    # verify exits 0 on unknown keys and unparsable values, only warning: any output is a fault.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


@needs_systemd_analyze
def test_systemd_analyze_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a typo and a missing command are reported."""
    text = UNIT.read_text(encoding="utf-8").replace(
        "ProtectSystem=strict", "ProtectSystem=strikt\nProtectSytem=strict"
    )
    root = make_root(tmp_path, text)
    (root / VENV.lstrip("/") / "bin/amr-gateway").unlink()
    result = verify(root)
    output = result.stdout + result.stderr
    assert "strikt" in output
    assert "ProtectSytem" in output
    assert result.returncode != 0 and "amr-gateway" in output, output


@needs_systemd_analyze
def test_systemd_analyze_security_exposure_is_low() -> None:
    threshold = round(MAX_EXPOSURE * 10)  # --threshold counts tenths
    result = analyze("security", "--offline=true", f"--threshold={threshold}", str(UNIT))
    output = result.stdout + result.stderr
    match = EXPOSURE_RE.search(output)
    assert match, f"no overall exposure level in:\n{output}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{output}"
    assert result.returncode == 0, output
