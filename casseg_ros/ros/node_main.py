"""The casseg_ros lifecycle node: camera images in; masks, labels, 3D, scene graphs, diagnostics out.

The `casseg_ros` executable (`python -m casseg_ros.ros.node_main`): the node (`segment_node`)
configured and activated unless --no-autostart, spun until Ctrl-C, then shut down in order.
"""
from __future__ import annotations

import argparse
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import TransitionCallbackReturn

from casseg_ros.ros.segment_node import SegmentNode


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="casseg_ros", description=__doc__.splitlines()[0])
    parser.add_argument("--no-autostart", dest="autostart", action="store_false", default=None,
                        help="stay unconfigured (overrides the autostart parameter); drive the node "
                             "with lifecycle transitions instead")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Console entry `casseg_ros`: configure + activate (unless --no-autostart), then spin."""
    rclpy.init(args=argv)
    args = _parse_args(rclpy.utilities.remove_ros_args(argv if argv is not None else sys.argv)[1:])
    node = SegmentNode()
    exit_code = 0
    try:
        autostart = args.autostart if args.autostart is not None else bool(node.get_parameter("autostart").value)
        if autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("configure failed; see the error above")
                exit_code = 1
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("activate failed; see the error above")
                exit_code = 1
        if exit_code == 0:
            # One executor thread: rclpy's multi-threaded executor cost so much per callback that
            # most of a camera burst was lost in transport (2 of 600 frames vs 55 single-threaded).
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.lifecycle_state() == "active":
            node.on_deactivate(None)
        node._release_backend()
        node.destroy_node()
        rclpy.try_shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
