"""What the suite leaves behind: the environment that ran it still works. Marked `after_suite`:
conftest.py runs it after every other selected test, whatever the order of the rest.

`make setup` installs this checkout editable into the venv, with its console entries. A test
that installed the package elsewhere with the venv's own pip once uninstalled them on the way
(test_install.py): after `make test` the entries were gone and `import casseg_ros` failed outside
the checkout. Here, from an empty working directory and without the PYTHONPATH the tests give
their children, `import casseg_ros` must find this checkout, and every console entry must run.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from checkout_snapshot import checkout_files

REPO = Path(__file__).resolve().parent.parent
ENTRIES = ("casseg_ros", "casseg-export", "casseg-replay", "casseg-vocab", "casseg-ctl")  # setup.py's console_scripts

# Runs each console script file as its own program would (`__main__`, argv [script, --help]) in one
# interpreter: they import the same heavy modules, once is enough.
RUN_ENTRIES = """
import contextlib, io, json, runpy, sys
import casseg_ros
found = {"package": casseg_ros.__file__, "entries": {}}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            runpy.run_path(script, run_name="__main__")
        status = "returned without exiting"
    except SystemExit as exc:
        status = exc.code
    found["entries"][script] = {"status": status, "output": output.getvalue()}
print(json.dumps(found))
"""


@pytest.mark.slow
@pytest.mark.after_suite
def test_the_editable_install_and_its_console_entries_still_work(tmp_path):
    declared = [ep.name for ep in importlib.metadata.distribution("casseg_ros").entry_points
                if ep.group == "console_scripts"]
    assert sorted(declared) == sorted(ENTRIES), "ENTRIES is not the list of setup.py's console_scripts"
    scripts = [Path(sys.executable).parent / name for name in ENTRIES]
    for script in scripts:
        assert script.is_file() and os.access(script, os.X_OK), f"console entry {script} is gone"
        assert script.read_text().splitlines()[0] == f"#!{sys.executable}", f"{script} is not this venv's"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", RUN_ENTRIES, *map(str, scripts)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(REPO / "casseg_ros"), found["package"]
    for name, script in zip(ENTRIES, scripts):
        entry = found["entries"][str(script)]
        assert entry["status"] == 0 and f"usage: {name} " in entry["output"], (name, entry)


def test_importing_casseg_ros_keeps_onnx_runtime_from_phoning_home(tmp_path):
    """ONNX Runtime >= 1.29 on Linux uploads usage events (a DNS lookup of Microsoft's collector
    at the first session) and keeps a device id and an event cache in ~/.cache/Microsoft, unless
    ORT_DISABLE_TELEMETRY=1 is set before it starts: `import casseg_ros` sets it."""
    home = tmp_path / "home"
    home.mkdir()
    # Also without the CI variables under which ONNX Runtime stays quiet by itself.
    env = {key: value for key, value in os.environ.items()
           if key not in ("ORT_DISABLE_TELEMETRY", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD")}
    code = ("import casseg_ros\n"
            "import numpy as np, onnxruntime\n"
            "from onnx import TensorProto, helper\n"
            "x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in 'xy')\n"
            "graph = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', [x], [y])\n"
            "model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])\n"
            "session = onnxruntime.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])\n"
            "print(session.run(None, {'x': np.ones(1, np.float32)})[0][0])\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(env, HOME=str(home)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "1.0", result.stderr[-3000:]
    assert [p.relative_to(home).as_posix() for p in home.rglob("*")] == []


@pytest.mark.after_suite
def test_the_suite_wrote_nothing_into_the_checkout(checkout_at_start):
    """Every test writes into its temporary folder: nothing new or changed in the checkout (an
    export's external data, a default output folder such as out/, a cache) after the suite."""
    now = checkout_files()
    assert sorted(set(now) - set(checkout_at_start)) == []
    assert sorted(p for p in checkout_at_start if p in now and now[p] != checkout_at_start[p]) == []
