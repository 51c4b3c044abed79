"""RViz/Foxglove markers of a scene graph (visualization apart from inference), written as a
serialised visualization_msgs/MarkerArray.

A MarkerArray built as rclpy messages costs a Python `Marker` per object (about 20 µs each: every
Marker builds its header, pose, texture and mesh sub-messages) and a `Point` per sphere and per
segment end, and serialising converts each of them back: ≈ 9 ms for a graph of 256 objects and
2000 relations. The markers drawn here have a handful of fixed layouts, so they are written
straight into CDR from the graph's arrays instead: positions, colours and segment ends are numpy
arrays written as bytes, and what is left per object is its label text (a few `struct.pack`s).
The encoding is the one rmw_fastrtps and rosbag2 use (XCDR1 little endian, `_Cdr`); a publisher
sends the bytes as they are (`rclpy.publisher.Publisher.publish(bytes)`) and
`rclpy.serialization.deserialize_message(data, MarkerArray)` reads them back
(test/test_ros_node_unit.py compares the result with the same markers built as rclpy messages).
"""
from __future__ import annotations

import struct

import numpy as np
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from casseg_ros.perception.scene_graph import TRACK_NONE, SceneGraph

# Sphere diameter of a node drawn at its 3D position (metres).
NODE_SIZE_3D_M = 0.25
_WHITE = np.array([255, 255, 255], np.uint8)
_LINE_COLOR = (1.0, 1.0, 0.2, 0.6)
_IDENTITY_ORIENTATION = (0.0, 0.0, 0.0, 1.0)  # x, y, z, w


class _Cdr:
    """A little-endian XCDR1 byte stream: a primitive of n bytes starts at a multiple of n (8 at
    most), counted from the byte after the 4-byte encapsulation header."""

    def __init__(self) -> None:
        self._parts = [b"\x00\x01\x00\x00"]  # encapsulation: CDR_LE, no options
        self._size = 0

    def raw(self, data: bytes, align: int) -> None:
        pad = -self._size % align
        if pad:
            self._parts.append(bytes(pad))
        self._parts.append(data)
        self._size += pad + len(data)

    def pack(self, fmt: str, align: int, *values: object) -> None:
        self.raw(struct.pack("<" + fmt, *values), align)

    def string(self, text: str) -> None:
        data = text.encode() + b"\0"
        self.pack("I", 4, len(data))
        self.raw(data, 1)

    def bytes(self) -> bytes:
        return b"".join(self._parts)


def _marker(cdr: _Cdr, header: Header, ns: str, marker_id: int, kind: int, action: int,
            position: tuple[float, float, float] = (0.0, 0.0, 0.0), scale: tuple[float, float, float] = (0.0, 0.0, 0.0),
            color: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0), points: np.ndarray | None = None,
            colors: np.ndarray | None = None) -> None:
    """One visualization_msgs/Marker, its fields in definition order; `points` (n,3) float64 and
    `colors` (n,4) float32 are written as their bytes; the text, texture, UV coordinates, mesh and
    lifetime stay empty / zero, the orientation the identity."""
    cdr.pack("iI", 4, header.stamp.sec, header.stamp.nanosec)
    cdr.string(header.frame_id)
    cdr.string(ns)
    cdr.pack("iii", 4, marker_id, kind, action)
    cdr.pack("10d", 8, *position, *_IDENTITY_ORIENTATION, *scale)  # pose, scale
    cdr.pack("4fiI?", 4, *color, 0, 0, False)  # color, lifetime, frame_locked
    for values, align in ((points, 8), (colors, 4)):
        count = 0 if values is None else values.shape[0]
        cdr.pack("I", 4, count)
        if count:
            cdr.raw(values.tobytes(), align)
    cdr.string("")  # texture_resource
    cdr.pack("iI", 4, 0, 0)  # texture: sensor_msgs/CompressedImage, empty
    cdr.string("")
    cdr.string("")
    cdr.pack("II", 4, 0, 0)  # its data; uv_coordinates
    cdr.string("")  # text (labels: `_text_markers`)
    cdr.string("")  # mesh_resource
    cdr.string("")  # mesh_file: filename, data
    cdr.pack("I?", 4, 0, False)  # mesh_use_embedded_materials


def _text_markers(cdr: _Cdr, header: Header, ids: np.ndarray, positions: np.ndarray, texts: list[str],
                  node_size: float) -> None:
    """One TEXT_VIEW_FACING marker (ns "labels") per object: what `_marker` writes, with the parts
    that are the same for every object written once (each starts at a multiple of 4 and holds
    nothing wider than 4 bytes, so it is the same bytes wherever it lands) — per object only its
    id, position and text are packed."""
    def fields(write) -> bytes:
        part = _Cdr()
        write(part)
        part.raw(b"", 4)  # the padding before the next 4-byte field
        return part.bytes()[4:]
    head = fields(lambda c: (c.pack("iI", 4, header.stamp.sec, header.stamp.nanosec), c.string(header.frame_id),
                             c.string("labels")))
    kind = struct.pack("<ii", Marker.TEXT_VIEW_FACING, Marker.ADD)
    # after pose and scale: color, lifetime, frame_locked, no points or colours, empty texture and UVs
    middle = fields(lambda c: (c.pack("4fiI?", 4, 1.0, 1.0, 1.0, 1.0, 0, 0, False), c.pack("II", 4, 0, 0),
                               c.string(""), c.pack("iI", 4, 0, 0), c.string(""), c.string(""), c.pack("II", 4, 0, 0)))
    tail = fields(lambda c: (c.string(""), c.string(""), c.pack("I?", 4, 0, False)))[:-3]  # ends with the bool
    for object_id, (x, y, z), text in zip(ids.tolist(), positions.tolist(), texts):
        data = text.encode() + b"\0"
        cdr.raw(head, 4)
        cdr.raw(struct.pack("<i", object_id) + kind, 4)
        cdr.pack("10d", 8, x, y, z, *_IDENTITY_ORIENTATION, 0.0, 0.0, node_size)
        cdr.raw(middle + struct.pack("<I", len(data)) + data, 4)
        cdr.raw(tail, 4)


def scene_graph_markers(graph: SceneGraph, header: Header, palette: np.ndarray, scale: float) -> bytes:
    """RViz/Foxglove view of the graph in the camera's optical frame (the image's header), as a
    serialised visualization_msgs/MarkerArray (see the module docstring).

    With depth (any object has a 3D centroid): every object with one sits there (metres, REP-103
    optical frame: x right, y down, z forward), spheres NODE_SIZE_3D_M wide; objects without valid
    depth are left out, and so are their relations. Without depth the graph is an image-plane
    diagram: an object sits at (centroid_x * scale, centroid_y * scale, 0), columns along +x and
    rows along +y, so it appears upright, overlaying the picture as seen from behind the camera.

    Markers: DELETEALL first (objects that left the view disappear); ns "nodes": one SPHERE_LIST
    with a sphere per object in its class colour; ns "labels": a TEXT_VIEW_FACING per object
    ("label score", tracked: "label #track score"; id = the object's id, the track id when tracked, so
    RViz keeps a track's label and class colour from frame to frame) above its sphere; ns "edges/<predicate>": one LINE_LIST
    per predicate (in name order) with a segment per relation.
    """
    placed_3d = np.isfinite(graph.centroids_3d).all(axis=1)
    in_3d = bool(placed_3d.any())
    node_size = NODE_SIZE_3D_M if in_3d else max(scale * 12.0, 1e-3)
    if in_3d:
        shown = np.flatnonzero(placed_3d)
        positions = graph.centroids_3d[shown].astype(np.float64)
    else:
        shown = np.arange(graph.num_objects)
        positions = np.zeros((shown.size, 3))
        positions[:, :2] = graph.centroids.astype(np.float64) * scale
    class_ids = graph.class_ids[shown].astype(np.int64)
    known = class_ids < len(palette)
    colors = np.full((shown.size, 4), 0.9, np.float32)
    colors[:, :3] = np.where(known[:, None], np.asarray(palette, np.uint8)[np.where(known, class_ids, 0)], _WHITE) / 255.0
    lines = _edge_lines(graph, shown, positions)

    cdr = _Cdr()
    cdr.pack("I", 4, 1 + (shown.size > 0) + shown.size + len(lines))
    _marker(cdr, header, "", 0, 0, Marker.DELETEALL)
    if shown.size:
        _marker(cdr, header, "nodes", 0, Marker.SPHERE_LIST, Marker.ADD, scale=(node_size,) * 3,
                color=(1.0, 1.0, 1.0, 1.0), points=positions, colors=colors)
    labels = graph.labels()
    tracked = graph.track_states[shown] != TRACK_NONE  # a tracked object's label carries its track id
    texts = [f"{labels[index]} #{object_id} {score:.2f}" if is_tracked else f"{labels[index]} {score:.2f}"
             for index, object_id, score, is_tracked in zip(shown.tolist(), graph.ids[shown].tolist(),
                                                           graph.scores[shown].tolist(), tracked.tolist())]
    _text_markers(cdr, header, graph.ids[shown], positions - np.array([0.0, 1.5 * node_size, 0.0]), texts, node_size)
    for index, (predicate, ends) in enumerate(lines):
        _marker(cdr, header, f"edges/{predicate}", index, Marker.LINE_LIST, Marker.ADD,
                scale=(node_size * 0.25, 0.0, 0.0), color=_LINE_COLOR, points=ends)
    return cdr.bytes()


def _edge_lines(graph: SceneGraph, shown: np.ndarray, positions: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Per predicate present (in name order): the (2k,3) segment ends of its k relations whose two
    objects are shown (`positions[i]` is where object `shown[i]` is drawn)."""
    slot = np.full(graph.num_objects, -1, np.int64)  # object index -> row of `positions`
    slot[shown] = np.arange(shown.size)
    source, target = slot[graph.sources], slot[graph.targets]
    drawn = (source >= 0) & (target >= 0)
    names = graph.predicate_names
    lines = []
    for predicate in sorted(np.unique(graph.predicates[drawn]).tolist(), key=lambda p: names[p]):
        chosen = drawn & (graph.predicates == predicate)
        ends = np.stack([source[chosen], target[chosen]], axis=1).reshape(-1)
        lines.append((names[predicate], np.ascontiguousarray(positions[ends])))
    return lines
