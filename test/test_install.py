"""A non-editable install works on its own: `pip install --prefix` of the repo, then, from an empty
working directory, the installed package finds its installed data (casseg_ros.resources) and the
installed `casseg-replay` evaluates the installed demo weights on the installed demo recording."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds and installs the package, then runs a replay

REPO = Path(__file__).resolve().parent.parent
# Build products and local state that are no part of the package source.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "install", "log", "out", "*.egg-info",
                                    "__pycache__", ".pytest_cache")


def _only(paths: list[Path], what: str) -> Path:
    assert len(paths) == 1, f"expected one {what}, found {paths}"
    return paths[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("install")
    # pip builds in the source tree (build/, *.egg-info): build from a copy, not the checkout.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    prefix = root / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--prefix", str(prefix), str(source)],
                   check=True, capture_output=True, text=True, timeout=300)
    site = _only(list(prefix.glob("lib/python3*/site-packages")), "site-packages")
    env = dict(os.environ, PYTHONPATH=str(site),
               AMENT_PREFIX_PATH=os.pathsep.join(p for p in (str(prefix), os.environ.get("AMENT_PREFIX_PATH")) if p))
    workdir = root / "empty"
    workdir.mkdir()
    return {"prefix": prefix, "site": site, "env": env, "cwd": workdir}


def run_installed(installed: dict, args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=installed["env"], cwd=installed["cwd"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_installed_package_and_data_come_from_the_prefix(installed):
    prefix = installed["prefix"]
    share = prefix / "share" / "casseg_ros"
    out = run_installed(installed, [sys.executable, "-c", (
        "import json, casseg_ros\n"
        "from casseg_ros.resources import resolve_data_path\n"
        "from casseg_ros.replay.bag import msg_definitions_dir\n"
        "print(json.dumps({'package': casseg_ros.__file__,\n"
        "                  'bag': str(resolve_data_path('data/demo.mcap')),\n"
        "                  'model': str(resolve_data_path('models/casseg_demo.safetensors')),\n"
        "                  'launch': str(resolve_data_path('launch/segment.launch.py')),\n"
        "                  'msgs': str(msg_definitions_dir('casseg_msgs'))}))\n")]).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(installed["site"]), found  # not the checkout's casseg_ros
    for key, relative in (("bag", "data/demo.mcap"), ("model", "models/casseg_demo.safetensors"),
                          ("launch", "launch/segment.launch.py")):
        assert Path(found[key]) == share / relative, found
        assert Path(found[key]).read_bytes() == (REPO / relative).read_bytes()
    assert sorted(p.name for p in Path(found["msgs"]).glob("*.msg")) == \
        sorted(p.name for p in (REPO / "interfaces" / "casseg_msgs" / "msg").glob("*.msg"))
    assert not Path(found["msgs"]).is_relative_to(REPO / "interfaces")  # the installed definitions, not the sources


def test_installed_replay_scores_the_installed_demo(installed, tmp_path):
    share = installed["prefix"] / "share" / "casseg_ros"
    replay = _only(list(installed["prefix"].glob("**/casseg-replay")), "casseg-replay script")
    out = tmp_path / "replay"
    run_installed(installed, [str(replay), str(share / "data" / "demo.mcap"), "--model",
                              str(share / "models" / "casseg_demo.safetensors"), "--out", str(out),
                              "--max-frames", "5", "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["frames_processed"] == 5 and metrics["frames_skipped"] == 0
    assert metrics["iou"]["frames"] == 5
    # The trained demo weights (mIoU ~0.8 on this recording); a random or wrong model scores ~0.1.
    assert metrics["iou"]["miou"] > 50  # percent
    assert (out / "report.md").is_file() and list((out / "bag").glob("*.mcap"))
