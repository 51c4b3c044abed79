"""The frame step at the message level: one camera frame's messages in, its output messages out.

One implementation, shared by the node (`camera_batch`, on its worker thread), offline replay
(`casseg_ros.replay.offline.run`) and `bench/host.py`, which times these very functions:

    frame_input(image, companions, settings, products, inputs) -> DecodedFrame | Rejection
        the image decoded and validated (`conversions.to_rgb`), then its camera_info and registered
        depth (`companions`), the depth checked against both and decoded at the stride the products
        read (`depth_conversions.depth_frame`)
    FramePipeline.process_batch([decoded.frame, ...], settings)     (ROS-free: casseg_ros/pipeline.py)
    frame_outputs(result, labels, header, camera_info, marker_scale) -> {output name: message}
        `messages.frame_messages`, the camera_info re-stamped with the mask's header, the markers

so a mask or scene graph that replay writes is, byte for byte, the one the node publishes for the
same messages. The output names are those of the one topic table, `topics.OUTPUTS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from casseg_ros.perception.depth import InvalidDepth
from casseg_ros.pipeline import ClassLabels, FrameInput, FrameResult, PipelineSettings, Products, depth_stride
from casseg_ros.ros.conversions import DEFAULT_MAX_PIXELS, InvalidImage, to_rgb
from casseg_ros.ros.depth_conversions import depth_frame, scaled_camera_info
from casseg_ros.ros.markers import scene_graph_markers
from casseg_ros.ros.messages import frame_messages

# The reason a frame has no depth when the camera sends depth but none with this frame's stamp: a
# sync gap (counted), unlike a depth image that does not fit (counted and logged).
DEPTH_MISSING = "no depth image with the frame's stamp"


@dataclass(frozen=True)
class InputSettings:
    """How a frame's messages are decoded: the node's parameters of these names, with its defaults."""

    max_input_pixels: int = DEFAULT_MAX_PIXELS
    depth_max_range_m: float = 20.0  # farther depth is invalid (NaN points, no 3D centroid)


class Companions(NamedTuple):
    """The messages that came with an image: its camera_info and registered depth (None: none with
    its stamp), and whether the camera sends depth at all (then a missing one is a problem)."""

    camera_info: CameraInfo | None
    depth: Image | None
    depth_expected: bool


@dataclass(frozen=True)
class DecodedFrame:
    """A frame ready for the pipeline, and why its depth is not used (the 2D outputs go on)."""

    frame: FrameInput
    camera_info: CameraInfo | None = None
    depth_problem: str | None = None


@dataclass(frozen=True)
class Rejection:
    """The image cannot be segmented; `reason` says why (InvalidImage's reason)."""

    reason: str


def frame_input(image: Image | CompressedImage, companions: Callable[[], Companions], settings: PipelineSettings,
                products: Products, inputs: InputSettings = InputSettings(), camera: str = "") -> DecodedFrame | Rejection:
    """Decode one frame of `camera` (its tracks: the pipeline's tracking). `companions` is called
    only once the image has decoded: the node's look-up waits a little for late camera_info/depth,
    which a rejected image must not cost."""
    try:
        rgb = to_rgb(image, inputs.max_input_pixels)
    except InvalidImage as exc:
        return Rejection(exc.reason)
    stamp_s = image.header.stamp.sec + image.header.stamp.nanosec * 1e-9
    camera_info, depth, depth_expected = companions()
    if depth is None:
        return DecodedFrame(FrameInput(rgb, products, None, camera, stamp_s), camera_info,
                            DEPTH_MISSING if depth_expected else None)
    try:
        decoded = depth_frame(depth, camera_info, rgb.shape[:2], inputs.depth_max_range_m,
                              depth_stride(settings, products))
    except InvalidDepth as exc:
        return DecodedFrame(FrameInput(rgb, products, None, camera, stamp_s), camera_info, exc.reason)
    return DecodedFrame(FrameInput(rgb, products, decoded, camera, stamp_s), camera_info)


def frame_outputs(result: FrameResult, labels: ClassLabels, header: Header, camera_info: CameraInfo | None = None,
                  marker_scale: float | None = None) -> dict[str, object]:
    """Every output message of one frame under the camera's `header`, keyed by output name: those of
    `frame_messages`, "camera_info" (the frame's own, re-stamped in place with the mask's header,
    so RViz/Foxglove can place the mask) when there is one, and "scene_graph/markers" when a
    `marker_scale` is given (the node: while someone subscribes to them) — the MarkerArray already
    serialised (`markers.scene_graph_markers`), which a publisher sends as it is. With outputs at the
    model's resolution (output_resolution: model) the camera_info is a scaled copy describing them."""
    messages: dict[str, object] = dict(frame_messages(result, labels, header))
    if camera_info is not None:
        height, width = result.mask.shape
        if (camera_info.height, camera_info.width) != (height, width) and camera_info.width and camera_info.height:
            camera_info = scaled_camera_info(camera_info, width, height)  # output_resolution: model
        camera_info.header = header
        messages["camera_info"] = camera_info
    if marker_scale is not None:
        messages["scene_graph/markers"] = scene_graph_markers(result.graph, header, labels.palette, marker_scale)
    return messages
