"""Recorder: the node's outputs written to an mcap rosbag2, like `ros2 bag record`.

    python -m casseg_ros.replay.live.recorder --out OUT_BAG [--node /casseg_ros] [--name NAME] [--no-overlay] [--points]

Subscribes to the node's mask, colour mask, overlay, camera_info, scene graph, label_info
(transient local), optionally its point cloud (--points: about 24 bytes a pixel, so off unless
asked), and /diagnostics as serialised messages and writes them, stamped with their receive time,
into OUT_BAG (rosbags). A subscribed optional output is one the node makes: recording it costs
the node that work.
On SIGINT/SIGTERM it takes what has already arrived, closes the bag and moves it into place.
Whether it is ready is read from the graph: once every subscription is matched to the node's
writers and the node's latched label_info has arrived, its node (--name) advertises `~/ready`
(`casseg_ros.processes.readiness.GraphWatcher.wait_for_publisher`). Seeing the recorder's subscription
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
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Empty

from casseg_ros.processes.children import StopFlag, init_child_rclpy
from casseg_ros.replay.bag import DIAGNOSTICS_TYPE, OutputBag
from casseg_ros.ros.topics import NODE_NAME, OUTPUTS

SPIN_S = 0.1
# On stop: keep taking messages until none has arrived for this long (what DDS already delivered).
DRAIN_QUIET_S = 0.2
DRAIN_MAX_S = 5.0
# The node's outputs recorded, in this order (--no-overlay / --points take one out / add one).
RECORDED = ("mask", "overlay", "mask/color", "camera_info", "scene_graph", "label_info", "points")
# Messages the recorder's subscription buffers: enough for camera rates; a few clouds only (each is
# ~24 bytes a pixel); the latched class map is one message.
QUEUE_DEPTH = {"points": 10, "label_info": 1}
DEFAULT_QUEUE_DEPTH = 50


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m casseg_ros.replay.live.recorder", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="rosbag2 directory to create (mcap)")
    p.add_argument("--node", default=f"/{NODE_NAME}", help="fully qualified name of the node to record")
    p.add_argument("--name", default=None, help="ROS node name of the recorder (default casseg_recorder_<pid>)")
    p.add_argument("--no-overlay", action="store_true", help="do not subscribe to the overlay (the node then skips it)")
    p.add_argument("--points", action="store_true", help="also record ~/points (the node then makes them)")
    return p


def output_topics(node: str, overlay: bool = True, points: bool = False) -> list[tuple[str, type, str, QoSProfile]]:
    """(topic, message class, rosbag2 type, QoS) of everything recorded from `node`: its outputs
    (`topics.OUTPUTS`: types, and the durability a late joiner needs) and /diagnostics."""
    def qos(depth: int, durability=None) -> QoSProfile:
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                          **({"durability": durability} if durability is not None else {}))

    ns = node.rstrip("/")
    wanted = [name for name in RECORDED if (name != "overlay" or overlay) and (name != "points" or points)]
    topics = [(f"{ns}/{name}", OUTPUTS[name].msg_type, OUTPUTS[name].type_name,
               qos(QUEUE_DEPTH.get(name, DEFAULT_QUEUE_DEPTH), OUTPUTS[name].qos.durability)) for name in wanted]
    return topics + [("/diagnostics", DiagnosticArray, DIAGNOSTICS_TYPE, qos(DEFAULT_QUEUE_DEPTH))]


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
