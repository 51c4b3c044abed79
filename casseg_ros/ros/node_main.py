"""The casseg_ros lifecycle node: camera images in; masks, labels, 3D, scene graphs, diagnostics out.

The `casseg_ros` executable (`python -m casseg_ros.ros.node_main`): the node (`segment_node`)
configured and activated unless --no-autostart, spun until SIGINT/SIGTERM (Ctrl-C), then shut down
in order: the worker stopped and drained before the context goes.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from casseg_ros.ros.segment_node import SegmentNode, StartupParameterError
from casseg_ros.ros.topics import NODE_NAME

# The executor returns to Python this often, so a SIGINT/SIGTERM is acted on within it.
_SPIN_S = 0.2


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="casseg_ros", description=__doc__.splitlines()[0])
    parser.add_argument("--no-autostart", dest="autostart", action="store_false", default=None,
                        help="stay unconfigured (overrides the autostart parameter); drive the node "
                             "with lifecycle transitions instead")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Console entry `casseg_ros`: configure + activate (unless --no-autostart), then spin until
    SIGINT/SIGTERM; then the worker is stopped and drained before the context shuts down."""
    # rclpy's own signal handlers shut the context down the moment a signal arrives, under a worker
    # still publishing ("publisher's context is invalid"): ours only end the spin loop below. Set
    # for both signals, also where the parent started us with SIGINT ignored (nohup, CI runners).
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    args = _parse_args(rclpy.utilities.remove_ros_args(argv if argv is not None else sys.argv)[1:])
    try:
        node = SegmentNode()
    except StartupParameterError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        rclpy.try_shutdown()
        return 1
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
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set():
                executor.spin_once(timeout_sec=_SPIN_S)
            executor.remove_node(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.lifecycle_state() == "active":
            node.on_deactivate(None)  # subscriptions gone, worker stopped after its batch: nothing publishes
        node._release_backend()
        node.destroy_node()
        rclpy.try_shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
