"""Shared pytest setup: every rclpy participant started by the tests stays on loopback.

- `FASTDDS_DEFAULT_PROFILES_FILE` points at the project's `config/fastdds_loopback.xml`
  (UDPv4 on 127.0.0.1 + shared memory, no multicast), so tests never talk to the LAN.
- `ROS_DOMAIN_ID` is random, so concurrent test runs on one machine (several developers, CI
  shards) do not see each other's topics. The session gets one at start; the `ros_env` fixture
  gives each test its own, for in-process rclpy (set before `rclpy.init`) and for subprocesses
  (`ros_env.env`).
- Children import this checkout's packages (casseg_ros, test helpers) without an install: the
  repo root is on their PYTHONPATH (also for children that in-process launchers start).
The environment itself comes from the package's process toolkit (`casseg_ros.processes.children`).
ROS_AUTOMATIC_DISCOVERY_RANGE is deliberately left alone: the profile already restricts the
transports, and the variable changes discovery in ways that differ between RMWs.

Nothing the suite runs writes into the user's home: the ROS log files (~/.ros/log), matplotlib's
font cache (~/.cache/matplotlib) and the project's ONNX export, engine and OpenVINO caches
(~/.cache/casseg_ros) go to one temporary folder of the session instead, for the test process and
every child it starts (ONNX Runtime's telemetry cache is switched off by `import casseg_ros`).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from checkout_snapshot import checkout_files

from casseg_ros.processes.children import loopback_env, random_domain_id
from casseg_ros.resources import loopback_profile

REPO_ROOT = Path(__file__).resolve().parent.parent
_CHECKOUT_AT_START = pytest.StashKey[dict]()


_USER_FILES = pytest.StashKey[tuple]()
# Where the tools would write into the user's home, and the folder of the session's user_files/ instead.
USER_FILE_FOLDERS = {"ROS_LOG_DIR": "ros_log", "MPLCONFIGDIR": "matplotlib", "CASSEG_ONNX_CACHE": "onnx_cache",
                     "CASSEG_ENGINE_CACHE": "engine_cache", "CASSEG_OPENVINO_CACHE": "openvino_cache"}


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: test modules import matplotlib (through the report code) while collected,
    # and it settles its config and cache folders at import.
    root = Path(tempfile.mkdtemp(prefix="casseg_test_user_files_"))
    patch = pytest.MonkeyPatch()
    for key, name in USER_FILE_FOLDERS.items():
        patch.setenv(key, str(root / name))
    config.stash[_USER_FILES] = (root, patch)


def pytest_unconfigure(config: pytest.Config) -> None:
    root, patch = config.stash[_USER_FILES]
    patch.undo()
    shutil.rmtree(root, ignore_errors=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_CHECKOUT_AT_START] = checkout_files()


@pytest.fixture(scope="session")
def checkout_at_start(request) -> dict[str, int]:
    """The checkout's files when the session started (before collection), to compare with at the end."""
    return request.config.stash[_CHECKOUT_AT_START]


def _repo_pythonpath(current: str | None) -> str:
    return os.pathsep.join(p for p in (str(REPO_ROOT), current or "") if p)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `after_suite` (what the suite left behind) run after every other selected test."""
    items.sort(key=lambda item: item.get_closest_marker("after_suite") is not None)  # stable sort


@dataclass(frozen=True)
class RosEnv:
    domain_id: int
    env: dict[str, str]
    # Unique per test: namespaces topics so that an accidental domain-id collision with another
    # concurrent run still cannot mix messages.
    namespace: str

    @property
    def python(self) -> str:
        return sys.executable


@pytest.fixture(autouse=True, scope="session")
def _ros_loopback_session():
    keys = ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DOMAIN_ID", "RMW_IMPLEMENTATION", "PYTHONPATH")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(loopback_profile())
    os.environ["ROS_DOMAIN_ID"] = str(random_domain_id())
    os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    os.environ["PYTHONPATH"] = _repo_pythonpath(saved["PYTHONPATH"])
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """torch's thread count is process-wide, and a backend loaded in the test process (an
    in-process replay) sets it to the cores; results depend on it, so no test leaves it changed
    for the tests after it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_ros_env() -> RosEnv:
    domain_id = random_domain_id()
    # os.environ already has the session's PYTHONPATH (the autouse session fixture runs first).
    return RosEnv(domain_id=domain_id, env=loopback_env(domain_id),
                  namespace=f"/t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def ros_env(monkeypatch) -> RosEnv:
    """A fresh random domain for this test, applied to os.environ (call rclpy.init after this)."""
    env = make_ros_env()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(env.domain_id))
    return env


@pytest.fixture(scope="module")
def ros_env_module() -> RosEnv:
    """Like `ros_env`, shared by one test module (for processes that are costly to start)."""
    env = make_ros_env()
    saved = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(env.domain_id)
    yield env
    if saved is None:
        os.environ.pop("ROS_DOMAIN_ID", None)
    else:
        os.environ["ROS_DOMAIN_ID"] = saved
