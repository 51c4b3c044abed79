"""The frame step at the message level (ros/frame_io.py) and the output-topic table (ros/topics.py):
what the node, offline replay and bench/host.py all run, checked once here without DDS."""
from __future__ import annotations

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from casseg_ros.pipeline import ClassLabels, FramePipeline, PipelineSettings, Products
from casseg_ros.ros.frame_io import (DEPTH_MISSING, Companions, DecodedFrame, InputSettings, Rejection, frame_input,
                                     frame_outputs)
from casseg_ros.ros.parameters import param_specs
from casseg_ros.ros.topics import OUTPUT_TOPICS, OUTPUTS, camera_siblings
from casseg_ros.runtime.base import InferenceResult
from casseg_ros.runtime.canned import CannedBackend

H, W = 40, 64
K = (50.0, 0.0, 31.5, 0.0, 50.0, 19.5, 0.0, 0.0, 1.0)


def _image(height: int = H, width: int = W) -> Image:
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.data = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes()
    msg.header.frame_id = "cam"
    msg.header.stamp.sec = 7
    return msg


def _depth(metres: float = 3.0, height: int = H, width: int = W, far_rows: int = 0) -> Image:
    """Flat depth at `metres`; the first `far_rows` rows at 30 m."""
    values = np.full((height, width), metres, np.float32)
    values[:far_rows] = 30.0
    msg = Image(height=height, width=width, encoding="32FC1", is_bigendian=0, step=width * 4)
    msg.data = values.tobytes()
    return msg


def _info() -> CameraInfo:
    return CameraInfo(height=H, width=W, k=K)


def _none() -> Companions:
    return Companions(None, None, False)


def test_a_bad_image_is_rejected_with_its_reason_before_its_companions_are_looked_up():
    looked_up = []
    bad = _image()
    bad.encoding = "yuv422_foo"
    decoded = frame_input(bad, lambda: looked_up.append(1) or _none(), PipelineSettings(), Products())
    assert isinstance(decoded, Rejection) and "yuv422_foo" in decoded.reason and not looked_up
    too_big = frame_input(_image(), _none, PipelineSettings(), Products(), InputSettings(max_input_pixels=H * W - 1))
    assert isinstance(too_big, Rejection) and "max_input_pixels" in too_big.reason


def test_depth_is_used_checked_or_missed_as_the_camera_sends_it():
    settings, products = PipelineSettings(), Products(points=True)
    without = frame_input(_image(), _none, settings, products)
    assert isinstance(without, DecodedFrame) and without.frame.depth is None and without.depth_problem is None
    assert without.frame.rgb.shape == (H, W, 3) and without.frame.products == products

    missed = frame_input(_image(), lambda: Companions(_info(), None, True), settings, products)
    assert missed.frame.depth is None and missed.depth_problem == DEPTH_MISSING and missed.camera_info is not None

    used = frame_input(_image(), lambda: Companions(_info(), _depth(), True), settings, products)
    assert used.depth_problem is None and used.frame.depth is not None
    assert used.frame.depth.metres.shape == (H, W)  # points stride 1: every pixel is read
    np.testing.assert_array_equal(used.frame.depth.metres, 3.0)
    graph_only = frame_input(_image(), lambda: Companions(_info(), _depth(), True), settings, Products())
    assert graph_only.frame.depth.stride == settings.scene_graph_stride  # only the scene graph reads depth

    beyond = frame_input(_image(), lambda: Companions(_info(), _depth(far_rows=8), True), settings, products,
                         InputSettings(depth_max_range_m=20.0))
    assert np.isnan(beyond.frame.depth.metres[:8]).all()  # farther than the range: invalid
    np.testing.assert_array_equal(beyond.frame.depth.metres[8:], 3.0)

    wrong_size = frame_input(_image(), lambda: Companions(_info(), _depth(height=H // 2), True), settings, products)
    assert wrong_size.frame.depth is None and wrong_size.depth_problem and wrong_size.depth_problem != DEPTH_MISSING
    no_info = frame_input(_image(), lambda: Companions(None, _depth(), True), settings, products)
    assert no_info.frame.depth is None and "camera_info" in no_info.depth_problem


def test_outputs_carry_the_camera_header_and_are_named_as_the_topic_table():
    labels = ClassLabels(("road", "car"), np.array([[10, 20, 30], [200, 0, 0]], np.uint8))
    class_ids = np.zeros((1, H, W), np.int32)
    class_ids[:, 10:30, 20:50] = 1
    result = InferenceResult(class_ids, np.full((1, H, W), 0.9, np.float32), np.full((1, 2), 0.5, np.float32),
                             np.full((1, 2, 2), 0.5, np.float32))
    pipeline = FramePipeline(CannedBackend(result), labels)
    decoded = frame_input(_image(), lambda: Companions(_info(), _depth(), True), PipelineSettings(),
                          Products(overlay=True, color_mask=True, confidence_image=True, points=True))
    frame = pipeline.process_batch([decoded.frame])[0]
    header = Header(frame_id="cam")
    header.stamp.sec = 7
    info = decoded.camera_info
    messages = frame_outputs(frame, labels, header, info, marker_scale=0.01)
    assert set(messages) == {"mask", "mask/color", "overlay", "confidence", "camera_info", "points", "scene_graph",
                             "scene_graph/markers"}
    markers = deserialize_message(messages.pop("scene_graph/markers"), MarkerArray)  # serialised by ros/markers.py
    for name, message in messages.items():
        assert isinstance(message, OUTPUTS[name].msg_type), name
        assert (message.header.frame_id, message.header.stamp.sec) == ("cam", 7), name
    assert messages["camera_info"] is info and list(info.k) == list(K)  # the frame's own, re-stamped
    assert {(m.header.frame_id, m.header.stamp.sec) for m in markers.markers} == {("cam", 7)}
    assert set(frame_outputs(frame, labels, header)) == {"mask", "mask/color", "overlay", "confidence", "points",
                                                          "scene_graph"}  # no camera_info, no markers asked


def test_the_topic_table_names_types_and_qos():
    assert [t.name for t in OUTPUT_TOPICS] == ["mask", "mask/color", "overlay", "confidence", "camera_info", "points",
                                               "label_info", "scene_graph", "scene_graph/markers"]
    assert OUTPUTS["mask"].type_name == "sensor_msgs/msg/Image"
    assert OUTPUTS["scene_graph"].type_name == "casseg_msgs/msg/SceneGraph"
    assert OUTPUTS["label_info"].type_name == "vision_msgs/msg/LabelInfo"
    latched = [t.name for t in OUTPUT_TOPICS if t.qos.durability.name == "TRANSIENT_LOCAL"]
    assert latched == ["label_info"]
    assert camera_siblings("/front/image_raw") == ("/front/camera_info", "/front/depth/image_raw")


def test_node_parameter_defaults_are_the_settings_defaults():
    defaults = {name: default for name, default, _ in param_specs()}
    settings, inputs = PipelineSettings(), InputSettings()
    for name in ("score_threshold", "min_instance_area", "overlay_alpha", "points_stride", "scene_graph_stride"):
        assert defaults[name] == getattr(settings, name), name
    assert defaults["depth_max_range_m"] == inputs.depth_max_range_m == 20.0
    assert defaults["max_input_pixels"] == inputs.max_input_pixels
