"""The node's topics: the one table of its outputs (name, message type, QoS) and the camera naming.

Everything that publishes, records or writes the node's outputs reads this table: the node
(`segment_node` through `node_pubsub`), offline replay's output bag, the recorder, the player's
pacing and `bench/host.py`. An output's `name` is relative to the node and its camera: camera `c`
of node `/casseg_ros` publishes `mask` on `/casseg_ros/c/mask` (the unnamed camera on `/casseg_ros/mask`).
"""
from __future__ import annotations

from dataclasses import dataclass

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from vision_msgs.msg import LabelInfo
from visualization_msgs.msg import MarkerArray

from casseg_msgs.msg import SceneGraph

NODE_NAME = "casseg_ros"  # the node's default name: its outputs are ~/mask, ... = /casseg_ros/mask, ...

# Images and clouds: a reader that falls behind loses the oldest frame, never blocks the worker.
_FRAME_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
# The class map: sent on a change of vocabulary or threshold, kept for late subscribers.
_LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Scene graphs are small: a few frames of slack for a consumer that is briefly slow.
_GRAPH_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


@dataclass(frozen=True)
class OutputTopic:
    name: str  # relative to the node and the camera: "mask", "scene_graph/markers"
    msg_type: type  # the rclpy message class
    qos: QoSProfile  # the node's publisher QoS (qos_overrides.<topic>.publisher.* may change it)

    @property
    def type_name(self) -> str:
        """The ROS type name (rosbag2's and rosbags' spelling): sensor_msgs/msg/Image."""
        return f"{self.msg_type.__module__.split('.')[0]}/msg/{self.msg_type.__name__}"


OUTPUT_TOPICS: tuple[OutputTopic, ...] = (
    OutputTopic("mask", Image, _FRAME_QOS),
    OutputTopic("mask/color", Image, _FRAME_QOS),
    OutputTopic("overlay", Image, _FRAME_QOS),
    OutputTopic("confidence", Image, _FRAME_QOS),
    OutputTopic("camera_info", CameraInfo, _FRAME_QOS),
    OutputTopic("points", PointCloud2, _FRAME_QOS),
    OutputTopic("label_info", LabelInfo, _LATCHED_QOS),
    OutputTopic("scene_graph", SceneGraph, _GRAPH_QOS),
    OutputTopic("scene_graph/markers", MarkerArray, _GRAPH_QOS),
)
OUTPUTS: dict[str, OutputTopic] = {topic.name: topic for topic in OUTPUT_TOPICS}


def camera_siblings(camera_topic: str) -> tuple[str, str]:
    """(camera_info, registered depth) topics next to a camera's image topic, as a camera driver
    names them: /camera/image_raw -> /camera/camera_info, /camera/depth/image_raw."""
    namespace = camera_topic.rstrip("/").rsplit("/", 1)[0]
    return f"{namespace}/camera_info", f"{namespace}/depth/image_raw"
