"""RViz/Foxglove markers of a scene graph (visualisation only, kept apart from inference)."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from casseg_msgs.msg import SceneGraph


def _color(rgb: np.ndarray, alpha: float) -> ColorRGBA:
    return ColorRGBA(r=float(rgb[0]) / 255.0, g=float(rgb[1]) / 255.0, b=float(rgb[2]) / 255.0, a=alpha)


def scene_graph_markers(graph_msg: SceneGraph, palette: np.ndarray, scale: float) -> MarkerArray:
    """RViz/Foxglove view of the graph, drawn in the image plane of the camera frame.

    Frame convention: markers use the image's header (frame_id and stamp). A node sits at
    (centroid_x * scale, centroid_y * scale, 0): image columns along +x, rows along +y, so in a
    REP-103 optical frame (x right, y down, z forward) the diagram appears upright, overlaying the
    picture as seen from behind the camera. It is a diagram of the 2-D graph, not a 3-D
    localisation (the node has no depth).

    Markers: DELETEALL first (objects that left the view disappear); ns "nodes": one SPHERE_LIST
    with a sphere per node in its class colour; ns "labels": a TEXT_VIEW_FACING per node
    ("label score", id = instance id) above its sphere; ns "edges/<predicate>": one LINE_LIST per
    predicate with a segment per edge. Lists keep a frame with hundreds of nodes and thousands
    of edges cheap to build, send and render.
    """
    header = graph_msg.header
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    node_size = max(scale * 12.0, 1e-3)
    positions: dict[int, Point] = {}
    white = np.array([255, 255, 255])
    spheres = Marker(header=header, ns="nodes", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD)
    spheres.pose.orientation.w = 1.0
    spheres.scale.x = spheres.scale.y = spheres.scale.z = node_size
    spheres.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    points, colors, texts = [], [], []
    for node in graph_msg.nodes:
        p = Point(x=node.centroid.x * scale, y=node.centroid.y * scale, z=0.0)
        positions[node.instance_id] = p
        cid = int(node.class_id)
        points.append(p)
        colors.append(_color(palette[cid] if cid < len(palette) else white, 0.9))
        text = Marker(header=header, ns="labels", id=int(node.instance_id), type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=f"{node.label} {node.score:.2f}")
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.pose.position.x, text.pose.position.y = p.x, p.y - 1.5 * node_size
        text.pose.orientation.w = 1.0
        text.scale.z = node_size
        texts.append(text)
    spheres.points, spheres.colors = points, colors
    if points:
        markers.append(spheres)
    markers += texts
    by_predicate: dict[str, list[Point]] = {}
    for edge in graph_msg.edges:
        if edge.source in positions and edge.target in positions:
            by_predicate.setdefault(edge.predicate, []).extend((positions[edge.source], positions[edge.target]))
    for index, (predicate, segment_points) in enumerate(sorted(by_predicate.items())):
        line = Marker(header=header, ns=f"edges/{predicate}", id=index, type=Marker.LINE_LIST, action=Marker.ADD,
                      color=ColorRGBA(r=1.0, g=1.0, b=0.2, a=0.6))
        line.pose.orientation.w = 1.0
        line.scale.x = node_size * 0.25
        line.points = segment_points
        markers.append(line)
    return MarkerArray(markers=markers)
