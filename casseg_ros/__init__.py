"""casseg_ros: context-aware semantic segmentation for robots and cars.

The library (``casseg_ros.model``, ``casseg_ros.text``, ``casseg_ros.perception``,
``casseg_ros.runtime``) is ROS-free; only ``casseg_ros.ros`` imports rclpy.
"""
import os

__version__ = "0.1.0"

# Nothing leaves the machine: ONNX Runtime (>= 1.29 on Linux) otherwise uploads usage events to
# Microsoft and keeps a device id and an event cache in ~/.cache/Microsoft/DeveloperTools. Its
# opt-out is read once, when ONNX Runtime starts, so it is set here, before any casseg_ros module
# can import it; child processes inherit it. An explicit ORT_DISABLE_TELEMETRY=0 is respected.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
