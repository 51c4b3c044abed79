"""The node's publishers and subscriptions, per camera: from the topic table and the QoS parameters.

Publishers are lifecycle publishers (enabled while active) with the QoS of `topics.OUTPUTS`;
subscriptions take the camera's image (image_transport naming), its camera_info and its registered
depth. Both accept the ROS convention's `qos_overrides.<topic>.publisher|subscription.<policy>`
parameters.
"""
from __future__ import annotations

from typing import Any, Callable

from rclpy.lifecycle import LifecycleNode
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from casseg_ros.ros.cameras import Camera
from casseg_ros.ros.topics import OUTPUT_TOPICS

# camera_info / depth messages a subscription keeps (the image keeps 1).
COMPANION_QUEUE = 5

ImageCallback = Callable[[Camera, Image | CompressedImage, dict], None]


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def publisher_key(info: dict) -> bytes | None:
    """The publisher's GID from a subscription callback's message info (None if rmw gives none)."""
    gid = info.get("publisher_gid")
    if isinstance(gid, dict) and gid.get("data") is not None:
        return bytes(gid["data"])
    return None


def create_outputs(node: LifecycleNode, camera: Camera) -> None:
    """Every output of the table under the camera's namespace, as a lifecycle publisher."""
    camera.outputs = {
        output.name: node.create_lifecycle_publisher(output.msg_type, camera.output_topic(output.name), output.qos,
                                                     qos_overriding_options=QoSOverridingOptions.with_default_policies())
        for output in OUTPUT_TOPICS}


def destroy_outputs(node: LifecycleNode, camera: Camera) -> None:
    for publisher in camera.outputs.values():
        node.destroy_lifecycle_publisher(publisher)
    camera.outputs = {}


def create_inputs(node: LifecycleNode, camera: Camera, transport: str, reliable: bool, on_image: ImageCallback) -> None:
    """The camera's image (`transport` raw or compressed), its camera_info and an optional
    registered depth (SensorData QoS, best effort unless `reliable`)."""
    def qos(depth: int = 1) -> QoSProfile:
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                          durability=qos_profile_sensor_data.durability)

    def subscribe(msg_type, name: str, callback, depth: int = 1):
        return node.create_subscription(msg_type, camera.input_topic(name), callback, qos(depth),
                                        qos_overriding_options=QoSOverridingOptions.with_default_policies())

    camera.clear_inputs()

    def image_callback(msg, info: dict) -> None:
        on_image(camera, msg, info)

    image = (subscribe(CompressedImage, "image/compressed", image_callback) if transport == "compressed"
             else subscribe(Image, "image", image_callback))
    # The image keeps depth 1 (latest frame wins); its companions keep a few, so a burst does not
    # drop the camera_info/depth of the very frame the worker takes (it would wait for them).
    camera.subscriptions = {
        "image": image,
        "camera_info": subscribe(CameraInfo, "camera_info", lambda msg: camera.camera_infos.put(stamp_ns(msg.header), msg),
                                 depth=COMPANION_QUEUE),
        "depth/image": subscribe(Image, "depth/image", lambda msg: camera.depths.put(stamp_ns(msg.header), msg),
                                 depth=COMPANION_QUEUE)}


def destroy_inputs(node: LifecycleNode, camera: Camera) -> None:
    for subscription in camera.subscriptions.values():
        node.destroy_subscription(subscription)
    camera.subscriptions = {}


def publish(camera: Camera, messages: dict[str, Any]) -> None:
    """A frame's output messages (`frame_io.frame_outputs`) on the camera's publishers."""
    for name, message in messages.items():
        camera.outputs[name].publish(message)
