"""launch/segment.launch.py through the real launch / launch_ros / launch_pytest stack: the launch
description parsed for one camera and for two (what node it makes, with which remaps and
parameters), and the node launched and segmenting a remapped camera.

Needs ROS 2 launch (launch, launch_ros, launch_pytest) and an installed casseg_ros (a sourced
colcon workspace: the launch file starts the `casseg_ros` executable of the package, found through
the ament index). Where either is missing — e.g. a pip-only Kilted environment, or an editable
install, which has no ament index entry — the module is skipped with the reason before anything
is launched (launch would otherwise wait forever for a process it cannot start).
"""
from __future__ import annotations

import os

import pytest
from ament_index_python.packages import PackageNotFoundError, get_package_prefix

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # launches the node process

launch_pytest = pytest.importorskip("launch_pytest")
pytest.importorskip("launch_ros")


def installed_executable_problem(package: str = "casseg_ros", executable: str = "casseg_ros") -> str | None:
    """Why launch_ros cannot start `package`'s `executable`, or None when it can."""
    try:
        prefix = get_package_prefix(package)
    except (PackageNotFoundError, OSError) as exc:  # not indexed / AMENT_PREFIX_PATH unset
        return f"{package} is not in the ament index ({exc}); build and source a colcon workspace"
    path = os.path.join(prefix, "lib", package, executable)
    if not os.access(path, os.X_OK):
        return f"{path} is missing or not executable (the ament index names {prefix})"
    return None


_problem = installed_executable_problem()
if _problem is not None:
    pytest.skip(_problem, allow_module_level=True)

from pathlib import Path  # noqa: E402

import rclpy  # noqa: E402
import yaml  # noqa: E402
from launch import LaunchContext, LaunchDescription  # noqa: E402
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from casseg_ros.model.checkpoint import save_checkpoint  # noqa: E402
from model_factory import tiny_model  # noqa: E402
from ros_helpers.harness import Probe, start_camera  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parent.parent / "launch" / "segment.launch.py"
NAMESPACE = "launch_test"
CAMERA_TOPIC = "/launch_test_camera/image_raw"


@pytest.fixture(scope="module")
def params_file(tmp_path_factory):
    """config/segment.yaml with a tiny random checkpoint and a small input size."""
    folder = tmp_path_factory.mktemp("launch")
    checkpoint = save_checkpoint(folder / "tiny.safetensors", tiny_model(5))
    config = yaml.safe_load((LAUNCH_FILE.parent.parent / "config" / "segment.yaml").read_text())
    config["/**"]["ros__parameters"].update(model_path=str(checkpoint), input_height=64, input_width=128,
                                            qos_reliability="reliable")
    path = folder / "segment.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def parsed_node(arguments: dict[str, str]) -> tuple[dict[str, str], dict]:
    """(remap rules, parameters) of the node the launch file makes for `arguments`; nothing is
    started. Runs what launch runs before it starts the process: the argument declarations (their
    defaults), the OpaqueFunction that makes the node, and the node's substitutions."""
    context = LaunchContext()
    description = PythonLaunchDescriptionSource(str(LAUNCH_FILE)).get_launch_description(context)
    context.launch_configurations.update(arguments)
    nodes = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.visit(context)  # sets the default of an argument not given
        elif isinstance(entity, OpaqueFunction):
            nodes += entity.visit(context) or []
    node, = nodes
    node._perform_substitutions(context)  # launch_ros does this in execute(), before starting the process
    parameters: dict = {}
    for path, is_file in node._Node__expanded_parameter_arguments:  # params files, in order
        if is_file:
            # FullLoader: launch_ros writes list parameters as !!python/tuple (rcl reads them as lists)
            for section in (yaml.load(Path(path).read_text(), Loader=yaml.FullLoader) or {}).values():
                parameters.update(section.get("ros__parameters", {}))
    parameters = {k: list(v) if isinstance(v, tuple) else v for k, v in parameters.items()}
    return dict(node.expanded_remapping_rules), parameters


def test_parse_one_camera(params_file):
    remaps, parameters = parsed_node({"camera_topic": "/front/color/image_raw", "params_file": params_file,
                                      "camera_info_topic": "/front/color/camera_info"})
    assert remaps == {"image": "/front/color/image_raw", "image/compressed": "/front/color/image_raw/compressed",
                      "camera_info": "/front/color/camera_info", "depth/image": "/camera/depth/image"}
    assert parameters["cameras"] == [""] and parameters["autostart"] is True


def test_parse_two_cameras(params_file):
    remaps, parameters = parsed_node({"cameras": "[front, rear]", "params_file": params_file,
                                      "camera_topics": "[/f/color/image_raw, /r/color/image_raw]"})
    assert parameters["cameras"] == ["front", "rear"]
    assert remaps == {"front/image": "/f/color/image_raw", "front/image/compressed": "/f/color/image_raw/compressed",
                      "front/camera_info": "/f/color/camera_info", "front/depth/image": "/f/color/depth/image_raw",
                      "rear/image": "/r/color/image_raw", "rear/image/compressed": "/r/color/image_raw/compressed",
                      "rear/camera_info": "/r/color/camera_info", "rear/depth/image": "/r/color/depth/image_raw"}


def test_parse_cameras_from_the_params_file(params_file, tmp_path):
    config = yaml.safe_load(Path(params_file).read_text())
    config["/**"]["ros__parameters"]["cameras"] = ["left", "right"]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(config))
    remaps, parameters = parsed_node({"params_file": str(tmp_path / "two.yaml")})
    assert parameters["cameras"] == ["left", "right"]
    assert remaps["left/image"] == "/left/image_raw" and remaps["right/camera_info"] == "/right/camera_info"


def test_parse_refuses_a_topic_list_of_the_wrong_length(params_file):
    with pytest.raises(ValueError, match="camera_topics names 1 topic"):
        parsed_node({"cameras": "[front, rear]", "camera_topics": "[/f/image_raw]", "params_file": params_file})


@launch_pytest.fixture
def launch_description(params_file, ros_env_module):
    # ros_env_module first: the launched node inherits its ROS_DOMAIN_ID and the loopback profile.
    return LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
            launch_arguments={"camera_topic": CAMERA_TOPIC, "namespace": NAMESPACE,
                              "params_file": params_file}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=launch_description)
def test_launched_node_becomes_active_and_segments_the_remapped_camera(ros_env_module):
    rclpy.init()
    probe = Probe(f"/{NAMESPACE}/casseg_ros", name="launch_probe")
    try:
        probe.subscribe_label_info()
        assert probe.wait_until(lambda: probe.get("label_info"), 120.0), "launched node never activated"
        assert probe.lifecycle_state() == "active"
        camera = start_camera(ros_env_module.env, CAMERA_TOPIC, "--encodings", "bgr8", "--frames-per-encoding", "20")
        assert camera.wait(60) == 0, camera.output()
        assert probe.wait_until(lambda: probe.get("mask"), 20.0), "no mask for the remapped camera topic"
        assert probe.get("mask")[-1].header.frame_id == "cam_bgr8"
    finally:
        probe.close()
        rclpy.shutdown()
