"""RViz/Foxglove markers of a scene graph (visualisation only, kept apart from inference)."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from casseg_msgs.msg import SceneGraph


def _color(rgb: np.ndarray, alpha: float) -> ColorRGBA:
    return ColorRGBA(r=float(rgb[0]) / 255.0, g=float(rgb[1]) / 255.0, b=float(rgb[2]) / 255.0, a=alpha)


# Sphere diameter of a node drawn at its 3D position (metres).
NODE_SIZE_3D_M = 0.25


def scene_graph_markers(graph_msg: SceneGraph, palette: np.ndarray, scale: float) -> MarkerArray:
    """RViz/Foxglove view of the graph in the camera's optical frame (the image's header).

    With depth (any node has_3d): every node with a 3D centroid sits there (metres, REP-103
    optical frame: x right, y down, z forward), spheres NODE_SIZE_3D_M wide; nodes without valid
    depth are left out, and so are their edges. Without depth the graph is an image-plane diagram:
    a node sits at (centroid_x * scale, centroid_y * scale, 0), columns along +x and rows along
    +y, so it appears upright, overlaying the picture as seen from behind the camera.

    Markers: DELETEALL first (objects that left the view disappear); ns "nodes": one SPHERE_LIST
    with a sphere per node in its class colour; ns "labels": a TEXT_VIEW_FACING per node
    ("label score", id = instance id) above its sphere; ns "edges/<predicate>": one LINE_LIST per
    predicate with a segment per edge. Lists keep a frame with hundreds of nodes and thousands
    of edges cheap to build, send and render.
    """
    header = graph_msg.header
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    in_3d = any(node.has_3d for node in graph_msg.nodes)
    node_size = NODE_SIZE_3D_M if in_3d else max(scale * 12.0, 1e-3)
    positions: dict[int, Point] = {}
    white = np.array([255, 255, 255])
    spheres = Marker(header=header, ns="nodes", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD)
    spheres.pose.orientation.w = 1.0
    spheres.scale.x = spheres.scale.y = spheres.scale.z = node_size
    spheres.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    points, colors, texts = [], [], []
    for node in graph_msg.nodes:
        if in_3d and not node.has_3d:
            continue
        p = (Point(x=node.centroid_3d.x, y=node.centroid_3d.y, z=node.centroid_3d.z) if in_3d
             else Point(x=node.centroid.x * scale, y=node.centroid.y * scale, z=0.0))
        positions[node.instance_id] = p
        cid = int(node.class_id)
        points.append(p)
        colors.append(_color(palette[cid] if cid < len(palette) else white, 0.9))
        text = Marker(header=header, ns="labels", id=int(node.instance_id), type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=f"{node.label} {node.score:.2f}")
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.pose.position.x, text.pose.position.y, text.pose.position.z = p.x, p.y - 1.5 * node_size, p.z
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
