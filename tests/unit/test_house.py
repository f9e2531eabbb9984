"""The house's rules, read from the source: each room has one import name, a
room imports only from the floors below it, and no modules import each other
in a circle (anywhere in a module, function-level imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The top-level rooms, reached as citylake.<room> through links in citylake/.
LINKED = ("schemas", "lake", "ingest", "sync", "pipelines", "services")
# A room may import only rooms on a lower floor (DESIGN.md "Floors").
FLOORS = {
    "schemas": 1,
    "config": 1,
    "ingest": 2,
    "lake": 3,  # reads and collects the landing zone ingest writes
    "sync": 4,
    "pipelines": 4,
    "services": 4,
    "site": 5,
    "cli": 6,
    "citylake": 7,  # citylake/__init__.py and __main__.py
    # The test bench: devstack/ (its own distribution, citylake_devstack), not
    # in the product's wheel; the product loads its commands by entry point only.
    "devstack": 8,
}
BENCH = REPO / "devstack" / "citylake_devstack"


@pytest.mark.parametrize("room", LINKED)
def test_a_room_imported_by_its_short_name_refuses_to_load(room: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {room}"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert f"import citylake.{room}, not {room}" in done.stderr


def test_the_test_bench_imported_through_its_folder_refuses_to_load() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import devstack.citylake_devstack"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "import citylake_devstack, not devstack.citylake_devstack" in done.stderr


def test_the_product_package_holds_no_test_bench() -> None:
    # What the issue found shipped in the wheel: the dev stack, the scale run
    # and its report, the simulators and the dev commands.
    shipped = {p.relative_to(REPO / "citylake").as_posix() for p in (REPO / "citylake").rglob("*.py")}
    assert not {
        p for p in shipped if p.startswith(("devstack/", "scalereport/", "cli/simulate", "cli/scale"))
    }


def test_each_room_loads_once_under_its_one_name() -> None:
    code = "; ".join(
        [*(f"import citylake.{room}" for room in LINKED), "import sys", "print(sorted(sys.modules))"]
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
    assert not loaded & set(LINKED), "a room was also loaded under its short name"


def _modules() -> Iterator[tuple[str, Path]]:
    """(dotted name under citylake, file) for every module of the package."""
    for path in sorted((REPO / "citylake").rglob("*.py")):
        relative = path.relative_to(REPO / "citylake")
        if relative.parts[0] in LINKED:
            continue  # reached below through the room itself
        yield ".".join(("citylake", *relative.with_suffix("").parts)), path
    for room in LINKED:
        for path in sorted((REPO / room).rglob("*.py")):
            yield ".".join(("citylake", *path.relative_to(REPO).with_suffix("").parts)), path
    for path in sorted(BENCH.rglob("*.py")):
        yield ".".join(("citylake_devstack", *path.relative_to(BENCH).with_suffix("").parts)), path


def _imports(name: str, path: Path) -> set[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if path.name == "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            # `from pkg import mod` imports the module pkg.mod when there is one.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("citylake", "citylake_devstack")}


def _graph() -> dict[str, set[str]]:
    modules = {name.removesuffix(".__init__"): path for name, path in _modules()}
    return {
        name: {m for m in _imports(name, path) if m in modules and m != name}
        for name, path in modules.items()
    }


def _room(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "citylake_devstack":
        return "devstack"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FLOORS) else "citylake"


def test_every_room_is_on_a_floor() -> None:
    rooms = {_room(m) for m in _graph()}
    assert rooms <= set(FLOORS), f"rooms with no floor in this test (and DESIGN.md): {rooms - set(FLOORS)}"


def test_no_arrow_runs_up_or_sideways() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _room(target) != _room(module) and FLOORS[_room(target)] >= FLOORS[_room(module)]
    )
    assert not wrong, "imports from a floor not below the importer's:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "modules importing each other in a circle: " + "; ".join(
        " <-> ".join(c) for c in cycles
    )
