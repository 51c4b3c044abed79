"""ROS-free per-frame post-processing: palette, overlay and scene-graph extraction."""
from casseg_ros.perception.overlay import colorize, make_overlay
from casseg_ros.perception.palette import palette_for_names
from casseg_ros.perception.scene_graph import (
    PREDICATES,
    Instance,
    Relation,
    SceneGraph,
    extract_scene_graph,
)

__all__ = [
    "PREDICATES",
    "Instance",
    "Relation",
    "SceneGraph",
    "colorize",
    "extract_scene_graph",
    "make_overlay",
    "palette_for_names",
]
