"""Start the casseg_ros segmentation node with config/segment.yaml.

    ros2 launch casseg_ros segment.launch.py camera_topic:=/front_camera/image_raw namespace:=perception
    ros2 launch casseg_ros segment.launch.py params_file:=/path/to/my_segment.yaml autostart:=false
    ros2 launch casseg_ros segment.launch.py camera_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info depth_topic:=/camera/aligned_depth_to_color/image_raw
    ros2 launch casseg_ros segment.launch.py cameras:="[front, rear]" \
        camera_topics:="[/front/color/image_raw, /rear/color/image_raw]"

One camera (the default): the node subscribes to `image` (or `image/compressed` when
image_transport is compressed); both are remapped to `camera_topic` (and `camera_topic`/compressed,
the image_transport convention), `camera_info` to `camera_info_topic` and `depth/image` (a
registered depth image, REP-118) to `depth_topic`.
Several cameras, one model (`cameras`, or the `cameras` parameter of params_file): camera c reads
`c/image`, `c/camera_info`, `c/depth/image`, remapped to the c-th entry of `camera_topics`
(default /c/image_raw), `camera_info_topics` and `depth_topics` (default: the topics next to its
image topic); its outputs are under ~/c/. The rules: `casseg_ros.launch_arguments`.
An undeclared argument is ignored by launch; this file warns about one that looks meant for it (a
typo of its own arguments, or a node parameter that belongs in params_file).
It is a lifecycle node that configures and activates itself unless autostart is false; then a
lifecycle manager (e.g. nav2_lifecycle_manager), `ros2 lifecycle set` or `casseg-ctl lifecycle`
drives it.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from casseg_ros.launch_arguments import (camera_setup, cameras_from_params_file, parameters_in, parse_list,
                                         unknown_argument_warnings)


# (name, default, description) of every launch argument; "" is "not given" for the camera lists.
ARGUMENTS = (
    ("camera_topic", "/camera/image_raw", "sensor_msgs/Image topic of the camera (compressed: <topic>/compressed)"),
    ("camera_info_topic", "/camera/camera_info", "sensor_msgs/CameraInfo of the camera (republished with every mask)"),
    ("depth_topic", "/camera/depth/image", "registered depth image (16UC1 mm or 32FC1 m, same size and stamp as the "
                                           "colour image): enables ~/points and the 3D scene graph"),
    ("cameras", "", "names of several cameras served by one model, e.g. [front, rear] (default: params_file's "
                    "cameras parameter, else one unnamed camera)"),
    ("camera_topics", "", "with cameras: one image topic per camera, e.g. [/front/image_raw, /rear/image_raw] "
                          "(default /<camera>/image_raw)"),
    ("camera_info_topics", "", "with cameras: one CameraInfo topic per camera (default: next to its image topic, "
                               "/<camera>/camera_info)"),
    ("depth_topics", "", "with cameras: one registered depth topic per camera (default: next to its image topic, "
                         "/<camera>/depth/image_raw)"),
    ("image_transport", "raw", "raw: camera_topic; compressed: camera_topic/compressed"),
    ("namespace", "", "namespace of the node; outputs are <namespace>/<node_name>/mask, ..."),
    ("node_name", "casseg_ros", "name of the node"),
    ("params_file", None, "YAML file with the node's ros__parameters (default: the package's config/segment.yaml)"),
    ("autostart", "true", "configure and activate at start (false: wait for a lifecycle manager)"),
    ("log_level", "info", "rcutils log level of the node"),
)
CHOICES = {"image_transport": ["raw", "compressed"], "autostart": ["true", "false"]}


def _declared_arguments(shipped_params: str) -> list:
    return [DeclareLaunchArgument(name, default_value=shipped_params if default is None else default,
                                  description=description, **({"choices": CHOICES[name]} if name in CHOICES else {}))
            for name, default, description in ARGUMENTS]


def _node(context, declared: list[str], shipped_params: str):
    """The node, once the arguments' values are known (cameras decide its parameters and remaps)."""
    value = {name: LaunchConfiguration(name).perform(context) for name in declared}
    logger = get_logger("casseg_ros.launch")
    node_parameters = parameters_in(shipped_params) + ["autostart"]  # the shipped file sets every one
    for warning in unknown_argument_warnings(context.launch_configurations, declared, node_parameters):
        logger.warning(warning)
    cameras = parse_list(value["cameras"], "cameras") or cameras_from_params_file(
        value["params_file"], value["node_name"], value["namespace"])
    setup = camera_setup(cameras, value["camera_topic"], value["camera_info_topic"], value["depth_topic"],
                         parse_list(value["camera_topics"], "camera_topics"),
                         parse_list(value["camera_info_topics"], "camera_info_topics"),
                         parse_list(value["depth_topics"], "depth_topics"))
    overrides = {"autostart": value["autostart"] == "true",  # choices: true | false
                 "image_transport": value["image_transport"]}
    if setup.cameras is not None:
        overrides["cameras"] = setup.cameras
    return [LifecycleNode(
        package="casseg_ros",
        executable="casseg_ros",
        name=value["node_name"],
        namespace=value["namespace"],
        parameters=[value["params_file"], overrides],
        remappings=setup.remappings,
        ros_arguments=["--log-level", value["log_level"]],
        output="screen",
        emulate_tty=True,
        # After SIGINT the node stops its worker and exits cleanly, but a Python process holding torch
        # takes seconds to tear down on a loaded CPU: launch's 5 s before SIGTERM is too short.
        sigterm_timeout=LaunchConfiguration("sigterm_timeout", default="15"),
    )]


def generate_launch_description():
    shipped = os.path.join(get_package_share_directory("casseg_ros"), "config", "segment.yaml")
    arguments = _declared_arguments(shipped)
    declared = [argument.name for argument in arguments]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node, args=[declared, shipped])])
