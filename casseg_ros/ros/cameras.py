"""One camera of the node: its topic names, its publishers and subscriptions, its counters.

Camera `c` reads `c/image` (or `c/image/compressed`), `c/camera_info` and `c/depth/image`, and
publishes everything under `~/c/`. The unnamed camera `""` (the default) reads `image`,
`camera_info`, `depth/image` and publishes `~/mask`, ... as a single-camera node always did.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sensor_msgs.msg import CameraInfo, Image

from casseg_ros.ros.node_stats import NodeStats
from casseg_ros.ros.stamp_cache import StampCache


def topic(camera: str, name: str) -> str:
    """`name` in camera's namespace (relative: resolved against the node's namespace)."""
    return f"{camera}/{name}" if camera else name


@dataclass
class Camera:
    """Everything the node keeps per camera; the worker and the callbacks share it."""

    name: str
    stats: NodeStats = field(default_factory=NodeStats)
    camera_infos: StampCache[CameraInfo] = field(default_factory=StampCache)
    depths: StampCache[Image] = field(default_factory=StampCache)
    outputs: dict[str, Any] = field(default_factory=dict)  # output name (topics.OUTPUTS) -> publisher
    subscriptions: dict[str, Any] = field(default_factory=dict)  # input name ("image", ...) -> subscription

    @property
    def label(self) -> str:
        return self.name or "(unnamed)"

    def output_topic(self, name: str) -> str:
        return "~/" + topic(self.name, name)

    def input_topic(self, name: str) -> str:
        return topic(self.name, name)

    def clear_inputs(self) -> None:
        self.camera_infos.clear()
        self.depths.clear()
