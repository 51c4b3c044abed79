"""What a new user sees from the commands: no warnings about code that is not theirs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # fresh interpreters that import torch and rclpy (~10 s each on 2 cores)

REPO = Path(__file__).resolve().parent.parent
CLI_MODULES = ("casseg_ros.replay.cli", "casseg_ros.export.cli", "casseg_ros.vocab_cli", "casseg_ros.ctl_cli",
               "casseg_ros.ros.node_main", "casseg_ros.demo.cli")


def test_no_future_warning_from_importing_the_commands():
    # -W error: a FutureWarning raised while importing any command's module fails the import.
    code = "; ".join(f"import {m}" for m in CLI_MODULES)
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True,
                          text=True, timeout=300, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_help_prints_only_the_help():
    proc = subprocess.run([sys.executable, "-m", "casseg_ros.replay.cli", "--help"], capture_output=True, text=True,
                          timeout=300, cwd=str(REPO))
    assert proc.returncode == 0 and "usage: casseg-replay" in proc.stdout
    assert proc.stderr == ""
