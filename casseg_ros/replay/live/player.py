"""Player: a recording's camera frames published on a live topic, like a camera driver.

    python -m casseg_ros.replay.live.player --bag B --topic /camera/image_raw [--rate-scale 1]
    python -m casseg_ros.replay.live.player --bag B --topic T --interval-ms 2 --loop-frames 1000
    python -m casseg_ros.replay.live.player --bag B --topic T --paced-by /casseg_ros/scene_graph --keep-stamps

Pacing (one of):
  default        the recorded spacing divided by --rate-scale; frames are re-stamped
                 `bag stamp + offset` with the offset fixed at start, so stamps are "now" while the
                 recorded spacing is kept (the offset maps every output back to its recorded frame);
  --interval-ms  every N ms, stamped with the current time (max throughput: far faster than the node);
  --paced-by     the next frame only after the output of the previous one (a message with its
                 stamp) arrived on that topic: back to back, and nothing is dropped by the node.
--keep-stamps publishes the recorded headers unchanged (outputs then carry the bag's stamps, as
`casseg-replay` writes them). Before the first frame the player waits until a reader is matched to
its publisher (and a subscriber exists on each --wait-subscribers topic, and the --paced-by
publisher is matched): readiness from the ROS graph. --info-file gets the offset and, at the end,
the counts and the last stamp published (JSON).

Like a camera driver, the player publishes with every image the bag's camera_info and registered
depth image of that frame (the messages next to the image topic in the bag, e.g.
/camera/camera_info and /camera/depth/image_raw for /camera/image_raw, paired by header stamp),
all three with the image's (re-)stamp, on the topics next to --topic (`camera_siblings`) unless
--camera-info-topic / --depth-topic name others ("" = do not publish it). They are published
just before their image, so a consumer pairing by stamp never waits for them. Before the first
frame the player also waits until each of them is matched to every subscriber the graph shows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from casseg_ros.fileio import atomic_write_text
from casseg_ros.processes.children import StopFlag, init_child_rclpy
from casseg_ros.processes.readiness import ReadinessTimeout, StampLog, wait_for, wait_for_matched_publishers, \
    wait_for_matched_subscriptions
from casseg_ros.replay.bag import CAMERA_INFO_TYPE, IMAGE_TYPE, IMAGE_TYPES, BagError, find_connection, \
    header_stamp_of, open_reader
from casseg_ros.ros.topics import OUTPUTS, camera_siblings

# Longest wait for the consumer's camera_info / depth readers to match (see _play).
COMPANION_MATCH_S = 10.0
# Output topics a player can be paced by, by their last path element.
PACING_TYPES = {name: OUTPUTS[name].msg_type for name in ("scene_graph", "mask", "overlay", "confidence")}


@dataclass
class Recording:
    """The camera frames of a bag: deserialised messages and their recorded stamps (ns), and per
    frame the bag's camera_info and depth image with the same stamp (None where it has none)."""

    messages: list[Any]
    stamps_ns: np.ndarray
    msg_class: type
    camera_infos: list[CameraInfo | None]
    depths: list[Image | None]

    @property
    def period_ns(self) -> int:
        return int(np.median(np.diff(self.stamps_ns))) if len(self.stamps_ns) > 1 else 100_000_000

    @property
    def span_ns(self) -> int:
        """One loop of the bag: first to last frame plus one period."""
        return int(self.stamps_ns[-1] - self.stamps_ns[0]) + self.period_ns


def _connection(reader: Any, topic: str, msgtype: str) -> Any | None:
    """The bag's connection on `topic` with `msgtype`, or None."""
    return next((c for c in reader.connections if c.topic == topic and c.msgtype == msgtype), None)


def load_frames(bag: Path, image_topic: str | None, max_frames: int | None = None) -> Recording:
    reader = open_reader(bag)
    try:
        conn = find_connection(reader, image_topic, IMAGE_TYPES, "image")
        info_topic, depth_topic = camera_siblings(conn.topic)
        companions = {c.id: c for c in (_connection(reader, info_topic, CAMERA_INFO_TYPE),
                                        _connection(reader, depth_topic, IMAGE_TYPE)) if c}
        frames: list[tuple[int, bytes]] = []
        by_stamp: dict[str, dict[int, bytes]] = {CAMERA_INFO_TYPE: {}, IMAGE_TYPE: {}}
        for c, _, raw in reader.messages(connections=[conn, *companions.values()]):
            raw = bytes(raw)
            if c.id in companions:
                by_stamp[c.msgtype][header_stamp_of(raw, c.msgtype)] = raw
                continue
            if max_frames and len(frames) >= max_frames:
                break  # (a companion recorded after the last image is not needed)
            frames.append((header_stamp_of(raw, conn.msgtype), raw))
    finally:
        reader.close()
    msg_class = Image if conn.msgtype == IMAGE_TYPE else CompressedImage

    def companion(stamp: int, msgtype: str, cls: type) -> Any | None:
        raw = by_stamp[msgtype].get(stamp)
        return deserialize_message(raw, cls) if raw is not None else None

    return Recording([deserialize_message(raw, msg_class) for _, raw in frames],
                     np.array([s for s, _ in frames], dtype=np.int64), msg_class,
                     [companion(s, CAMERA_INFO_TYPE, CameraInfo) for s, _ in frames],
                     [companion(s, IMAGE_TYPE, Image) for s, _ in frames])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m casseg_ros.replay.live.player", description=__doc__.splitlines()[0])
    p.add_argument("--bag", type=Path, required=True)
    p.add_argument("--image-topic", default=None, help="topic in the bag (default: the only image topic)")
    p.add_argument("--topic", required=True, help="topic to publish on")
    p.add_argument("--camera-info-topic", default=None,
                   help="where the bag's camera_info goes (default: next to --topic; \"\" = not published)")
    p.add_argument("--depth-topic", default=None,
                   help="where the bag's registered depth goes (default: next to --topic; \"\" = not published)")
    p.add_argument("--name", default=None, help="ROS node name (default casseg_player_<pid>)")
    pacing = p.add_mutually_exclusive_group()
    pacing.add_argument("--rate-scale", type=float, default=1.0, help="playback speed at the recorded spacing")
    pacing.add_argument("--interval-ms", type=float, default=None, help="publish every N ms, stamped now")
    pacing.add_argument("--paced-by", default=None, metavar="OUTPUT_TOPIC",
                        help="publish the next frame once the node's output for this one arrived there "
                             f"(a topic ending in one of {sorted(PACING_TYPES)})")
    p.add_argument("--output-timeout", type=float, default=60.0,
                   help="--paced-by: seconds to wait for one frame's output before going on without it")
    p.add_argument("--keep-stamps", action="store_true", help="publish the recorded headers unchanged")
    p.add_argument("--reliability", choices=("best_effort", "reliable"), default="best_effort",
                   help="best_effort = SensorData QoS, as camera drivers publish")
    p.add_argument("--loop-frames", type=int, default=0, help="publish this many frames, looping the bag")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--info-file", type=Path, default=None)
    p.add_argument("--wait-subscribers", default="", help="comma-separated topics that must have a subscriber "
                                                          "before the first frame (besides --topic)")
    p.add_argument("--wait-timeout", type=float, default=120.0)
    return p


def _qos(reliability: str) -> QoSProfile:
    if reliability == "reliable":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=qos_profile_sensor_data.durability)
    return qos_profile_sensor_data


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.keep_stamps and a.loop_frames:
        print("player: error: --keep-stamps with --loop-frames would publish one stamp twice", file=sys.stderr)
        return 2
    if a.paced_by and a.paced_by.rstrip("/").rsplit("/", 1)[-1] not in PACING_TYPES:
        print(f"player: error: --paced-by must end in one of {sorted(PACING_TYPES)}", file=sys.stderr)
        return 2
    try:
        rec = load_frames(a.bag, a.image_topic, a.max_frames)
    except BagError as exc:
        print(f"player: error: {exc}", file=sys.stderr)
        return 1
    if not rec.messages:
        print(f"player: error: no frames in {a.bag}", file=sys.stderr)
        return 1

    stop = StopFlag()
    init_child_rclpy()
    node = rclpy.create_node(a.name or f"casseg_player_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)  # delivers the --paced-by outputs
    spinner.start()
    try:
        return _play(a, rec, node, stop)
    except ReadinessTimeout as exc:
        print(f"player: error: {exc}", file=sys.stderr)
        return 1
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)  # spin has returned before the node and context go away
        node.destroy_node()
        rclpy.try_shutdown()


def _companion_publishers(a: argparse.Namespace, rec: Recording, node: Any, qos: QoSProfile) -> dict[str, Any]:
    """{"camera_info" | "depth": publisher} for what the bag has and the options do not switch off."""
    info_topic, depth_topic = camera_siblings(a.topic)
    topics = {"camera_info": (CameraInfo, a.camera_info_topic if a.camera_info_topic is not None else info_topic,
                              rec.camera_infos),
              "depth": (Image, a.depth_topic if a.depth_topic is not None else depth_topic, rec.depths)}
    return {name: node.create_publisher(cls, topic, qos) for name, (cls, topic, messages) in topics.items()
            if topic and any(m is not None for m in messages)}


def _play(a: argparse.Namespace, rec: Recording, node: Any, stop: StopFlag) -> int:
    pub = node.create_publisher(rec.msg_class, a.topic, _qos(a.reliability))
    companions = _companion_publishers(a, rec, node, _qos(a.reliability))
    outputs = None
    if a.paced_by:
        outputs = StampLog(node, a.paced_by, PACING_TYPES[a.paced_by.rstrip("/").rsplit("/", 1)[-1]])

    def interrupted() -> None:
        if stop.stop:
            raise ReadinessTimeout("interrupted while waiting to start")

    wait_for_matched_subscriptions(pub, a.wait_timeout, alive=interrupted)
    for topic in filter(None, a.wait_subscribers.split(",")):
        wait_for(lambda: node.count_subscribers(topic) > 0, a.wait_timeout, f"a subscriber on {topic}", interrupted)
    for companion in companions.values():
        # The node subscribes to camera_info and depth together with the image, but discovery of
        # those readers may lag the image's: a depth sent before its reader matched is lost. Wait
        # (bounded: a consumer that takes no depth must not stall the player).
        try:
            wait_for_matched_subscriptions(companion, min(a.wait_timeout, COMPANION_MATCH_S), alive=interrupted)
        except ReadinessTimeout:
            if stop.stop:
                raise
    if outputs is not None:
        wait_for_matched_publishers(outputs.subscription, a.wait_timeout, alive=interrupted)

    total = a.loop_frames or len(rec.messages)
    first = int(rec.stamps_ns[0])
    t0_ns = time.time_ns()
    info: dict[str, Any] = {"offset_ns": 0 if a.keep_stamps else t0_ns - first, "first_stamp_ns": first,
                            "t0_ns": t0_ns, "rate_scale": a.rate_scale, "span_ns": rec.span_ns,
                            "frames_in_bag": len(rec.messages), "keep_stamps": a.keep_stamps,
                            "companions": {name: p.topic_name for name, p in companions.items()},
                            "pacing": "output" if a.paced_by else ("interval" if a.interval_ms else "recorded")}
    if a.info_file:
        # At rate_scale 1, published stamp = recorded stamp + offset_ns (how outputs map back to frames).
        atomic_write_text(a.info_file, json.dumps(info))
    extras = "".join(f" + {name} on {p.topic_name}" for name, p in companions.items())
    print(f"player: publishing {total} frames on {a.topic}{extras} ({info['pacing']} pacing)", flush=True)
    published, without_output, last_stamp = 0, 0, None
    t_mono0 = time.monotonic()
    for k in range(total):
        if stop.stop:
            break
        i, loop = k % len(rec.messages), k // len(rec.messages)
        recorded = int(rec.stamps_ns[i])
        if a.keep_stamps:
            stamp = recorded
        elif a.interval_ms is not None or a.paced_by:
            stamp = time.time_ns()  # unique and "now" without the recorded pacing
        else:
            # Recorded spacing divided by rate_scale, so stamps stay "now" at any playback speed.
            stamp = t0_ns + int((recorded - first + loop * rec.span_ns) / a.rate_scale)
        if a.interval_ms is not None:
            time.sleep(a.interval_ms / 1000.0)
        elif not a.paced_by:
            delay = (stamp - t0_ns) / 1e9 - (time.monotonic() - t_mono0)
            if delay > 0:
                time.sleep(delay)
        sec_nsec = divmod(stamp, 1_000_000_000)
        # A camera driver stamps the image, its camera_info and depth alike; those two go first,
        # so a consumer that pairs by stamp has them when the image arrives.
        for name, companion in companions.items():
            extra = (rec.camera_infos if name == "camera_info" else rec.depths)[i]
            if extra is not None:
                extra.header.stamp.sec, extra.header.stamp.nanosec = sec_nsec
                companion.publish(extra)
        msg = rec.messages[i]
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec_nsec
        pub.publish(msg)
        published, last_stamp = published + 1, stamp
        if outputs is not None and not outputs.wait_for_stamp(stamp, a.output_timeout):
            without_output += 1
            print(f"player: no output on {a.paced_by} for frame {k} after {a.output_timeout:g} s", flush=True)
    elapsed = time.monotonic() - t_mono0
    if a.reliability == "reliable":
        for publisher in (*companions.values(), pub):  # the last frames reach the node before we leave
            publisher.wait_for_all_acked(Duration(seconds=5))
    print(f"player: published {published} frames in {elapsed:.2f} s", flush=True)
    if a.info_file:
        info.update(published=published, elapsed_s=elapsed, last_stamp_ns=last_stamp,
                    frames_without_output=without_output if outputs is not None else None)
        atomic_write_text(a.info_file, json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
