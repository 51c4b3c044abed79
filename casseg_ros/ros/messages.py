"""ROS messages of one processed frame: the single builder used by the node and by replay.

The node publishes exactly what `frame_messages` returns, and `casseg-replay` writes exactly the
same messages into its output bag, so a mask or a scene graph recorded from the live node and one
written by replay are byte-identical for the same input frame.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo as VisionLabelInfo
from vision_msgs.msg import VisionClass

from casseg_msgs.msg import SceneEdge, SceneGraph, SceneNode
from casseg_ros.perception.scene_graph import Instance, Relation
from casseg_ros.perception.scene_graph import SceneGraph as Graph
from casseg_ros.pipeline import ClassLabels, FrameResult
from casseg_ros.ros.conversions import message_bytes, numpy_to_image

_NAN = float("nan")
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


def scene_graph_to_msg(graph: Graph, header: Header) -> SceneGraph:
    """perception SceneGraph (Instance/Relation dataclasses) -> casseg_msgs/SceneGraph.

    Fields are set on the sub-messages each message already owns: building a graph of a few
    hundred nodes and a few thousand edges is then a few milliseconds of Python, not ten.
    """
    msg = SceneGraph(header=header)
    nodes = []
    for inst in graph.instances:
        node = SceneNode(instance_id=int(inst.instance_id), class_id=int(inst.class_id), label=str(inst.label),
                         score=float(inst.score), area=int(inst.area))
        bbox = node.bbox
        bbox.x_offset, bbox.y_offset, bbox.width, bbox.height = (int(v) for v in inst.bbox)
        node.centroid.x, node.centroid.y = float(inst.centroid[0]), float(inst.centroid[1])
        node.has_3d = inst.centroid_3d is not None
        where, size = node.centroid_3d, node.extent_3d
        where.x, where.y, where.z = inst.centroid_3d if node.has_3d else (_NAN, _NAN, _NAN)
        size.x, size.y, size.z = inst.extent_3d if node.has_3d else (_NAN, _NAN, _NAN)
        nodes.append(node)
    msg.nodes = nodes
    msg.edges = [SceneEdge(source=int(rel.source), target=int(rel.target), predicate=str(rel.predicate),
                           weight=float(rel.weight),
                           distance_3d=_NAN if rel.distance_3d is None else float(rel.distance_3d))
                 for rel in graph.relations]
    return msg


def scene_graph_from_msg(msg: Any) -> Graph:
    """casseg_msgs/SceneGraph -> perception SceneGraph (the inverse of `scene_graph_to_msg`).

    Reads fields only, so it takes an rclpy message and a rosbags-deserialised one alike. Scores,
    weights and 3D values are float32 in the message, so they come back rounded to float32."""
    instances = [Instance(instance_id=int(n.instance_id), class_id=int(n.class_id), label=str(n.label),
                          score=float(n.score),
                          bbox=(int(n.bbox.x_offset), int(n.bbox.y_offset), int(n.bbox.width), int(n.bbox.height)),
                          centroid=(float(n.centroid.x), float(n.centroid.y)), area=int(n.area),
                          centroid_3d=(float(n.centroid_3d.x), float(n.centroid_3d.y), float(n.centroid_3d.z))
                          if n.has_3d else None,
                          extent_3d=(float(n.extent_3d.x), float(n.extent_3d.y), float(n.extent_3d.z))
                          if n.has_3d else None)
                 for n in msg.nodes]
    relations = [Relation(source=int(e.source), target=int(e.target), predicate=str(e.predicate),
                          weight=float(e.weight),
                          distance_3d=None if math.isnan(e.distance_3d) else float(e.distance_3d))
                 for e in msg.edges]
    return Graph(instances=instances, relations=relations)


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
