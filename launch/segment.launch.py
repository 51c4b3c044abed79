"""Start the casseg_ros segmentation node with config/segment.yaml.

    ros2 launch casseg_ros segment.launch.py camera_topic:=/front_camera/image_raw namespace:=perception
    ros2 launch casseg_ros segment.launch.py params_file:=/path/to/my_segment.yaml autostart:=false
    ros2 launch casseg_ros segment.launch.py camera_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info depth_topic:=/camera/aligned_depth_to_color/image_raw

The node subscribes to `image` (or `image/compressed` when image_transport is compressed); both
are remapped to `camera_topic` (and `camera_topic`/compressed, the image_transport convention),
`camera_info` to `camera_info_topic` and `depth/image` (a registered depth image, REP-118) to
`depth_topic`.
It is a lifecycle node that configures and activates itself unless autostart is false; then a
lifecycle manager (e.g. nav2_lifecycle_manager) or `ros2 lifecycle set` drives it.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    share = get_package_share_directory("casseg_ros")
    camera_topic = LaunchConfiguration("camera_topic")
    arguments = [
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image topic of the camera (compressed: <topic>/compressed)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="sensor_msgs/CameraInfo of the camera (republished with every mask)"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/depth/image",
                              description="registered depth image (16UC1 mm or 32FC1 m, same size and stamp as "
                                          "the colour image): enables ~/points and the 3D scene graph"),
        DeclareLaunchArgument("image_transport", default_value="raw", choices=["raw", "compressed"],
                              description="raw: camera_topic; compressed: camera_topic/compressed"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node; outputs are <namespace>/<node_name>/mask, ..."),
        DeclareLaunchArgument("node_name", default_value="casseg_ros", description="name of the node"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "segment.yaml"),
                              description="YAML file with the node's ros__parameters"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="configure and activate at start (false: wait for a lifecycle manager)"),
        DeclareLaunchArgument("log_level", default_value="info", description="rcutils log level of the node"),
    ]
    node = LifecycleNode(
        package="casseg_ros",
        executable="casseg_ros",
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {"autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
             "image_transport": LaunchConfiguration("image_transport")},
        ],
        remappings=[
            ("image", camera_topic),
            ("image/compressed", [camera_topic, "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
            ("depth/image", LaunchConfiguration("depth_topic")),
        ],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])
