"""/diagnostics of the node: a status per camera and one for the shared backend."""
from __future__ import annotations

from typing import Any, Sequence

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from casseg_ros.ros.cameras import Camera
from casseg_ros.ros.node_stats import BatchStats

Values = dict[str, float | int | str]


def _status(name: str, hardware_id: str, level: int, message: str, values: Values) -> DiagnosticStatus:
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, level=level, message=message)
    status.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in values.items()]
    return status


def camera_status(node_fqn: str, camera: str, values: Values) -> DiagnosticStatus:
    """`<node>: segmentation` (or `... <camera>` for a named camera): OK while processing; WARN when
    not active or no images arrive. `values` hold the camera's NodeStats snapshot, `lifecycle_state`
    and the backend's description."""
    name = f"{node_fqn}: segmentation" + (f" {camera}" if camera else "")
    if values["lifecycle_state"] != "active":
        level, message = DiagnosticStatus.WARN, f"not processing ({values['lifecycle_state']})"
    elif values["input_rate_hz"] == 0.0:
        level, message = DiagnosticStatus.WARN, "no input images"
    else:
        level, message = DiagnosticStatus.OK, "processing"
    return _status(name, str(values.get("device", "")), level, message, values)


def backend_status(node_fqn: str, values: Values) -> DiagnosticStatus:
    """`<node>: backend`: the one model every camera shares (batches, forward time, vocabulary)."""
    level = DiagnosticStatus.OK if values["lifecycle_state"] == "active" else DiagnosticStatus.WARN
    message = f"{values.get('batches', 0)} batches, {values.get('classes', 0)} classes"
    return _status(f"{node_fqn}: backend", str(values.get("device", "")), level, message, values)


def diagnostic_array(statuses: list[DiagnosticStatus], stamp: Time) -> DiagnosticArray:
    array = DiagnosticArray(status=statuses)
    array.header.stamp = stamp
    return array


def node_diagnostics(node_fqn: str, state: str, backend: dict[str, Any], cameras: Sequence[Camera],
                     batch_stats: BatchStats, classes: int, stamp: Time) -> DiagnosticArray:
    """The node's whole /diagnostics message: a status per camera, and with several cameras one for
    the backend they share. `backend`: its `describe()` (or its parameters before configure)."""
    values = {"backend": backend.get("name", ""), "device": backend.get("device", ""),
              "precision": backend.get("precision", ""),
              "input_size": "x".join(str(v) for v in backend.get("input_size") or []) or "native"}
    # what only some backends have: OpenVINO's device, and what backend auto chose and why
    values.update({key: str(backend[key]) for key in ("openvino_device", "backend_choice", "precision_choice")
                   if backend.get(key)})
    statuses = [camera_status(node_fqn, camera.name, camera.stats.snapshot() | values | {"lifecycle_state": state})
                for camera in cameras]
    if len(cameras) > 1:  # a single-camera node keeps its one status, as before
        statuses.append(backend_status(node_fqn, batch_stats.snapshot() | values |
                                       {"lifecycle_state": state, "classes": classes}))
    return diagnostic_array(statuses, stamp)
