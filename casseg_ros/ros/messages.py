"""ROS messages of one processed frame: the single builder used by the node and by replay.

The node publishes exactly what `frame_messages` returns, and `casseg-replay` writes exactly the
same messages into its output bag, so a mask or a scene graph recorded from the live node and one
written by replay are byte-identical for the same input frame.
"""
from __future__ import annotations

from builtin_interfaces.msg import Time
from std_msgs.msg import ColorRGBA, Header
from sensor_msgs.msg import Image

from casseg_msgs.msg import ClassLabel, LabelInfo, SceneEdge, SceneGraph, SceneNode
from casseg_ros.perception.scene_graph import SceneGraph as Graph
from casseg_ros.pipeline import ClassLabels, FrameResult
from casseg_ros.ros.conversions import numpy_to_image


def label_info_msg(labels: ClassLabels, threshold: float, stamp: Time) -> LabelInfo:
    """casseg_msgs/LabelInfo: id -> name and colour of every class, and the mask's threshold."""
    msg = LabelInfo(threshold=float(threshold))
    msg.header.stamp = stamp
    classes = []
    for class_id, name in enumerate(labels.names):
        r, g, b = (float(c) / 255.0 for c in labels.palette[class_id])
        classes.append(ClassLabel(class_id=class_id, name=str(name), color=ColorRGBA(r=r, g=g, b=b, a=1.0)))
    msg.classes = classes
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
        nodes.append(node)
    msg.nodes = nodes
    msg.edges = [SceneEdge(source=int(rel.source), target=int(rel.target), predicate=str(rel.predicate),
                           weight=float(rel.weight)) for rel in graph.relations]
    return msg


def frame_messages(result: FrameResult, labels: ClassLabels, header: Header) -> dict[str, Image | SceneGraph]:
    """Every message of one frame, keyed by output name ("mask", "scene_graph", and each optional
    product the pipeline made: "overlay", "mask/color", "confidence"), all with the camera's header."""
    messages: dict[str, Image | SceneGraph] = {"mask": numpy_to_image(result.mask, labels.mask_encoding, header)}
    if result.confidence_image is not None:
        messages["confidence"] = numpy_to_image(result.confidence_image, "mono8", header)
    if result.overlay is not None:
        messages["overlay"] = numpy_to_image(result.overlay, "rgb8", header)
    if result.color_mask is not None:
        messages["mask/color"] = numpy_to_image(result.color_mask, "rgb8", header)
    messages["scene_graph"] = scene_graph_to_msg(result.graph, header)
    return messages
