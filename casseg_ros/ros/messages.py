"""ROS messages of one processed frame: the single builder used by the node and by replay.

The node publishes exactly what `frame_messages` returns, and `casseg-replay` writes exactly the
same messages into its output bag, so a mask or a scene graph recorded from the live node and one
written by replay are byte-identical for the same input frame.
"""
from __future__ import annotations

import array
from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo as VisionLabelInfo
from vision_msgs.msg import VisionClass

from casseg_msgs.msg import SceneGraph
from casseg_ros.perception.scene_graph import ARRAY_FIELDS, FORMAT_VERSION
from casseg_ros.perception.scene_graph import SceneGraph as Graph
from casseg_ros.pipeline import ClassLabels, FrameResult
from casseg_ros.ros.conversions import message_bytes, numpy_to_image

# array.array type codes of casseg_msgs/SceneGraph's sequence types (rosidl keeps uint32[] as 'I').
_TYPECODES = {np.dtype(np.uint8): "B", np.dtype(np.uint16): "H", np.dtype(np.uint32): "I", np.dtype(np.float32): "f"}
# numpy field kind+size -> sensor_msgs/PointField datatype. The packed colour is declared FLOAT32
# like PCL does (its bits are 0x00RRGGBB): RViz and Foxglove read the field named rgb that way.
_POINT_FIELD_TYPES = {("f", 4): PointField.FLOAT32, ("u", 4): PointField.UINT32, ("u", 2): PointField.UINT16,
                      ("f", 8): PointField.FLOAT64, ("u", 1): PointField.UINT8}


def label_info_msg(labels: ClassLabels, threshold: float, stamp: Time) -> VisionLabelInfo:
    """vision_msgs/LabelInfo (the ROS convention, read by Nav2's semantic segmentation layer)."""
    msg = VisionLabelInfo(threshold=float(threshold))
    msg.header.stamp = stamp
    msg.class_map = [VisionClass(class_id=class_id, class_name=str(name)) for class_id, name in enumerate(labels.names)]
    return msg


def _sequence(values: np.ndarray) -> array.array:
    """A graph's array as the `array.array` of its message field: one copy of its bytes, which a
    message built with check_fields=True stores as it is."""
    return array.array(_TYPECODES[values.dtype], values.tobytes())


def scene_graph_to_msg(graph: Graph, header: Header) -> SceneGraph:
    """perception SceneGraph (parallel arrays) -> casseg_msgs/SceneGraph format 2: each array is
    one field, copied as bytes (no per-object Python); the tracking fields are the graph's (a
    tracker's, via `SceneGraph.with_tracks`, or "untracked")."""
    msg = SceneGraph(header=header, format_version=SceneGraph.FORMAT_VERSION, check_fields=True)
    for name in ARRAY_FIELDS:
        setattr(msg, name, _sequence(getattr(graph, name)))
    msg.predicate_names = list(graph.predicate_names)
    return msg


def scene_graph_from_msg(msg: Any, class_names: Sequence[str] = ()) -> Graph:
    """casseg_msgs/SceneGraph -> perception SceneGraph (the inverse of `scene_graph_to_msg`, exact:
    the graph holds the message's dtypes). Reads fields only, so it takes an rclpy message and a
    rosbags-deserialised one alike; `class_names` (from ~/label_info) names the class ids.
    ValueError for another format version (format 1 had nodes/edges: docs/ros_node.md)."""
    version = getattr(msg, "format_version", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"casseg_msgs/SceneGraph format {version}, this reader knows format {FORMAT_VERSION}")
    return Graph(class_names=tuple(class_names), predicate_names=tuple(msg.predicate_names),
                 **{name: np.asarray(getattr(msg, name)) for name in ARRAY_FIELDS})


def point_cloud_msg(cloud: np.ndarray, header: Header) -> PointCloud2:
    """Organised (H,W) structured array -> PointCloud2 with one PointField per named field
    (fields whose name starts with "_" are padding). Invalid points are NaN, so is_dense=False."""
    fields = []
    for name in cloud.dtype.names:
        dtype, offset = cloud.dtype.fields[name][:2]
        if name.startswith("_"):
            continue
        datatype = PointField.FLOAT32 if name == "rgb" else _POINT_FIELD_TYPES[(dtype.kind, dtype.itemsize)]
        fields.append(PointField(name=name, offset=offset, datatype=datatype, count=1))
    msg = PointCloud2(header=header, height=int(cloud.shape[0]), width=int(cloud.shape[1]), fields=fields,
                      is_bigendian=False, point_step=cloud.dtype.itemsize,
                      row_step=cloud.dtype.itemsize * int(cloud.shape[1]), is_dense=False, check_fields=True)
    msg.data = message_bytes(cloud)  # the cloud's own storage when the pipeline made it (no copy)
    return msg


def frame_messages(result: FrameResult, labels: ClassLabels, header: Header) -> dict[str, Image | PointCloud2 | SceneGraph]:
    """Every message of one frame, keyed by output name ("mask", "scene_graph", and each optional
    product the pipeline made: "overlay", "mask/color", "confidence", "points"), all with the camera's header."""
    messages: dict[str, Image | PointCloud2 | SceneGraph] = {"mask": numpy_to_image(result.mask, labels.mask_encoding, header)}
    if result.confidence_image is not None:
        messages["confidence"] = numpy_to_image(result.confidence_image, "mono8", header)
    if result.overlay is not None:
        messages["overlay"] = numpy_to_image(result.overlay, "rgb8", header)
    if result.color_mask is not None:
        messages["mask/color"] = numpy_to_image(result.color_mask, "rgb8", header)
    if result.points is not None:
        messages["points"] = point_cloud_msg(result.points, header)
    messages["scene_graph"] = scene_graph_to_msg(result.graph, header)
    return messages
