"""The rooms and their arrows, pinned (docs/ARCHITECTURE.md, "Layers").

``schemas`` is the shared kernel and imports neither side; ``agents`` and ``streams`` do
not import each other (one known exception below, the orchestrator that is still in
``streams``); every Kafka client is built in ``schemas/kafka.py``; faust's private
members are reached only from ``streams/faust_compat.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "agents", "streams")
FORBIDDEN = {
    "schemas": {"agents", "streams"},
    "agents": {"streams"},
    "streams": {"agents"},
}
# `llcr up` starts agents and processors and reads the agents' file formats to plan a
# run (its plan module reads them): the orchestrator sits above both sides, and still
# lives in streams (issue 18).
ORCHESTRATOR = {"streams/up/plan.py"}
KAFKA_SEAM = "schemas/kafka.py"
KAFKA_CLIENTS = {"Producer", "Consumer", "AdminClient"}


def modules(package: str) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        yield relative, ast.parse(path.read_text(), filename=relative)


def imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def layering_violations(package: str, found: Iterator[tuple[str, ast.Module]]) -> list[str]:
    out = []
    for relative, tree in found:
        if relative in ORCHESTRATOR:
            continue
        for line, name in imported(tree):
            if name.split(".")[0] in FORBIDDEN[package]:
                out.append(f"{relative}:{line} imports {name}")
    return out


def test_each_package_imports_only_what_its_layer_allows() -> None:
    problems = [v for package in PACKAGES for v in layering_violations(package, modules(package))]
    assert problems == []


def test_the_layering_check_catches_a_forbidden_import() -> None:
    """The check is not vacuous: an agents module importing streams is caught."""
    tree = ast.parse("import os\nfrom streams.matching import core\n")
    assert layering_violations("agents", iter([("agents/x.py", tree)])) == [
        "agents/x.py:2 imports streams.matching"
    ]
    schemas = ast.parse("def f():\n    import agents.cli\n")
    assert layering_violations("schemas", iter([("schemas/y.py", schemas)])) != []


def client_constructions(relative: str, tree: ast.Module) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in KAFKA_CLIENTS and relative != KAFKA_SEAM:
                out.append(f"{relative}:{node.lineno} builds {name}")
    return out


def test_every_kafka_client_is_built_by_the_seam() -> None:
    problems = [
        problem
        for package in PACKAGES
        for relative, tree in modules(package)
        for problem in client_constructions(relative, tree)
    ]
    assert problems == []
    caught = client_constructions("streams/z.py", ast.parse("p = confluent_kafka.Producer({})"))
    assert caught == ["streams/z.py:1 builds Producer"]


def test_faust_private_members_are_reached_from_one_module() -> None:
    faust_private = []
    for relative, tree in modules("streams"):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
                and relative != "streams/faust_compat.py"
            ):
                faust_private.append(f"{relative}:{node.lineno} .{node.attr}")
    assert faust_private == []


def test_settings_modules_import_no_domain_module() -> None:
    """Settings are leaves: the domain depends on them, never the reverse."""
    for relative in ("streams/settings.py", "agents/settings.py", "schemas/settings.py"):
        tree = ast.parse((ROOT / relative).read_text())
        names = [name for _, name in imported(tree) if name.split(".")[0] in PACKAGES]
        allowed = [n for n in names if n.startswith("schemas.")]
        assert names == allowed, f"{relative} imports {sorted(set(names) - set(allowed))}"
