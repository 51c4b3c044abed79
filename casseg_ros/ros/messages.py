"""Conversions between casseg_msgs messages and the ROS-free perception types."""
from __future__ import annotations

from typing import Any

from casseg_ros.perception.scene_graph import Instance, Relation, SceneGraph


def scene_graph_from_msg(msg: Any) -> SceneGraph:
    """casseg_msgs/SceneGraph -> perception SceneGraph (the inverse of the node's message builder).

    Reads fields only, so it takes an rclpy message and a rosbags-deserialised one alike. Scores
    and weights are float32 in the message, so they come back rounded to float32."""
    instances = [Instance(instance_id=int(n.instance_id), class_id=int(n.class_id), label=str(n.label),
                          score=float(n.score),
                          bbox=(int(n.bbox.x_offset), int(n.bbox.y_offset), int(n.bbox.width), int(n.bbox.height)),
                          centroid=(float(n.centroid.x), float(n.centroid.y)), area=int(n.area))
                 for n in msg.nodes]
    relations = [Relation(source=int(e.source), target=int(e.target), predicate=str(e.predicate),
                          weight=float(e.weight)) for e in msg.edges]
    return SceneGraph(instances=instances, relations=relations)
