"""The discovery payloads pass Home Assistant's own schema, in the oldest release we support.

Home Assistant drops a discovery config whole when its platform's ``DISCOVERY_SCHEMA`` rejects
it (before 2024.8 a ``device.model_id`` did that to every entity of the meter). This test
installs Home Assistant ``HA_OLDEST`` in a venv of its own, cached outside the repository
(``~/.cache/amr-gateway/ha-<version>``, or under ``$AMR_HA_CACHE``), and runs
``tests/ha_validate.py`` there on the payloads that the gateway's own code builds.

Only Home Assistant's import-time dependencies are installed (``--no-deps`` plus the pinned
list below): enough to import the MQTT sensor platform and the sensor tables, and far quicker
than its full dependency tree. When PyPI cannot be reached the test skips, or fails under CI.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.sinks.payloads import MeterInfo, discovery_messages

pytestmark = pytest.mark.slow

VALIDATOR = Path(__file__).resolve().parents[1] / "ha_validate.py"


@dataclass(frozen=True)
class HaRelease:
    version: str
    python: str  # major.minor of the interpreter the venv is made with
    requirements: tuple[str, ...]  # what importing the MQTT sensor platform needs, as pinned


# The oldest Home Assistant the gateway supports. Its pins, from the wheel's metadata, cut
# to what `import homeassistant.bootstrap` and the MQTT sensor platform import; paho-mqtt is
# the MQTT integration's manifest requirement.
HA_OLDEST = HaRelease(
    "2024.1.6",
    "3.11",
    (
        "aiohttp==3.9.3",
        "aiohttp-fast-url-dispatcher==0.3.0",
        "aiohttp-zlib-ng==0.1.3",
        "atomicwrites-homeassistant==1.4.1",
        "attrs==23.1.0",
        "awesomeversion==23.11.0",
        "bcrypt==4.0.1",
        "certifi>=2021.5.30",
        "ciso8601==2.3.0",
        "cryptography==41.0.7",
        "ifaddr==0.2.0",
        "Jinja2==3.1.3",
        "lru-dict==1.3.0",
        "orjson==3.9.9",
        "packaging>=23.1",
        "PyJWT==2.8.0",
        "python-slugify==4.0.1",
        "PyYAML==6.0.1",
        "typing-extensions>=4.9.0,<5.0",
        "ulid-transform==0.9.0",
        "voluptuous==0.13.1",
        "voluptuous-serialize==2.6.0",
        "yarl==1.9.4",
        "paho-mqtt==1.6.1",
    ),
)

# Bounds, so that the test never hangs on a slow or absent network.
VENV_TIMEOUT = 120
DOWNLOAD_TIMEOUT = 300
INSTALL_TIMEOUT = 600
LOCK_TIMEOUT = INSTALL_TIMEOUT + DOWNLOAD_TIMEOUT + VENV_TIMEOUT
VALIDATE_TIMEOUT = 120
PIP_NETWORK = ("--timeout", "30", "--retries", "2", "--disable-pip-version-check", "--no-input")
NETWORK_SIGNS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "No matching distribution found",
    "Could not find a version that satisfies",
)


class _Unreachable(Exception):
    """PyPI could not be reached (or not in time)."""


def _cache_root() -> Path:
    if root := os.environ.get("AMR_HA_CACHE"):
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "amr-gateway"


def _key(release: HaRelease) -> str:
    text = json.dumps([release.version, release.python, *release.requirements])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _interpreter(release: HaRelease) -> str:
    if f"{sys.version_info.major}.{sys.version_info.minor}" == release.python:
        return sys.executable
    found = shutil.which(f"python{release.python}")
    if found and subprocess.run([found, "-c", ""], capture_output=True, timeout=30).returncode == 0:
        return found
    pytest.fail(f"Home Assistant {release.version} needs Python {release.python}, not found")


def _run(args: list[str], timeout: float, what: str) -> None:
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise _Unreachable(f"{what}: no answer within {timeout:.0f} s") from None
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if any(sign in output for sign in NETWORK_SIGNS):
            raise _Unreachable(f"{what}: {output.strip().splitlines()[-1]}")
        pytest.fail(f"{what} failed ({result.returncode}):\n{output[-4000:]}")


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _ready(venv: Path, key: str) -> bool:
    stamp = venv / "amr-gateway.stamp"
    return stamp.is_file() and stamp.read_text() == key and _python(venv).exists()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time, across processes (other checkouts share the cache)."""
    with path.open("w") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{path} stayed locked for {LOCK_TIMEOUT} s")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(release: HaRelease, venv: Path, key: str) -> None:
    """Make the venv next to its final place, then move it there whole."""
    build = venv.with_name(f"{venv.name}.build-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    try:
        _run([_interpreter(release), "-m", "venv", str(build)], VENV_TIMEOUT, "python -m venv")
        pip = [str(_python(build)), "-m", "pip"]
        wheels = build / "wheels"
        # The big wheel first, alone: the test's gate for "PyPI can be reached".
        _run(
            [
                *pip,
                "download",
                *PIP_NETWORK,
                "--no-deps",
                "-d",
                str(wheels),
                f"homeassistant=={release.version}",
            ],
            DOWNLOAD_TIMEOUT,
            f"pip download homeassistant=={release.version}",
        )
        wheel = next(wheels.glob("homeassistant-*.whl"))
        _run(
            [*pip, "install", "-q", *PIP_NETWORK, "--no-deps", str(wheel)],
            INSTALL_TIMEOUT,
            "pip install homeassistant",
        )
        _run(
            [*pip, "install", "-q", *PIP_NETWORK, *release.requirements],
            INSTALL_TIMEOUT,
            "pip install Home Assistant's requirements",
        )
        shutil.rmtree(wheels)
        _run(
            [
                str(_python(build)),
                "-c",
                "import homeassistant.bootstrap, homeassistant.components.mqtt.sensor",
            ],
            VALIDATE_TIMEOUT,
            "import Home Assistant's MQTT sensor platform",
        )
        (build / "amr-gateway.stamp").write_text(key)
        shutil.rmtree(venv, ignore_errors=True)
        build.rename(venv)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def ha_venv(release: HaRelease) -> Path:
    """Return the interpreter of a venv with ``release`` installed, built once and cached."""
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"ha-{release.version}"
    key = _key(release)
    if not _ready(venv, key):
        with _locked(root / f"ha-{release.version}.lock"):
            if not _ready(venv, key):
                try:
                    _build(release, venv, key)
                except _Unreachable as exc:
                    message = f"cannot install Home Assistant {release.version} from PyPI: {exc}"
                    if os.environ.get("CI"):
                        pytest.fail(message)
                    pytest.skip(message)
    return _python(venv)


@pytest.fixture(scope="module")
def ha_oldest() -> Path:
    return ha_venv(HA_OLDEST)


def validate(python: Path, prefix: str, messages: list[tuple[str, str]]) -> dict:
    """Run ha_validate.py in the Home Assistant venv; return its report."""
    request = {
        "discovery_prefix": prefix,
        "messages": [{"topic": topic, "payload": text} for topic, text in messages],
    }
    result = subprocess.run(
        [str(python), str(VALIDATOR)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=VALIDATE_TIMEOUT,
        check=False,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (result.returncode == 1) == bool(report["errors"]), report
    return report


def published(
    base_topic: str, prefix: str, gateway_id: str, meter: MeterInfo
) -> list[tuple[str, str]]:
    """The gateway's discovery messages as the MQTT sink publishes them."""
    return [
        (topic, json.dumps(payload, separators=(",", ":")))
        for topic, payload in discovery_messages(base_topic, prefix, gateway_id, meter)
    ]


# Meters of both series, names and gateway ids with "-", "_" and capitals, nested topics.
GATEWAY_METERS = [
    ("amr", "homeassistant", "gw1", MeterInfo("unit-101", "2O208-4W")),
    ("amr", "homeassistant", "gw1", MeterInfo("unit_102", "1K120-2W")),
    ("amr", "homeassistant", "gw1", MeterInfo("Main", "2N480-4W")),
    ("amr", "homeassistant", "Barn-GW_2", MeterInfo("shop-1", "1O240-3W")),
    ("site/amr", "homeassistant", "gw-3", MeterInfo("A", "2O208")),
]


def _errors(report: dict) -> str:
    return "\n".join(f"{e['topic']}: {e['error']}" for e in report["errors"])


def test_discovery_passes_the_oldest_home_assistant_schema(ha_oldest: Path) -> None:
    messages = [m for args in GATEWAY_METERS for m in published(*args)]
    report = validate(ha_oldest, "homeassistant", messages)
    assert report["ha_version"] == HA_OLDEST.version
    assert report["errors"] == [], _errors(report)
    assert report["checked"] == len(messages) == 5 * len(GATEWAY_METERS)
    configs = {e["topic"]: e for e in report["entities"]}
    assert len(configs) == len(messages)  # none dropped, none sharing an entity id
    energy = configs["homeassistant/sensor/amr_gw1_unit-101/energy/config"]
    # The model number shows on the device page, and the entity ids read as they should.
    assert "2O208-4W" in energy["config"]["device"]["model"]
    assert energy["entity_id"] == "sensor.meter_unit_101_energy"
    # Older releases drop default_entity_id quietly (the schema removes unknown keys).
    assert "default_entity_id" not in energy["config"]
    assert energy["config"]["state_topic"] == "amr/gw1/unit-101/state"
    shop = configs["homeassistant/sensor/amr_Barn-GW_2_shop-1/peak_demand/config"]
    assert shop["config"]["availability_topic"] == "amr/Barn-GW_2/status"


def test_discovery_passes_under_another_prefix(ha_oldest: Path) -> None:
    messages = published("amr", "ha/discovery", "gw1", MeterInfo("unit-101", "2O208-4W"))
    report = validate(ha_oldest, "ha/discovery", messages)
    assert report["errors"] == [], _errors(report)
    assert report["checked"] == 5


def test_the_check_reports_every_error_home_assistant_would(ha_oldest: Path) -> None:
    """A control: payloads Home Assistant rejects or complains about are each reported."""
    base = dict(discovery_messages("amr", "homeassistant", "gw1", MeterInfo("u1", "2O208-4W")))
    energy = base["homeassistant/sensor/amr_gw1_u1/energy/config"]
    power = base["homeassistant/sensor/amr_gw1_u1/power/config"]

    def variant(source: dict, n: int, **changes: object) -> dict:
        return {**source, "unique_id": f"x{n}", "name": f"Bad {n}", **changes}

    bad = {
        # 2024.8's device key: the whole config is dropped before 2024.8.
        "homeassistant/sensor/x/model_id/config": variant(
            energy, 1, device={**energy["device"], "model_id": "2O208-4W"}
        ),
        "homeassistant/sensor/x/unit/config": variant(power, 2, unit_of_measurement="kWh"),
        "homeassistant/sensor/x/state_class/config": variant(energy, 3, state_class="measurement"),
        "homeassistant/sensor/x/category/config": variant(power, 4, entity_category="nonsense"),
        "homeassistant/sensor/x/name/config": variant(power, 5, name="Meter u1"),
        "homeassistant/sensor/x/same_id/config": variant(power, 6, unique_id=power["unique_id"]),
        "homeassistant/sensor/x/same_entity/config": variant(power, 7, name=power["name"]),
        "homeassistant/sensor/x/bad topic/config": variant(power, 8),
    }
    messages = [(t, json.dumps(p)) for t, p in [*base.items(), *bad.items()]]
    report = validate(ha_oldest, "homeassistant", messages)
    by_topic: dict[str, list[str]] = {}
    for error in report["errors"]:
        by_topic.setdefault(error["topic"], []).append(error["error"])
    assert set(by_topic) == set(bad), _errors(report)
    assert any("device.model_id" in e for e in by_topic["homeassistant/sensor/x/model_id/config"])
    assert any("'kWh' is not valid" in e for e in by_topic["homeassistant/sensor/x/unit/config"])
    assert any("impossible" in e for e in by_topic["homeassistant/sensor/x/state_class/config"])
    assert any("entity_category" in e for e in by_topic["homeassistant/sensor/x/category/config"])
    assert any("is the device name" in e for e in by_topic["homeassistant/sensor/x/name/config"])
    assert any("unique_id" in e for e in by_topic["homeassistant/sensor/x/same_id/config"])
    assert any("entity id" in e for e in by_topic["homeassistant/sensor/x/same_entity/config"])
    assert any("pattern" in e for e in by_topic["homeassistant/sensor/x/bad topic/config"])
