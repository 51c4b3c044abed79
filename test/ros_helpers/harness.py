"""Test-side pieces for multi-process ROS tests: start processes, observe the node's outputs.

`start_node` / `start_camera` start real child processes (their own DDS participants) with the
package's process toolkit (`casseg_ros.processes.children.ChildProcess`: own session, log file, stop by
SIGINT -> SIGTERM -> SIGKILL); `Probe` is an rclpy node in the test process that records what the
segmentation node publishes and talks to its lifecycle and parameter services. Everything goes
over DDS on the loopback profile.
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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

from vision_msgs.msg import LabelInfo

from casseg_msgs.msg import SceneGraph
from casseg_ros.processes.children import ChildProcess, node_command
from casseg_ros.processes.readiness import ReadinessTimeout, wait_for

HELPERS = Path(__file__).resolve().parent
REPO = HELPERS.parent.parent


def wait_until(predicate: Callable[[], Any], timeout: float, poll_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass (the toolkit's `wait_for`,
    as a bool for asserts)."""
    try:
        wait_for(predicate, timeout, "a test condition", poll_s=poll_s)
    except ReadinessTimeout:
        return False
    return True


def _log_path(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix="casseg_test_")) / f"{name}.log"


def start_node(env: dict[str, str], namespace: str, camera_topic: str, params: dict[str, Any],
               extra_args: tuple[str, ...] = (), remaps: dict[str, str] | None = None) -> ChildProcess:
    """The segmentation node (`casseg_ros` in `namespace`), from the package's process toolkit;
    `remaps` adds ROS remappings (e.g. camera_info, depth/image)."""
    params = dict(params)
    argv = node_command(params.pop("model_path"), camera_topic, namespace=namespace, params=params,
                        node_args=extra_args)
    for source, target in (remaps or {}).items():  # argv ends inside --ros-args
        argv += ["-r", f"{source}:={target}"]
    return ChildProcess("segment_node", argv, env, _log_path("segment_node"), cwd=REPO)


@contextmanager
def node_and_probe(env: dict[str, str], namespace: str, camera_topic: str, params: dict[str, Any],
                   remaps: dict[str, str] | None = None, probe_name: str = "probe",
                   ) -> Iterator[tuple[ChildProcess, Probe]]:
    """The segmentation node (`start_node`) and a `Probe` on it in this process's rclpy; yields
    (node, probe) before the node is active (add subscriptions, then `probe.wait_for_state`), and
    closes the probe, rclpy and the node afterwards."""
    node = start_node(env, namespace, camera_topic, params, remaps=remaps)
    rclpy.init()
    probe = Probe(f"{namespace}/casseg_ros", name=probe_name)
    try:
        yield node, probe
    finally:
        probe.close()
        rclpy.shutdown()
        node.stop()


def start_rgbd_camera(env: dict[str, str], namespace: str, *args: str) -> ChildProcess:
    """test/ros_helpers/rgbd_camera.py: image + camera_info + registered depth under `namespace`."""
    argv = [sys.executable, "-m", "ros_helpers.rgbd_camera", "--ns", namespace, *args]
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, (str(HELPERS.parent), env.get("PYTHONPATH")))))
    return ChildProcess("rgbd_camera", argv, env, _log_path("rgbd_camera"), cwd=REPO)


def start_camera(env: dict[str, str], topic: str, *args: str) -> ChildProcess:
    argv = [sys.executable, str(HELPERS / "camera.py"), "--topic", topic, *args]
    return ChildProcess("camera", argv, env, _log_path("camera"), cwd=REPO)


def sent_headers(camera: ChildProcess) -> list[tuple[str, str, int, int]]:
    """(kind, frame_id, sec, nanosec) of every frame the fake camera published (its SENT lines)."""
    out = []
    for line in camera.output().splitlines():
        if line.startswith("SENT "):
            _, kind, frame_id, sec, nsec = line.split()
            out.append((kind, frame_id, int(sec), int(nsec)))
    return out


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

    def subscribe(self, topic: str, msg_type: Any, qos: QoSProfile | None = None) -> None:
        """Record `<node>/<topic>` too (reliable, depth 50 unless `qos` says otherwise)."""
        qos = qos or QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(msg_type, f"{self.fqn}/{topic}", self._recorder(topic), qos)

    def subscribe_label_info(self) -> None:
        """~/label_info as Nav2's semantic layer subscribes to it: reliable, transient local."""
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(LabelInfo, f"{self.fqn}/label_info", self._recorder("label_info"), qos)

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

    def lifecycle_state(self, timeout: float = 30.0) -> str:
        return self._call(GetState, "get_state", GetState.Request(), timeout).current_state.label

    def wait_for_state(self, state: str, timeout: float, alive: Callable[[], None] | None = None) -> None:
        """Until the node's ~/get_state says `state`; `alive()` raises if its process exited."""
        def reached() -> bool:
            try:
                return self.lifecycle_state(timeout=2.0) == state
            except TimeoutError:  # service not there yet
                return False
        wait_for(reached, timeout, f"{self.fqn} to be {state}", alive)

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
        # The spin thread must have left the executor before the node is destroyed: rclpy's
        # Executor.shutdown does not wait for a spin in another thread, and a node destroyed under a
        # running wait set is a use-after-free race in rcl.
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=10.0)
        self.node.destroy_node()


__all__ = ["ChildProcess", "Probe", "start_node", "start_camera", "sent_headers", "header_key", "wait_until"]
