#!/usr/bin/env python3
"""Exit 0 when the running interpreter has the editable install of the checkout CHECKOUT: the
`casseg_ros` distribution is installed editable from CHECKOUT, `import casseg_ros` finds
CHECKOUT's package from any working directory, and every console entry the distribution declares
is in the interpreter's bin folder and names a module the checkout has. Otherwise print what is
wrong and exit 1.

`make setup` runs it every time (run it from outside the checkout, so the working directory does
not put the package on the path): its stamp file says that set-up ran once, not that nothing
removed the install since (a `pip install` of this package elsewhere with the venv's own pip
uninstalls the editable one first).

Usage: python scripts/check_editable.py CHECKOUT
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

DISTRIBUTION = "casseg_ros"


def problems(checkout: Path) -> list[str]:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return [f"{DISTRIBUTION} is not installed in {sys.prefix}"]
    found = []
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    source = Path(unquote(urlparse(direct_url.get("url", "")).path)).resolve()
    if not direct_url.get("dir_info", {}).get("editable") or source != checkout:
        found.append(f"{DISTRIBUTION} is not installed editable from {checkout} (direct_url: {direct_url})")
    spec = importlib.util.find_spec(DISTRIBUTION)
    if spec is None or spec.origin is None or not Path(spec.origin).resolve().is_relative_to(checkout):
        found.append(f"import {DISTRIBUTION} finds {spec.origin if spec else None}, not {checkout / DISTRIBUTION}")
    bin_dir = Path(sys.executable).parent
    entries = [ep.name for ep in dist.entry_points if ep.group == "console_scripts"]
    if not entries:
        found.append(f"{DISTRIBUTION} declares no console entries")
    found += [f"console entry {bin_dir / name} is missing" for name in entries if not (bin_dir / name).is_file()]
    # An install made before a module moved keeps entries (and their scripts) naming the old place.
    found += [f"console entry {ep.name} runs {ep.value}, which the checkout no longer has (installed from an "
              f"older setup.py)" for ep in dist.entry_points if ep.group == "console_scripts" and not _defines(ep)]
    return found


def _defines(entry: importlib.metadata.EntryPoint) -> bool:
    """Whether the entry's module is in the checkout and names its function at top level (read
    from the source: importing the node's module would start ROS)."""
    try:
        spec = importlib.util.find_spec(entry.module)
    except ModuleNotFoundError:  # a parent package is gone
        return False
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return spec is not None
    names = set()
    for node in ast.parse(Path(spec.origin).read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return entry.attr.split(".")[0] in names


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    found = problems(Path(args[0]).resolve())
    for problem in found:
        print(f"check_editable: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
