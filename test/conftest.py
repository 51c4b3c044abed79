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
"""
from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from casseg_ros.processes.children import loopback_env, random_domain_id
from casseg_ros.resources import loopback_profile

REPO_ROOT = Path(__file__).resolve().parent.parent


def _repo_pythonpath(current: str | None) -> str:
    return os.pathsep.join(p for p in (str(REPO_ROOT), current or "") if p)


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
