"""The discovery payloads pass Home Assistant's own schema, in the oldest release we support.

Home Assistant drops a discovery config whole when its platform's ``DISCOVERY_SCHEMA`` rejects
it (before 2024.8 a ``device.model_id`` did that to every entity of the meter). This test
installs Home Assistant in a venv of its own, cached outside the repository
(``~/.cache/amr-gateway/ha-<version>``, or under ``$AMR_HA_CACHE``), and runs
``tests/ha_validate.py`` there on the payloads that the gateway's own code builds:

- ``HA_OLDEST``, the oldest release the gateway supports: always (skipped only when PyPI cannot
  be reached, and then failed under CI);
- ``HA_NEWEST``, the newest release at the time of writing: where its Python is found.

Only what importing the MQTT sensor platform needs is installed (``--no-deps``, then the
distributions in ``needs`` at the versions the release's own metadata pins, and the MQTT
integration's manifest requirements): far quicker than Home Assistant's full dependency tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
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
    needs: tuple[str, ...]  # distributions to install, at the versions the release pins
    required: bool = True  # False: skipped where no such interpreter is found
    ignore_requires_python: bool = False


# Found by importing the MQTT sensor platform in a venv that has only homeassistant, and adding
# what was missing until it imported.
HA_OLDEST = HaRelease(
    "2024.1.6",
    "3.11",
    (
        "aiohttp", "aiohttp-fast-url-dispatcher", "aiohttp-zlib-ng",
        "atomicwrites-homeassistant", "attrs", "awesomeversion", "bcrypt", "certifi",
        "ciso8601", "cryptography", "ifaddr", "Jinja2", "lru-dict", "orjson", "packaging",
        "PyJWT", "python-slugify", "PyYAML", "typing-extensions", "ulid-transform",
        "voluptuous", "voluptuous-serialize", "yarl",
    ),
)  # fmt: skip
# It needs Python >= 3.13.2; the newest interpreter here is 3.13.0, which runs what this
# test imports of it, hence ignore_requires_python.
HA_NEWEST = HaRelease(
    "2026.2.3",
    "3.13",
    (
        "aiohttp", "aiohttp_cors", "aiozoneinfo", "annotatedyaml", "async-interrupt",
        "atomicwrites-homeassistant", "attrs", "awesomeversion", "bcrypt", "certifi",
        "ciso8601", "cryptography", "hass-nabucasa", "ifaddr", "Jinja2", "lru-dict",
        "orjson", "packaging", "propcache", "PyJWT", "pyOpenSSL", "python-slugify", "PyYAML",
        "requests", "typing-extensions", "ulid-transform", "urllib3", "voluptuous",
        "voluptuous-serialize", "webrtc-models", "yarl",
    ),
    required=False,
    ignore_requires_python=True,
)  # fmt: skip

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
IMPORT_CHECK = (
    "import homeassistant.components.persistent_notification, "
    "homeassistant.components.mqtt.sensor, homeassistant.components.mqtt.discovery"
)


class _Unreachable(Exception):
    """PyPI could not be reached (or not in time)."""


def _cache_root() -> Path:
    if root := os.environ.get("AMR_HA_CACHE"):
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "amr-gateway"


def _key(release: HaRelease) -> str:
    text = json.dumps(
        [release.version, release.python, release.ignore_requires_python, *release.needs]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _runs(python: str | Path) -> bool:
    try:
        return subprocess.run([python, "-c", ""], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _interpreter(release: HaRelease) -> str | None:
    """This interpreter, or a python<major.minor> on PATH, or one of pyenv's."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == release.python:
        return sys.executable
    name = f"python{release.python}"
    found = shutil.which(name)
    if found and _runs(found):  # a pyenv shim fails when that version is not selected
        return found
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = sorted(
        pyenv.glob(f"{release.python}.*/bin/{name}"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parents[1].name)],
        reverse=True,
    )
    return next((str(c) for c in candidates if _runs(c)), None)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(wheel: Path, release: HaRelease) -> list[str]:
    """The requirements to install: ``needs`` as the wheel pins them, and MQTT's manifest's."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"homeassistant-{release.version}.dist-info/METADATA").decode()
        manifest = json.loads(archive.read("homeassistant/components/mqtt/manifest.json"))
    pins = {}
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = line.split(":", 1)[1].split(";", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)\s*\(?([^)]*)\)?", requirement)
        assert match, line
        pins[_norm(match[1])] = f"{match[1]}{match[2].replace(' ', '')}"
    missing = [n for n in release.needs if _norm(n) not in pins]
    assert not missing, f"homeassistant {release.version} does not require {missing}"
    return [pins[_norm(n)] for n in release.needs] + list(manifest.get("requirements", []))


def _run(args: list[str], timeout: float, what: str, network: bool = False) -> None:
    """Run a step; a network step that times out or cannot reach PyPI raises _Unreachable."""
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        if network:
            raise _Unreachable(f"{what}: no answer within {timeout:.0f} s") from None
        pytest.fail(f"{what}: not done within {timeout:.0f} s")
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if network and any(sign in output for sign in NETWORK_SIGNS):
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


def _build(release: HaRelease, interpreter: str, venv: Path, key: str) -> None:
    """Make the venv next to its final place, then move it there whole.

    A moved venv runs as long as only its bin/python is used (console scripts are not).
    """
    build = venv.with_name(f"{venv.name}.build-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    try:
        _run([interpreter, "-m", "venv", str(build)], VENV_TIMEOUT, "python -m venv")
        pip = [str(_python(build)), "-m", "pip"]
        options = [*PIP_NETWORK]
        if release.ignore_requires_python:
            options.append("--ignore-requires-python")
        wheels = build / "wheels"
        # The big wheel first, alone: the test's gate for "PyPI can be reached".
        _run(
            [*pip, "download", *options, "--no-deps", "-d", str(wheels),
             f"homeassistant=={release.version}"],
            DOWNLOAD_TIMEOUT,
            f"pip download homeassistant=={release.version}",
            network=True,
        )  # fmt: skip
        wheel = next(wheels.glob("homeassistant-*.whl"))
        requirements = _pinned(wheel, release)
        _run(
            [*pip, "install", "-q", *options, "--no-deps", str(wheel)],
            INSTALL_TIMEOUT,
            "pip install homeassistant",
            network=True,
        )
        _run(
            [*pip, "install", "-q", *options, *requirements],
            INSTALL_TIMEOUT,
            f"pip install {' '.join(requirements)}",
            network=True,
        )
        shutil.rmtree(wheels)
        _run([str(_python(build)), "-c", IMPORT_CHECK], VALIDATE_TIMEOUT, IMPORT_CHECK)
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
        interpreter = _interpreter(release)
        if interpreter is None:
            message = f"Home Assistant {release.version} needs Python {release.python}: not found"
            if release.required:
                pytest.fail(message)
            pytest.skip(message)
        with _locked(root / f"ha-{release.version}.lock"):
            if not _ready(venv, key):
                try:
                    _build(release, interpreter, venv, key)
                except _Unreachable as exc:
                    message = f"cannot install Home Assistant {release.version} from PyPI: {exc}"
                    if os.environ.get("CI"):
                        pytest.fail(message)
                    pytest.skip(message)
    return _python(venv)


@pytest.fixture(scope="module")
def ha_oldest() -> Path:
    return ha_venv(HA_OLDEST)


@pytest.fixture(scope="module", params=[HA_OLDEST, HA_NEWEST], ids=lambda release: release.version)
def ha_release(request: pytest.FixtureRequest) -> tuple[HaRelease, Path]:
    return request.param, ha_venv(request.param)


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


def test_discovery_passes_home_assistant_schema(ha_release: tuple[HaRelease, Path]) -> None:
    release, python = ha_release
    messages = [m for args in GATEWAY_METERS for m in published(*args)]
    report = validate(python, "homeassistant", messages)
    assert report["ha_version"] == release.version
    assert report["errors"] == [], _errors(report)
    assert report["checked"] == len(messages) == 5 * len(GATEWAY_METERS)
    configs = {e["topic"]: e for e in report["entities"]}
    assert len(configs) == len(messages)  # none dropped, none sharing an entity id
    energy = configs["homeassistant/sensor/amr_gw1_unit-101/energy/config"]
    # The model number shows on the device page.
    assert energy["config"]["device"]["model"] == "Series 2000 (2O208-4W)"
    assert energy["config"]["state_topic"] == "amr/gw1/unit-101/state"
    shop = configs["homeassistant/sensor/amr_Barn-GW_2_shop-1/peak_demand/config"]
    assert shop["config"]["availability_topic"] == "amr/Barn-GW_2/status"
    if "default_entity_id" in energy["config"]:  # a release that knows it
        assert release is not HA_OLDEST
        assert energy["entity_id"] == "sensor.amr_gw1_unit_101_energy"
    else:  # older ones drop it quietly and make the entity id of device and entity names
        assert energy["entity_id"] == "sensor.meter_unit_101_energy"


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


@pytest.mark.parametrize("other", ["UNIT-101", "unit_101"])
def test_names_that_differ_only_in_case_or_dash_share_entity_ids(
    ha_release: tuple[HaRelease, Path], other: str
) -> None:
    """Why the configuration must not accept both: Home Assistant would give them one entity id
    (it adds a _2 to the second), whether it makes the id of the names or of default_entity_id."""
    _, python = ha_release
    messages = [
        *published("amr", "homeassistant", "gw1", MeterInfo("unit-101", "2O208-4W")),
        *published("amr", "homeassistant", "gw1", MeterInfo(other, "2O208-4W")),
    ]
    report = validate(python, "homeassistant", messages)
    clashes = [e for e in report["errors"] if e["error"].startswith("entity id ")]
    assert len(clashes) == 5 and len(report["errors"]) == 5, _errors(report)
