"""Imports point one way: no cycle among converters/' modules (every import statement counts,
lazy and type-checking ones too), and the core imports no target's package."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "converters"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if "vendor" not in p.parts}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [resolve(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([base] if base else [])])
                found = [resolve(f"{base}.{alias.name}") or resolve(base) for alias in node.names]
            else:
                continue
            graph[name] |= {target for target in found if target and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 80
    assert cycles(graph) == []


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_no_target_package() -> None:
    graph = import_graph()
    core = [name for name in graph if not name.startswith("converters.targets")]
    reaching = sorted(f"{name} -> {target}" for name in core for target in graph[name]
                      if target.startswith("converters.targets.")
                      and target.split(".")[2] not in ("base",))
    # The registry (converters.targets) and targets/base.py are the core's way in.
    assert reaching == []


# The ground floor: what every module may use, and which uses nothing above it.
GROUND = {"converters.errors", "converters.fsutil", "converters.console", "converters.processes",
          "converters.defaults",
          "converters.native_output"}
# Files a deployment bundle ships alone (run.py and its helpers, verify.py): standard library and
# numpy only, so they import nothing of converters.
STANDALONE = {"converters.bundles.run", "converters.bundles.verify", "converters.bundles.runner_support",
              "converters.inputs.array_files", "converters.inputs.imaging", "converters.native_output",
              *(f"converters.targets.{name}.device_runner" for name in ("tflite", "onnx", "tensorrt"))}
# The top: planning and running builds, and what Invoke tasks call. Only they reach them: the
# distributed executor (it runs the pipeline's jobs), `python -m converters`, and the Invoke tasks
# a target contributes (converters/targets/<name>/tasks.py).
TOP = ("converters.pipeline", "converters.commands")
MAY_REACH_THE_TOP = (*TOP, "converters.distributed", "converters.__main__")


def _inside(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def reaching_the_top(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                  if _inside(target, TOP) and not _inside(name, MAY_REACH_THE_TOP)
                  and not (name.startswith("converters.targets.") and name.endswith(".tasks")))


def test_the_ground_floor_imports_only_itself() -> None:
    graph = import_graph()
    assert set(graph) >= GROUND
    reaching = sorted(f"{name} -> {target}" for name in GROUND for target in graph[name]
                      if target not in GROUND)
    assert reaching == []


def test_device_side_files_import_nothing_of_the_package() -> None:
    graph = import_graph()
    assert set(graph) >= STANDALONE
    assert {name: sorted(graph[name]) for name in STANDALONE if graph[name]} == {}


def test_only_the_top_reaches_the_pipeline_and_commands() -> None:
    graph = import_graph()
    assert any(_inside(name, TOP) for name in graph)
    assert reaching_the_top(graph) == []
    assert reaching_the_top({"converters.inputs.model": {"converters.pipeline.build"},
                             "converters.targets.edgetpu.tasks": {"converters.commands.cli"}}) == \
        ["converters.inputs.model -> converters.pipeline.build"]
