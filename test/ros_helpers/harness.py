"""Test-side pieces for multi-process ROS tests: start processes, observe the node's outputs.

`NodeProcess` / `CameraProcess` are real child processes (their own DDS participants); `Probe` is
an rclpy node in the test process that records what the segmentation node publishes and talks
to its lifecycle and parameter services. Everything goes over DDS on the loopback profile.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from casseg_msgs.msg import LabelInfo, SceneGraph

HELPERS = Path(__file__).resolve().parent
REPO = HELPERS.parent.parent



def wait_until(predicate: Callable[[], bool], timeout: float, poll_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()

class ChildProcess:
    """A child process whose combined output goes to a temp file (no pipe can fill up)."""

    def __init__(self, args: list[str], env: dict[str, str], name: str):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                return text in self.output()
            time.sleep(0.1)
        return False

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own process group, started above
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def sent_headers(self) -> list[tuple[str, str, int, int]]:
        """Camera only: (kind, frame_id, sec, nanosec) of every frame it published."""
        out = []
        for line in self.output().splitlines():
            if line.startswith("SENT "):
                _, kind, frame_id, sec, nsec = line.split()
                out.append((kind, frame_id, int(sec), int(nsec)))
        return out


def start_node(env: dict[str, str], namespace: str, camera_topic: str, params: dict[str, Any],
               extra_args: tuple[str, ...] = ()) -> ChildProcess:
    ros_args = ["--ros-args", "-r", f"__ns:={namespace}", "-r", f"image:={camera_topic}",
                "-r", f"image/compressed:={camera_topic}/compressed"]
    for key, value in params.items():
        value = str(value).lower() if isinstance(value, bool) else value
        ros_args += ["-p", f"{key}:={value}"]
    args = [sys.executable, "-m", "casseg_ros.ros.segment_node", *extra_args, *ros_args]
    return ChildProcess(args, env, "segment_node")


def start_camera(env: dict[str, str], topic: str, *args: str) -> ChildProcess:
    return ChildProcess([sys.executable, str(HELPERS / "camera.py"), "--topic", topic, *args], env, "camera")


def header_key(header) -> tuple[str, int, int]:
    return header.frame_id, header.stamp.sec, header.stamp.nanosec


class Probe:
    """Subscribes to every output of the node at `node_fqn` and records the messages."""

    def __init__(self, node_fqn: str, name: str = "probe"):
        self.fqn = node_fqn
        self.node = rclpy.create_node(name)
        self._lock = threading.Lock()
        self.messages: dict[str, list] = defaultdict(list)
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msg_type in (("mask", Image), ("overlay", Image), ("confidence", Image),
                                ("scene_graph", SceneGraph), ("scene_graph/markers", MarkerArray)):
            self.node.create_subscription(msg_type, f"{node_fqn}/{topic}", self._recorder(topic), image_qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _recorder(self, topic: str) -> Callable:
        def record(msg) -> None:
            with self._lock:
                self.messages[topic].append(msg)
        return record

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(self.fqn + ":"):
                with self._lock:
                    self.messages["diagnostics"].append({kv.key: kv.value for kv in status.values} |
                                                        {"_level": status.level, "_message": status.message})

    def get(self, topic: str) -> list:
        with self._lock:
            return list(self.messages[topic])

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return wait_until(predicate, timeout)

    def subscribe_labels(self) -> None:
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(LabelInfo, f"{self.fqn}/labels", self._recorder("labels"), qos)

    # ------------------------------------------------------------------ services
    def _call(self, srv_type, service: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, f"{self.fqn}/{service}")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {self.fqn}/{service} not available")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not future.done():
                raise TimeoutError(f"{service} did not answer in {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def lifecycle_state(self) -> str:
        return self._call(GetState, "get_state", GetState.Request()).current_state.label

    def change_state(self, transition_label: str, timeout: float = 60.0) -> bool:
        ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}
        request = ChangeState.Request()
        request.transition.id = ids[transition_label]
        return bool(self._call(ChangeState, "change_state", request, timeout).success)

    def set_parameters(self, **values: Any) -> list[tuple[bool, str]]:
        request = SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
        return [(r.successful, r.reason) for r in self._call(SetParameters, "set_parameters", request).results]

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()


__all__ = ["ChildProcess", "Probe", "start_node", "start_camera", "header_key"]
