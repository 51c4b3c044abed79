"""casseg_msgs/SceneGraph format 2: the wire format as stated, and a graph that round-trips exactly
(numpy graph -> rclpy message -> CDR -> rclpy or rosbags -> numpy graph, and -> JSON)."""
from __future__ import annotations

import array
import json

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

import casseg_msgs.msg
from casseg_msgs.msg import SceneGraph
from casseg_ros.perception.depth import PinholeCamera, graph_in_3d
from casseg_ros.perception.scene_graph import (ARRAY_FIELDS, FORMAT_VERSION, PREDICATES, TRACK_CONFIRMED,
                                               TRACK_NONE, TRACK_TENTATIVE, scene_graph_record, segment_instances)
from casseg_ros.perception.scene_graph import SceneGraph as Graph
from casseg_ros.replay.bag import SCENE_GRAPH_TYPE, typestore
from casseg_ros.ros.messages import scene_graph_from_msg, scene_graph_to_msg
from training.datasets.context_scenes import CONTEXT_CLASSES, ContextScenes

# The format, field by field (the migration section of docs/ros_node.md describes the same list).
FORMAT_2 = {
    "header": "std_msgs/Header", "format_version": "uint8",
    "ids": "sequence<uint32>", "class_ids": "sequence<uint16>", "scores": "sequence<float>",
    "boxes": "sequence<uint32>", "centroids": "sequence<float>", "areas": "sequence<uint32>",
    "centroids_3d": "sequence<float>", "extents_3d": "sequence<float>", "track_states": "sequence<uint8>",
    "track_ages": "sequence<uint32>", "velocities_3d": "sequence<float>",
    "sources": "sequence<uint32>", "targets": "sequence<uint32>", "predicates": "sequence<uint8>",
    "predicate_names": "sequence<string>", "weights": "sequence<float>", "distances_3d": "sequence<float>",
}


def test_the_message_is_format_2_a_struct_of_arrays():
    assert SceneGraph.get_fields_and_field_types() == FORMAT_2
    assert (SceneGraph.FORMAT_VERSION, SceneGraph.TRACK_NONE, SceneGraph.TRACK_TENTATIVE,
            SceneGraph.TRACK_CONFIRMED) == (FORMAT_VERSION, TRACK_NONE, TRACK_TENTATIVE, TRACK_CONFIRMED) == (2, 0, 1, 2)
    assert not hasattr(casseg_msgs.msg, "SceneNode") and not hasattr(casseg_msgs.msg, "SceneEdge")  # format 1 gone
    # The numpy graph has exactly the message's arrays.
    assert set(ARRAY_FIELDS) | {"header", "format_version", "predicate_names"} == set(FORMAT_2)


def _scene_graph() -> Graph:
    """A context scene's graph at the node's stride, with 3D from its exact depth and a tracker's fields."""
    scene = ContextScenes(1, 96, 192, seed=3).generate(0)
    confidence = np.random.default_rng(0).uniform(0.3, 1.0, scene.label.shape).astype(np.float32)
    k = len(CONTEXT_CLASSES)
    adjacency = np.random.default_rng(1).random((k, k))
    graph, runs = segment_instances(scene.label, CONTEXT_CLASSES, confidence, adjacency, min_area=16, stride=4)
    fx, _, cx, _, fy, cy = scene.camera.k[:6]
    camera = PinholeCamera(fx=fx, fy=fy, cx=cx, cy=cy, width=192, height=96)
    depth = np.where(np.isfinite(scene.depth), scene.depth, np.nan).astype(np.float32)
    depth[: 96 // 2] = np.nan  # the upper half without depth: some objects stay 2D
    graph = graph_in_3d(graph, runs, depth, camera)
    n = graph.num_objects
    velocities = np.random.default_rng(2).normal(size=(n, 3)).astype(np.float32)
    velocities[::3] = np.nan
    return graph.with_tracks(ids=np.arange(100, 100 + n), track_states=np.arange(n) % 3,
                             track_ages=np.arange(n) * 7, velocities_3d=velocities)


def test_a_graph_round_trips_through_the_message_exactly():
    graph = _scene_graph()
    placed = np.isfinite(graph.centroids_3d).all(axis=1)
    assert graph.num_objects >= 5 and graph.num_relations >= 10 and placed.any() and not placed.all()
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = scene_graph_to_msg(graph, header)
    assert msg.format_version == 2 and msg.header == header and list(msg.predicate_names) == list(PREDICATES)
    assert all(isinstance(getattr(msg, name), array.array) for name in ARRAY_FIELDS)
    assert len(msg.boxes) == 4 * graph.num_objects and len(msg.centroids_3d) == 3 * graph.num_objects
    assert list(msg.ids[:2]) == [100, 101] and list(msg.track_states[:3]) == [0, 1, 2]

    wire = serialize_message(msg)
    by_rclpy = scene_graph_from_msg(deserialize_message(wire, SceneGraph), CONTEXT_CLASSES)
    by_rosbags = scene_graph_from_msg(typestore().deserialize_cdr(wire, SCENE_GRAPH_TYPE), CONTEXT_CLASSES)
    assert by_rclpy == graph and by_rosbags == graph  # every array equal, NaN where NaN
    assert by_rclpy.instances == graph.instances and by_rclpy.relations == graph.relations
    # Relations as Python values speak the objects' ids (track ids here), the arrays their indices.
    first = graph.relations[0]
    assert (first.source, first.target) == (100 + int(graph.sources[0]), 100 + int(graph.targets[0]))


def test_an_untracked_graph_and_its_json_record():
    graph = _scene_graph()
    plain = Graph(class_names=graph.class_names, class_ids=graph.class_ids, scores=graph.scores, boxes=graph.boxes,
                  centroids=graph.centroids, areas=graph.areas, sources=graph.sources, targets=graph.targets,
                  predicates=graph.predicates, weights=graph.weights)
    n = plain.num_objects
    assert list(plain.ids) == list(range(n)) and (plain.track_states == TRACK_NONE).all()
    assert (plain.track_ages == 0).all() and np.isnan(plain.velocities_3d).all() and np.isnan(plain.distances_3d).all()
    record = scene_graph_record(4, 12_000_000_345, "cam", graph)
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    objects, relations = record["objects"], record["relations"]
    assert record["format_version"] == 2 and objects["ids"][:2] == [100, 101]
    assert objects["labels"] == [CONTEXT_CLASSES[c] for c in graph.class_ids.tolist()]
    assert objects["boxes"] == graph.boxes.tolist() and len(relations["sources"]) == graph.num_relations
    placed = np.isfinite(graph.centroids_3d).all(axis=1)
    assert [where is not None for where in objects["centroids_3d"]] == placed.tolist()
    assert [v is None for v in objects["velocities_3d"]] == np.isnan(graph.velocities_3d).any(axis=1).tolist()


def test_malformed_graphs_and_other_formats_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        Graph(class_ids=[0, 1], scores=[0.5])
    with pytest.raises(ValueError, match="index the 2 objects"):
        Graph(class_ids=[0, 1], sources=[0], targets=[2], predicates=[0], weights=[1.0])
    with pytest.raises(ValueError, match="predicate names"):
        Graph(class_ids=[0, 1], sources=[0], targets=[1], predicates=[len(PREDICATES)], weights=[1.0])
    with pytest.raises(ValueError, match="shape"):
        Graph(class_ids=[0, 1], boxes=[1, 2, 3])  # not 4 per object
    with pytest.raises(ValueError, match="format 0"):
        scene_graph_from_msg(SceneGraph())  # format_version unset: not a format-2 message
