"""The project's import graph, read from the source (AST; nothing is imported to build it), held
against the layer table of docs/ARCHITECTURE.md ("Layers and who may import whom"):

* every module of casseg_ros and training stands in one row of the table, and no module imports
  one of a lower row (each layer imports only itself and the layers above it);
* no import cycle between the modules, counting function-level imports too (a cycle hidden
  inside functions still ties the modules together);
* every module of a row marked "no" in the ROS? column reaches no ROS package, through any chain
  of project imports — checked on the source and once more in a fresh interpreter;
* replay never reaches the node itself (segment_node): node and replay share the frame step only;
* project modules are imported at the top of the file, so each file's header shows what it
  depends on.
"""
from __future__ import annotations

import ast
import graphlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
LAYER_SECTION = "## Layers and who may import whom"
PACKAGES = ("casseg_ros", "training")
TOP_LEVEL_IMPORTS_ONLY = ("casseg_ros", "training")
ROS_DISTRIBUTIONS = {"rclpy", "rosbag2_py", "rosidl_runtime_py", "launch", "launch_ros", "message_filters",
                     "cv_bridge", "casseg_msgs"}


@dataclass(frozen=True)
class Import:
    target: str  # a project module, or the top-level name of an external one
    line: int
    in_function: bool


@dataclass(frozen=True)
class Layer:
    row: int  # 0 = the top of the table
    name: str
    paths: tuple[str, ...]  # repository paths: files, or folders ending in "/"
    ros_free: bool


def layer_table(text: str) -> list[Layer]:
    """The rows of the table under LAYER_SECTION, top first."""
    section = text.split(LAYER_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # after the header and its rule
    layers = []
    for row in rows:
        name, modules, ros = (cell.strip() for cell in row.strip().strip("|").split("|"))
        layers.append(Layer(len(layers), name, tuple(re.findall(r"`([^`]+)`", modules)),
                            ros.lower().startswith("no")))
    return layers


def layer_of(path: Path, layers: list[Layer]) -> Layer | None:
    """The row whose most specific path holds the file."""
    rel = path.relative_to(REPO).as_posix()
    best = None
    for layer in layers:
        for entry in layer.paths:
            if rel == entry or (entry.endswith("/") and rel.startswith(entry)):
                if best is None or len(entry) > len(best[0]):
                    best = (entry, layer)
    return best[1] if best else None


def is_package_face(path: Path) -> bool:
    """An __init__.py that imports and defines nothing (a docstring, a version): it stands in no row."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and not any(
        isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)) for n in body)


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


@pytest.fixture(scope="module")
def layers() -> dict[str, Layer]:
    """Module -> its row of the table (package faces left out)."""
    table = layer_table(ARCHITECTURE.read_text())
    return {module: layer for module, path in discover_modules().items()
            if not is_package_face(path) and (layer := layer_of(path, table)) is not None}


def ros_free_modules(layers: dict[str, Layer]) -> list[str]:
    return sorted(module for module, layer in layers.items() if layer.ros_free)


def test_the_graph_sees_the_project(graph):
    """Guards the tests below against an empty or misread graph."""
    assert {"casseg_ros.runtime.onnx_backend", "casseg_ros.model.checkpoint", "training.train"} <= set(graph)
    edges = project_edges(graph)
    assert "casseg_ros.model.checkpoint" in edges["casseg_ros.runtime.torch_backend"]
    assert "casseg_ros.text.vocabulary" in edges["casseg_ros.model.checkpoint"]  # absolute form
    assert "casseg_ros.model.segmentor" in edges["casseg_ros.model.checkpoint"]  # relative form
    assert any(i.target == "tensorrt" and i.in_function for i in graph["casseg_ros.runtime.tensorrt_backend"])


def test_the_layer_table_is_read():
    """Guards the layer tests against a misread table: its rows, paths and ROS column as written."""
    table = layer_table(ARCHITECTURE.read_text())
    rows = {path: layer for layer in table for path in layer.paths}
    assert len(table) >= 15 and rows["casseg_ros/fileio.py"].row == 0
    assert rows["casseg_ros/pipeline.py"].ros_free and not rows["casseg_ros/ros/"].ros_free
    assert rows["casseg_ros/parameter_rules.py"].ros_free  # the CLIs validate with it, without ROS
    assert rows["casseg_ros/perception/"].row < rows["casseg_ros/text/"].row < rows["casseg_ros/ros/"].row
    assert layer_of(REPO / "casseg_ros" / "export" / "parity.py", table).ros_free
    assert not layer_of(REPO / "casseg_ros" / "export" / "cli.py", table).ros_free
    table_text = "| layer | modules | ROS? |\n|---|---|---|\n| a | `x/` | no |\n| b | `x/y.py`, `z.py` | yes |\n"
    two = layer_table(f"{LAYER_SECTION}\n\n{table_text}\n## next\n| not | a | row |\n")
    assert [(l.name, l.paths, l.ros_free) for l in two] == [("a", ("x/",), True), ("b", ("x/y.py", "z.py"), False)]


def test_every_module_stands_in_one_layer(layers):
    modules = discover_modules()
    missing = sorted(m for m, path in modules.items() if m not in layers and not is_package_face(path))
    assert not missing, "modules in no row of docs/ARCHITECTURE.md's layer table: " + ", ".join(missing)
    ros_free = set(ros_free_modules(layers))
    for module in ("casseg_ros.pipeline", "casseg_ros.message_buffers", "casseg_ros.resources", "casseg_ros.fileio",
                   "casseg_ros.model.checkpoint", "casseg_ros.runtime.canned", "casseg_ros.perception.depth",
                   "casseg_ros.text.vocabulary", "casseg_ros.vocab_cli", "training.train", "casseg_ros.replay.bag"):
        assert module in ros_free, module
    assert "casseg_ros.ros.frame_io" in layers and "casseg_ros.ros.frame_io" not in ros_free


def test_no_module_imports_a_lower_layer(graph, layers):
    edges = project_edges(graph)
    offences = sorted(f"{module} ({layers[module].name!r}) imports {target} ({layers[target].name!r}, lower)"
                      for module, targets in edges.items() if module in layers
                      for target in targets if target in layers and layers[target].row > layers[module].row)
    assert not offences, "\n".join(offences)


def test_replay_never_reaches_the_node(graph):
    edges = project_edges(graph)
    todo = [m for m in graph if in_layer(m, ("casseg_ros.replay",))]
    seen = set(todo)
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert "casseg_ros.ros.frame_io" in seen  # the shared frame step
    assert not seen & {"casseg_ros.ros.segment_node", "casseg_ros.ros.camera_batch", "casseg_ros.ros.node_main"}


def test_no_import_cycle(graph):
    try:
        order = list(graphlib.TopologicalSorter(project_edges(graph)).static_order())
    except graphlib.CycleError as err:
        cycle = err.args[1]
        pytest.fail("import cycle: " + " -> ".join(cycle))
    assert len(order) == len(graph)


def test_ros_free_layers_reach_no_ros(graph, layers):
    edges = project_edges(graph)
    offences = []
    for start in ros_free_modules(layers):
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


@pytest.mark.slow
def test_ros_free_layers_load_no_ros_module(layers):
    """The same in a fresh interpreter: no third-party dependency pulls ROS in either."""
    code = ("import sys\n" + "".join(f"import {m}\n" for m in ros_free_modules(layers))
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
