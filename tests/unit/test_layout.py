"""The tree's shape holds: no import cycle, a pure core, each third-party library in its place."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "meter_model")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _imports(path: Path) -> Iterator[str]:
    """Every module a file imports, at any depth, except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {target for target in _imports(path) if target in modules}
        graph[name] = targets - {name}
    return graph


def test_the_graph_sees_the_imports_it_should() -> None:
    graph = _graph()
    assert "gateway.checkpoint" in graph["gateway.sinks.store"]
    assert "gateway.core.meter" in graph["gateway.daemon.console"]


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            # A package's __init__ may be imported by its own submodules (it runs first anyway).
            if name.startswith(target + "."):
                continue
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def _importers(prefix: str) -> set[str]:
    modules = _modules()
    return {
        name
        for name, path in modules.items()
        if any(target == prefix or target.startswith(prefix + ".") for target in _imports(path))
    }


def test_the_core_and_the_model_are_pure() -> None:
    """The core leans on the model and numpy only: no sources, sinks, clock or configuration."""
    for name, path in _modules().items():
        if not name.startswith(("gateway.core", "meter_model")):
            continue
        for target in _imports(path):
            if target.startswith("gateway.") and not target.startswith("gateway.core"):
                raise AssertionError(f"{name} imports {target}: the core stays pure")


def test_paho_lives_in_the_two_mqtt_clients_alone() -> None:
    # The gateway's publisher, and the fleet collector's subscriber (a second client with its
    # own job: manual acknowledgement after commit, shared subscriptions).
    assert _importers("paho") == {"gateway.sinks.mqtt", "gateway.fleet.collector"}


def test_sqlalchemy_lives_in_the_sinks_and_the_fleet() -> None:
    outside = {
        name
        for name in _importers("sqlalchemy")
        if not name.startswith(("gateway.sinks", "gateway.fleet"))
    }
    assert outside == set()


def _private_uses(path: Path, modules: set[str]) -> Iterator[str]:
    """Each ``_name`` a file takes from another module: imported, or read as an attribute of a
    module it imported (``module._name``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules and alias.asname:
                    aliases[alias.asname] = alias.name
                elif alias.name in modules:
                    aliases[alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        owner = ast.unparse(node.value)
        if node.attr.startswith("__") or owner not in aliases:
            continue
        yield f"{aliases[owner]}.{node.attr}"


def test_no_module_takes_another_modules_private_names() -> None:
    """What a module does not export is its own: no other module or test reaches for it."""
    modules = set(_modules())
    files = [path for package in (*PACKAGES, "tests") for path in (ROOT / package).rglob("*.py")]
    taken = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in _private_uses(path, modules)
    ]
    assert taken == []


def test_each_package_says_its_public_names() -> None:
    """Every package's __init__ declares __all__ (python-can's can/__init__.py does)."""
    missing = [
        name
        for name, path in _modules().items()
        if path.name == "__init__.py" and "__all__" not in path.read_text(encoding="utf-8")
    ]
    assert missing == []
