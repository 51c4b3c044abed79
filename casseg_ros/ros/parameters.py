"""The node's parameters: declarations (type, range, description saying when a change applies),
their validation, and the live settings the worker reads per frame. Ranges and validation come from
the one rule per setting that the command lines use too (`casseg_ros.parameter_rules`).

Defaults that shape a frame come from the settings dataclasses the frame step reads
(`pipeline.PipelineSettings`, `frame_io.InputSettings`), so the node, replay and the benchmarks
start from the same values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from casseg_ros.parameter_rules import BACKENDS, OPENVINO_DEVICES, PRECISION_SETTINGS, RULES
from casseg_ros.parameter_rules import input_size_problem as validate_input_size  # the node's names for them
from casseg_ros.parameter_rules import problem as validate_parameter
from casseg_ros.pipeline import PipelineSettings
from casseg_ros.resources import DEMO_MODEL
from casseg_ros.ros.frame_io import InputSettings

# Parameters applied at configure (they shape the model) and at activate (the subscription).
MODEL_PARAMS = ("model_path", "backend", "device", "openvino_device", "precision", "calibration", "input_height", "input_width", "resize_in_graph", "vocabulary_file",
                "max_input_pixels", "cameras", "max_batch", "text_provider")
SUBSCRIPTION_PARAMS = ("image_transport", "input_transport", "qos_reliability")


def _float_range(name: str) -> list[FloatingPointRange]:
    rule = RULES[name]
    return [FloatingPointRange(from_value=float(rule.low), to_value=float(rule.high), step=0.0)]


def _int_range(name: str) -> list[IntegerRange]:
    rule = RULES[name]
    return [IntegerRange(from_value=int(rule.low), to_value=int(rule.high), step=1)]


def param_specs() -> list[tuple[str, Any, ParameterDescriptor]]:
    """(name, default, descriptor) of every parameter; descriptions say when a change applies."""
    at_configure = " Changes only while unconfigured (cleanup, set, configure)."
    at_activate = " Changes only while not active (deactivate, set, activate)."
    live = " Changes live (next frame)."
    D = ParameterDescriptor
    frame, inputs = PipelineSettings(), InputSettings()
    return [
        ("model_path", DEMO_MODEL, D(
            type=ParameterType.PARAMETER_STRING,
            description="Checkpoint (.safetensors) or exported model (.onnx/.engine). A relative path is "
                        "looked up in the casseg_ros share directory, then in the working directory." + at_configure)),
        ("backend", "torch", D(
            type=ParameterType.PARAMETER_STRING,
            description=f"Inference backend, one of {', '.join(BACKENDS)}; auto: TensorRT on a CUDA device where "
                        f"it is installed, else OpenVINO on an x86 CPU where it is installed, else onnxruntime, "
                        f"else torch (the node logs the choice and why)." + at_configure,
            additional_constraints=f"one of {', '.join(BACKENDS)}")),
        ("device", "cpu", D(
            type=ParameterType.PARAMETER_STRING,
            description="Inference device: cpu, cuda or cuda:N." + at_configure,
            additional_constraints="cpu | cuda | cuda:N")),
        ("openvino_device", "CPU", D(
            type=ParameterType.PARAMETER_STRING,
            description="OpenVINO device of backend openvino (device stays cpu): CPU, GPU (Intel), NPU or AUTO; "
                        "only CPU is verified." + at_configure,
            additional_constraints=" | ".join(OPENVINO_DEVICES))),
        ("precision", "auto", D(
            type=ParameterType.PARAMETER_STRING,
            description="Numeric precision: auto, fp32, fp16, bf16 or int8. auto: backend openvino runs the fastest "
                        "of fp32/bf16/int8 whose class ids agree with fp32 on >= 99 % of the calibration frames' "
                        "pixels (measured at the first configure, recorded in its cache; fp32 without calibration); "
                        "the other backends their default (torch, onnxruntime fp32; tensorrt fp16)." + at_configure,
            additional_constraints=" | ".join(PRECISION_SETTINGS))),
        ("calibration", "", D(
            type=ParameterType.PARAMETER_STRING,
            description="Calibration frames for int8 and precision auto (backend openvino): a bag (.mcap, .db3, a "
                        "rosbag2 folder; its camera topic) or a folder of images, looked up like model_path; "
                        "read only when the cache has no int8 model or precision record for them. '' = none."
                        + at_configure)),
        ("input_height", 0, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range("input_height"),
            description="Height the model runs at (images are resized on the host and the mask resized "
                        "back). 0 together with input_width 0: every image at its own size (torch only)."
                        + at_configure)),
        ("input_width", 0, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range("input_width"),
            description="Width the model runs at; see input_height." + at_configure)),
        ("resize_in_graph", False, D(
            type=ParameterType.PARAMETER_BOOL,
            description="Resize each image to the model size and the outputs back to the camera size inside "
                        "the model's graph instead of on the host (input_height x input_width, or the model's "
                        "own size when 0): on a GPU the host then does no per-pixel resize (about 5 ms per "
                        "1080p frame on a 2-core CPU); on a CPU it costs more than it saves." + at_configure)),
        ("vocabulary_file", "", D(
            type=ParameterType.PARAMETER_STRING,
            description="Optional vocabulary file replacing the checkpoint's class names/palette in the "
                        "published labels; empty: use the checkpoint's." + at_configure)),
        ("cameras", [""], D(
            type=ParameterType.PARAMETER_STRING_ARRAY,
            description="Camera names, all served by one model: camera c reads c/image (c/image/compressed), "
                        "c/camera_info, c/depth/image and publishes under ~/c/. [''] (default): one unnamed "
                        "camera on image, camera_info, depth/image -> ~/mask, ..." + at_configure)),
        ("max_batch", 4, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range("max_batch"),
            description="Most camera frames in one forward pass; more waiting cameras are served "
                        "round-robin." + at_configure)),
        ("text_provider", "", D(
            type=ParameterType.PARAMETER_STRING,
            description="Text-embedding provider for ~/set_vocabulary (local, openai, ...); empty: the one the "
                        "checkpoint's vocabulary was embedded with." + at_configure)),
        ("max_input_pixels", inputs.max_input_pixels, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range("max_input_pixels"),
            description="Images with more pixels are rejected before decoding (protects against forged "
                        "headers)." + at_configure)),
        ("image_transport", "raw", D(
            type=ParameterType.PARAMETER_STRING,
            description="image_transport naming of the input: raw subscribes to 'image' (sensor_msgs/Image); "
                        "compressed to 'image/compressed' (sensor_msgs/CompressedImage, jpeg or png)." + at_activate,
            additional_constraints="raw | compressed")),
        ("input_transport", "", D(
            type=ParameterType.PARAMETER_STRING,
            description="Deprecated alias of image_transport (used when set and image_transport is left at "
                        "raw); will be removed." + at_activate,
            additional_constraints="'' | raw | compressed")),
        ("qos_reliability", "best_effort", D(
            type=ParameterType.PARAMETER_STRING,
            description="Default reliability of the image, camera_info and depth subscriptions (SensorData "
                        "QoS, depth 1); best_effort matches every publisher, reliable only reliable ones. The "
                        "standard qos_overrides.<topic>.subscription.<policy> parameters take precedence."
                        + at_activate,
            additional_constraints="best_effort | reliable")),
        ("score_threshold", frame.score_threshold, D(
            type=ParameterType.PARAMETER_DOUBLE, floating_point_range=_float_range("score_threshold"),
            description="Pixels whose confidence is below it get the unknown id (255, or 65535 in mono16)." + live)),
        ("min_instance_area", frame.min_instance_area, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range("min_instance_area"),
            description="Connected regions smaller than this many pixels are not scene-graph nodes." + live)),
        ("output_resolution", frame.output_resolution, D(
            type=ParameterType.PARAMETER_STRING,
            description="camera: mask, confidence, colour mask, overlay and points at the camera's resolution; "
                        "model: at the model's (input_height x input_width), not resized back on the host, with "
                        "~/camera_info scaled to match (K, P, width, height) so projecting consumers stay right; "
                        "scene-graph pixels are then model pixels." + live,
            additional_constraints="camera | model")),
        ("tracking", frame.tracking, D(
            type=ParameterType.PARAMETER_BOOL,
            description="Persistent object ids per camera: ~/scene_graph's ids become track ids (box IoU "
                        "within a class, Hungarian assignment), with track_states, track_ages and, with depth, "
                        "velocities_3d; reset on a vocabulary swap or a time jump (> 1 s or backwards)." + live)),
        ("track_confirm_hits", frame.track_confirm_hits, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range("track_confirm_hits"),
            description="Matched frames before a track is confirmed (tentative until then)." + live)),
        ("track_max_misses", frame.track_max_misses, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range("track_max_misses"),
            description="Frames a track survives unmatched; an object back later gets a new id." + live)),
        ("temporal_smoothing", frame.temporal_smoothing, D(
            type=ParameterType.PARAMETER_DOUBLE, floating_point_range=_float_range("temporal_smoothing"),
            description="Per-pixel class memory against flicker, 0 = off: a pixel's new class replaces its "
                        "held one only when its score beats the held score times this (the held score fades "
                        "by this factor a frame); no ego-motion alignment, so on a moving camera class edges "
                        "lag. Reset on a vocabulary swap or a time jump." + live)),
        ("scene_graph_stride", frame.scene_graph_stride, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range("scene_graph_stride"),
            description="The scene graph is found on every n-th row and column of the mask and measured in "
                        "image pixels (4: the model's output stride, ~3x less host time at 1080p than 1; "
                        "docs/ros_node.md says how the two differ)." + live)),
        ("overlay_alpha", frame.overlay_alpha, D(
            type=ParameterType.PARAMETER_DOUBLE, floating_point_range=_float_range("overlay_alpha"),
            description="Weight of the class colour in ~/overlay." + live)),
        ("publish_confidence", False, D(
            type=ParameterType.PARAMETER_BOOL,
            description="Publish ~/confidence (mono8, confidence * 255)." + live)),
        ("marker_scale", 0.01, D(
            type=ParameterType.PARAMETER_DOUBLE, floating_point_range=_float_range("marker_scale"),
            description="Without depth: metres per image pixel in ~/scene_graph/markers (an image-plane "
                        "diagram: x = column, y = row, z = 0 in the image's frame_id). With depth the markers "
                        "are the objects' 3D positions and this is unused." + live)),
        ("depth_max_range_m", inputs.depth_max_range_m, D(
            type=ParameterType.PARAMETER_DOUBLE, floating_point_range=_float_range("depth_max_range_m"),
            description="Depth beyond this many metres is invalid (NaN points, not used for 3D centroids)." + live)),
        ("points_stride", frame.points_stride, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range("points_stride"),
            description="~/points keeps every n-th pixel of every n-th row (the mask decimated alike)." + live)),
        ("sync_wait_s", 0.05, D(
            type=ParameterType.PARAMETER_DOUBLE, floating_point_range=_float_range("sync_wait_s"),
            description="How long a frame waits for the camera_info and depth image with its exact stamp "
                        "(only while those topics have been received); then it is processed without them." + live)),
    ]


@dataclass(frozen=True)
class LiveSettings:
    """Parameters the worker reads every frame; replaced as a whole so reads need no lock."""

    pipeline: PipelineSettings
    inputs: InputSettings
    publish_confidence: bool
    marker_scale: float
    sync_wait_s: float

    @classmethod
    def from_values(cls, value: Callable[[str], Any]) -> "LiveSettings":
        """`value(name)` is the parameter's current value."""
        return cls(pipeline=PipelineSettings(score_threshold=float(value("score_threshold")),
                                             min_instance_area=int(value("min_instance_area")),
                                             scene_graph_stride=int(value("scene_graph_stride")),
                                             tracking=bool(value("tracking")),
                                             output_resolution=str(value("output_resolution")),
                                             track_confirm_hits=int(value("track_confirm_hits")),
                                             track_max_misses=int(value("track_max_misses")),
                                             temporal_smoothing=float(value("temporal_smoothing")),
                                             overlay_alpha=float(value("overlay_alpha")),
                                             points_stride=int(value("points_stride"))),
                   inputs=InputSettings(max_input_pixels=int(value("max_input_pixels")),
                                        depth_max_range_m=float(value("depth_max_range_m"))),
                   publish_confidence=bool(value("publish_confidence")),
                   marker_scale=float(value("marker_scale")),
                   sync_wait_s=float(value("sync_wait_s")))


def change_problem(changes: dict[str, Any], current: Callable[[str], Any], configured: bool, active: bool) -> str | None:
    """Why the node refuses a set of parameter changes (`current(name)`: the value now), or None."""
    for name, value in changes.items():
        reason = validate_parameter(name, value)
        if reason:
            return reason
        if name in MODEL_PARAMS and configured:
            return f"{name} is applied at configure: deactivate and cleanup the node first"
        if name in SUBSCRIPTION_PARAMS and active:
            return f"{name} is applied at activate: deactivate the node first"
    if {"input_height", "input_width"} & set(changes):  # the pair, only when one of them changes
        return validate_input_size(changes.get("input_height", current("input_height")),
                                   changes.get("input_width", current("input_width")))
    return None


def effective_transport(image_transport: str, input_transport: str) -> str:
    """image_transport, or the deprecated input_transport when only that one was changed."""
    return input_transport if input_transport and image_transport == "raw" else image_transport
