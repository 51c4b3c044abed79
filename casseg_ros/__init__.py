"""casseg_ros: context-aware semantic segmentation for robots and cars.

The library (``casseg_ros.model``, ``casseg_ros.text``, ``casseg_ros.perception``,
``casseg_ros.runtime``) is ROS-free; only ``casseg_ros.ros`` imports rclpy.
"""

__version__ = "0.1.0"
