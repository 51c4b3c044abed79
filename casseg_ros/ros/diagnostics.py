"""/diagnostics message of the node: the stats snapshot as key/values, with a level an operator can read."""
from __future__ import annotations

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


def diagnostic_array(name: str, hardware_id: str, values: dict[str, float | int | str], stamp: Time) -> DiagnosticArray:
    """OK while processing; WARN when not active or no images arrive. `values` must hold
    `lifecycle_state` and `input_rate_hz` (NodeStats.snapshot plus the node's description)."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    if values["lifecycle_state"] != "active":
        status.level, status.message = DiagnosticStatus.WARN, f"not processing ({values['lifecycle_state']})"
    elif values["input_rate_hz"] == 0.0:
        status.level, status.message = DiagnosticStatus.WARN, "no input images"
    else:
        status.level, status.message = DiagnosticStatus.OK, "processing"
    status.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in values.items()]
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
