"""Recorder: the node's outputs written to an mcap rosbag2, like `ros2 bag record`.

    python -m casseg_ros.replay.recorder --out OUT_BAG [--node /casseg_ros] [--name NAME] [--no-overlay] [--points]

Subscribes to the node's mask, colour mask, overlay, camera_info, scene graph, label_info
(transient local), optionally its point cloud (--points: about 24 bytes a pixel, so off unless
asked), and /diagnostics as serialised messages and writes them, stamped with their receive time,
into OUT_BAG (rosbags). A subscribed optional output is one the node makes: recording it costs
the node that work.
On SIGINT/SIGTERM it takes what has already arrived, closes the bag and moves it into place.
Whether it is ready is read from the graph: once every subscription is matched to the node's
writers and the node's latched label_info has arrived, its node (--name) advertises `~/ready`
(`casseg_ros.ros.readiness.GraphWatcher.wait_for_publisher`). Seeing the recorder's subscription
in the graph is not enough: DDS matches the two sides separately, and a frame published before
the node's writer matched the recorder's reader is not delivered.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Empty
from vision_msgs.msg import LabelInfo

from casseg_msgs.msg import SceneGraph
from casseg_ros.replay.bag import CAMERA_INFO_TYPE, DIAGNOSTICS_TYPE, IMAGE_TYPE, LABEL_INFO_TYPE, POINT_CLOUD_TYPE, \
    SCENE_GRAPH_TYPE, OutputBag
from casseg_ros.ros.processes import StopFlag, init_child_rclpy

SPIN_S = 0.1
# On stop: keep taking messages until none has arrived for this long (what DDS already delivered).
DRAIN_QUIET_S = 0.2
DRAIN_MAX_S = 5.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m casseg_ros.replay.recorder", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="rosbag2 directory to create (mcap)")
    p.add_argument("--node", default="/casseg_ros", help="fully qualified name of the node to record")
    p.add_argument("--name", default=None, help="ROS node name of the recorder (default casseg_recorder_<pid>)")
    p.add_argument("--no-overlay", action="store_true", help="do not subscribe to the overlay (the node then skips it)")
    p.add_argument("--points", action="store_true", help="also record ~/points (the node then makes them)")
    return p


def output_topics(node: str, overlay: bool = True, points: bool = False) -> list[tuple[str, type, str, QoSProfile]]:
    """(topic, message class, rosbag2 type, QoS) of everything recorded from `node`."""
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    ns = node.rstrip("/")
    topics = [(f"{ns}/mask", Image, IMAGE_TYPE, reliable), (f"{ns}/mask/color", Image, IMAGE_TYPE, reliable),
              (f"{ns}/camera_info", CameraInfo, CAMERA_INFO_TYPE, reliable),
              (f"{ns}/scene_graph", SceneGraph, SCENE_GRAPH_TYPE, reliable),
              (f"{ns}/label_info", LabelInfo, LABEL_INFO_TYPE, latched),
              ("/diagnostics", DiagnosticArray, DIAGNOSTICS_TYPE, reliable)]
    if overlay:
        topics.insert(1, (f"{ns}/overlay", Image, IMAGE_TYPE, reliable))
    if points:
        # A few clouds of buffer only: each is ~24 bytes a pixel, and the recorder keeps up at camera rates.
        topics.insert(-1, (f"{ns}/points", PointCloud2, POINT_CLOUD_TYPE,
                           QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)))
    return topics


def drain(executor: SingleThreadedExecutor, bag: OutputBag) -> None:
    """Take the messages DDS delivered before the stop: spin until none arrives for a moment."""
    give_up = time.monotonic() + DRAIN_MAX_S
    while time.monotonic() < give_up:
        before = sum(bag.counts.values())
        quiet_until = time.monotonic() + DRAIN_QUIET_S
        while time.monotonic() < quiet_until:
            executor.spin_once(timeout_sec=DRAIN_QUIET_S / 4)
        if sum(bag.counts.values()) == before:
            return


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    stop = StopFlag()
    init_child_rclpy()
    node = rclpy.create_node(a.name or f"casseg_recorder_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    bag = OutputBag(a.out)
    topics = output_topics(a.node, overlay=not a.no_overlay, points=a.points)
    subscriptions = []
    for topic, cls, msgtype, qos in topics:
        bag.add_topic(topic, msgtype)

        def write(raw: bytes, topic: str = topic) -> None:
            bag.write(topic, time.time_ns(), raw)  # receive time, as `ros2 bag record` stamps messages
        subscriptions.append(node.create_subscription(cls, topic, write, qos, raw=True))
    print(f"recorder: recording {[t for t, *_ in topics]} to {a.out}", flush=True)
    try:
        label_info = next(t for t, *_ in topics if t.endswith("/label_info"))
        # Ready once every subscription is matched to the node's writer and the node's latched
        # label_info has arrived (so the writer side has matched us too); then say so in the graph.
        while not stop.stop and not (all(s.get_publisher_count() for s in subscriptions)
                                     and bag.counts.get(label_info)):
            executor.spin_once(timeout_sec=SPIN_S)
        node.create_publisher(Empty, "~/ready", 1)
        while not stop.stop:
            executor.spin_once(timeout_sec=SPIN_S)
        drain(executor, bag)
    finally:
        path = bag.close()
        print(f"recorder: wrote {path} {bag.counts}", flush=True)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
