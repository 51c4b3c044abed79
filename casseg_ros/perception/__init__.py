"""ROS-free per-frame post-processing: palette, overlay and scene-graph extraction."""
from casseg_ros.perception.overlay import colorize, make_overlay
from casseg_ros.perception.palette import CITYSCAPES_COLORS, default_palette
from casseg_ros.perception.scene_graph import (
    PREDICATES,
    Instance,
    Relation,
    SceneGraph,
    extract_scene_graph,
)

__all__ = [
    "CITYSCAPES_COLORS",
    "PREDICATES",
    "Instance",
    "Relation",
    "SceneGraph",
    "colorize",
    "default_palette",
    "extract_scene_graph",
    "make_overlay",
]
