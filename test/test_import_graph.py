"""The project's import graph, read from the source (AST; nothing is imported to build it).

* no import cycle between the modules of casseg_ros and training, counting function-level
  imports too (a cycle hidden inside functions still ties the modules together);
* the ROS-free layers (model, text, runtime, perception, fileio, parameter_rules) reach no ROS package, through
  any chain of project imports — checked on the source and once more in a fresh interpreter;
* in the model, text and runtime layers and in training, project modules are imported at the top
  of the file, so each file's header shows what it depends on.
"""
from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("casseg_ros", "training")
ROS_FREE = ("casseg_ros.model", "casseg_ros.text", "casseg_ros.runtime", "casseg_ros.perception",
            "casseg_ros.fileio", "casseg_ros.parameter_rules")
TOP_LEVEL_IMPORTS_ONLY = ("casseg_ros", "training")
ROS_DISTRIBUTIONS = {"rclpy", "rosbag2_py", "rosidl_runtime_py", "launch", "launch_ros", "message_filters",
                     "cv_bridge", "casseg_msgs"}


@dataclass(frozen=True)
class Import:
    target: str  # a project module, or the top-level name of an external one
    line: int
    in_function: bool


def is_ros(top_level_name: str) -> bool:
    return top_level_name in ROS_DISTRIBUTIONS or top_level_name.endswith(("_msgs", "_srvs"))


def discover_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


class _ImportCollector(ast.NodeVisitor):
    """Every import statement of one module, resolved to module names; skips `if TYPE_CHECKING:`."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.depth = 0
        self.imports: list[Import] = []

    def _project_module(self, dotted: str) -> str:
        """The longest prefix of `dotted` that is a module of the project."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in self.known:
                return ".".join(parts[:n])
        raise AssertionError(f"import of unknown project module {dotted!r}")

    def _add(self, dotted: str, line: int) -> None:
        top = dotted.split(".")[0]
        target = self._project_module(dotted) if top in PACKAGES else top
        self.imports.append(Import(target, line, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        for alias in node.names:  # `from pkg import submodule` imports the submodule
            full = f"{base}.{alias.name}"
            self._add(full if full in self.known else base, node.lineno)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _visit_function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function


def import_graph() -> dict[str, list[Import]]:
    modules = discover_modules()
    graph = {}
    for name, path in modules.items():
        collector = _ImportCollector(name, path.name == "__init__.py", set(modules))
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        graph[name] = collector.imports
    return graph


def project_edges(graph: dict[str, list[Import]]) -> dict[str, set[str]]:
    return {m: {i.target for i in imps if i.target in graph and i.target != m} for m, imps in graph.items()}


def in_layer(module: str, layers: tuple[str, ...]) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    return import_graph()


def test_the_graph_sees_the_project(graph):
    """Guards the tests below against an empty or misread graph."""
    assert {"casseg_ros.runtime.onnx_backend", "casseg_ros.model.checkpoint", "training.train"} <= set(graph)
    edges = project_edges(graph)
    assert "casseg_ros.model.checkpoint" in edges["casseg_ros.runtime.torch_backend"]
    assert "casseg_ros.text.vocabulary" in edges["casseg_ros.model.checkpoint"]  # absolute form
    assert "casseg_ros.model.segmentor" in edges["casseg_ros.model.checkpoint"]  # relative form
    assert any(i.target == "tensorrt" and i.in_function for i in graph["casseg_ros.runtime.tensorrt_backend"])


def test_no_import_cycle(graph):
    try:
        order = list(graphlib.TopologicalSorter(project_edges(graph)).static_order())
    except graphlib.CycleError as err:
        cycle = err.args[1]
        pytest.fail("import cycle: " + " -> ".join(cycle))
    assert len(order) == len(graph)


def test_ros_free_layers_reach_no_ros(graph):
    edges = project_edges(graph)
    offences = []
    for start in (m for m in graph if in_layer(m, ROS_FREE)):
        chain = {start: [start]}
        todo = [start]
        while todo:
            module = todo.pop()
            for imp in graph[module]:
                if imp.target not in graph and is_ros(imp.target):
                    offences.append(" -> ".join(chain[module]) + f" imports {imp.target} (line {imp.line})")
            for nxt in edges[module]:
                if nxt not in chain:
                    chain[nxt] = chain[module] + [nxt]
                    todo.append(nxt)
    assert not offences, "\n".join(offences)


def test_ros_free_layers_load_no_ros_module():
    """The same in a fresh interpreter: no third-party dependency pulls ROS in either."""
    code = ("import sys\n" + "".join(f"import {m}\n" for m in ROS_FREE)
            + "print(' '.join(sorted(n for n in sys.modules if '.' not in n)))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = proc.stdout.split()
    assert "torch" in loaded  # the import really ran
    assert [m for m in loaded if is_ros(m)] == []


def test_project_modules_are_imported_at_the_top(graph):
    lazy = sorted({f"{module}:{imp.line} imports {imp.target} inside a function"
            for module, imports in graph.items() if in_layer(module, TOP_LEVEL_IMPORTS_ONLY)
            for imp in imports if imp.in_function and imp.target in graph})
    assert not lazy, "\n".join(lazy)
