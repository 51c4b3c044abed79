"""casseg_ros.launch_arguments: what launch/segment.launch.py makes of its arguments (cameras,
per-camera topics, warnings), tested without ROS 2 launch (test_launch.py runs the file itself)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from casseg_ros.launch_arguments import (camera_setup, cameras_from_params_file, parameters_in, parse_list,
                                         unknown_argument_warnings)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config" / "segment.yaml"
DECLARED = ["camera_topic", "camera_info_topic", "depth_topic", "cameras", "camera_topics", "camera_info_topics",
            "depth_topics", "image_transport", "namespace", "node_name", "params_file", "autostart", "log_level"]


def test_the_unnamed_camera_is_remapped_as_before():
    setup = camera_setup(None, "/cam/image_raw", "/cam/camera_info", "/cam/depth/image")
    assert setup.cameras is None  # the params file's cameras parameter is left alone
    assert setup.remappings == [("image", "/cam/image_raw"), ("image/compressed", "/cam/image_raw/compressed"),
                                ("camera_info", "/cam/camera_info"), ("depth/image", "/cam/depth/image")]


def test_two_cameras_get_their_own_topics():
    setup = camera_setup(["front", "rear"], "/camera/image_raw", "/camera/camera_info", "/camera/depth/image",
                         camera_topics=["/f/color/image_raw", "/r/color/image_raw"],
                         depth_topics=["/f/aligned_depth/image_raw", "/r/aligned_depth/image_raw"])
    assert setup.cameras == ["front", "rear"]
    assert setup.remappings == [
        ("front/image", "/f/color/image_raw"), ("front/image/compressed", "/f/color/image_raw/compressed"),
        ("front/camera_info", "/f/color/camera_info"), ("front/depth/image", "/f/aligned_depth/image_raw"),
        ("rear/image", "/r/color/image_raw"), ("rear/image/compressed", "/r/color/image_raw/compressed"),
        ("rear/camera_info", "/r/color/camera_info"), ("rear/depth/image", "/r/aligned_depth/image_raw")]
    # without topics: each camera's driver naming under its own name
    default = camera_setup(["left"], "/camera/image_raw", "/camera/camera_info", "/camera/depth/image")
    assert default.remappings == [("left/image", "/left/image_raw"), ("left/image/compressed", "/left/image_raw/compressed"),
                                  ("left/camera_info", "/left/camera_info"), ("left/depth/image", "/left/depth/image_raw")]


@pytest.mark.parametrize("cameras,topics,message", [
    (["front", "rear"], ["/f/image_raw"], "camera_topics names 1 topic(s) for 2 cameras"),
    (["front", "front"], [], "camera names must be unique"),
    (["2nd"], [], "camera names must be ROS name tokens"),
    ([""], ["/f/image_raw"], "are for named cameras"),
])
def test_bad_camera_arguments_are_refused_with_the_reason(cameras, topics, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        camera_setup(cameras, "/c/image_raw", "/c/camera_info", "/c/depth/image", camera_topics=topics)


def test_lists_on_the_command_line():
    assert parse_list("[front, rear]", "cameras") == ["front", "rear"]
    assert parse_list("['/a/image_raw', '/b/image_raw']", "camera_topics") == ["/a/image_raw", "/b/image_raw"]
    assert parse_list("front,rear", "cameras") == ["front", "rear"]
    assert parse_list("", "cameras") == [] and parse_list("[]", "cameras") == []
    with pytest.raises(ValueError, match="cameras must be a list"):
        parse_list("[front", "cameras")


def test_cameras_from_the_params_file(tmp_path):
    assert cameras_from_params_file(SHIPPED, "casseg_ros") == [""]
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"cameras": ["a"]}},
                                      "/perception/casseg_ros": {"ros__parameters": {"cameras": ["front", "rear"]}}}))
    assert cameras_from_params_file(params, "casseg_ros", "perception") == ["front", "rear"]  # the node's own
    assert cameras_from_params_file(params, "casseg_ros") == ["a"]
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"score_threshold": 0.5}}}))
    assert cameras_from_params_file(params, "casseg_ros") is None


def test_arguments_meant_for_this_file_are_warned_about():
    node_parameters = parameters_in(SHIPPED)
    assert {"input_height", "score_threshold", "cameras", "model_path"} <= set(node_parameters)
    given = [*DECLARED, "camera_topc", "input_height", "use_sim_time_of_parent", "robot_description"]
    warnings = unknown_argument_warnings(given, DECLARED, node_parameters)
    assert warnings == [
        "segment.launch.py: unknown launch argument 'camera_topc' is ignored; did you mean 'camera_topic'?",
        "segment.launch.py: 'input_height' is a node parameter, not a launch argument, and is ignored: set it in "
        "params_file (or after the launch, with `casseg-ctl param set`)"]
    assert unknown_argument_warnings(DECLARED, DECLARED, node_parameters) == []
