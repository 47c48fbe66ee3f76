"""The collector's systemd unit: systemd accepts it, it is hardened like the gateway's, and it
runs what docs/fleet.md installs (the helpers are the gateway unit's tests')."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_systemd_unit import (
    EXPOSURE_RE,
    MAX_EXPOSURE,
    SYSTEM_UNIT_DIRS,
    VENV,
    analyze,
    commands,
    needs_systemd_analyze,
    parse_unit,
)

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "amr-collector.service"


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def test_unit_runs_collect_as_its_own_user_hardened(unit: dict[str, list[str]]) -> None:
    exec_start = unit["Service.ExecStart"][-1]
    assert exec_start == f"{VENV}bin/amr-gateway collect --config /etc/amr-gateway/collector.toml"
    assert exec_start in (ROOT / "docs" / "fleet.md").read_text(encoding="utf-8")
    assert unit["Service.Type"][-1] == "notify" and unit["Service.WatchdogSec"][-1]
    assert unit["Service.User"][-1] == "amr-collector"
    assert unit["Service.RestartPreventExitStatus"][-1] == "2"
    for key, value in {
        "ProtectSystem": "strict",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert unit[f"Service.{key}"][-1] == value, key


def _root(root: Path, text: str) -> Path:
    system_units = next((d for d in SYSTEM_UNIT_DIRS if d.is_dir()), None)
    assert system_units is not None
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    target = root / "etc/systemd/system" / UNIT.name
    target.parent.mkdir(parents=True)
    target.write_text(text, encoding="utf-8")
    for command in commands(parse_unit(text)):
        placed = root / command.lstrip("/")
        placed.parent.mkdir(parents=True, exist_ok=True)
        placed.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        placed.chmod(0o755)
    return root


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_it_and_would_catch_a_typo(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    result = analyze("verify", f"--root={_root(tmp_path / 'good', text)}", UNIT.name)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )
    broken = text.replace("ProtectSystem=strict", "ProtectSystem=strikt")
    result = analyze("verify", f"--root={_root(tmp_path / 'bad', broken)}", UNIT.name)
    assert "strikt" in result.stdout + result.stderr


@needs_systemd_analyze
def test_systemd_analyze_security_exposure_is_low() -> None:
    threshold = round(MAX_EXPOSURE * 10)
    result = analyze("security", "--offline=true", f"--threshold={threshold}", str(UNIT))
    output = result.stdout + result.stderr
    match = EXPOSURE_RE.search(output)
    assert match, output
    assert float(match.group(1)) <= MAX_EXPOSURE, output
    print(f"exposure {match.group(1)}")
