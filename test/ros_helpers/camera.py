"""A fake camera process: publishes real frames over DDS, like a camera driver would.

Every published frame is announced on stdout as `SENT <kind> <frame_id> <sec> <nanosec>` once it
is handed to DDS, so the test knows the exact headers to expect back from the node.

Modes:
  --encodings rgb8,bgr8,...   raw sensor_msgs/Image frames, --frames-per-encoding of each
  --compressed jpeg,png       sensor_msgs/CompressedImage frames (topic <topic>/compressed)
  --bad raw|compressed        each malformed message of that kind, then a good frame whose
                              frame_id is `good_after_<case>`
  --duration S                keep publishing rgb8 for S seconds (benchmarks, rate tests)
Frames are a deterministic synthetic scene (sky gradient, road, coloured boxes that move), so
consecutive frames differ and the model sees structure.
"""
from __future__ import annotations

import argparse
import array
import sys
import time

import cv2
import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from casseg_ros.processes.readiness import ReadinessTimeout, wait_for_matched_subscriptions


def synthetic_scene(height: int, width: int, index: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB: sky gradient, grey road, two boxes moving with `index`."""
    img = np.empty((height, width, 3), np.uint8)
    rows = np.linspace(0, 1, height // 2, dtype=np.float32)[:, None]
    img[: height // 2] = (np.stack([120 + 80 * rows, 160 + 60 * rows, 235 + 0 * rows], -1)).astype(np.uint8)
    img[height // 2:] = (90, 90, 95)
    bw, bh = max(width // 6, 2), max(height // 4, 2)
    x = (index * 3) % max(width - bw, 1)
    img[height // 2 - bh // 2: height // 2 + bh // 2, x: x + bw] = (200, 30, 40)
    img[height - bh - 1: height - 1, width - x - bw: width - x] = (30, 160, 60)
    return img


def encode_raw(rgb: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = rgb.shape[:2]
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[..., ::-1]
    elif encoding == "rgba8":
        pixels = np.dstack([rgb, np.full((h, w), 255, np.uint8)])
    elif encoding == "bgra8":
        pixels = np.dstack([rgb[..., ::-1], np.full((h, w), 255, np.uint8)])
    elif encoding == "mono8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif encoding == "mono16":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype("<u2") * 257
    else:
        raise ValueError(encoding)
    rows = np.ascontiguousarray(pixels).reshape(h, -1).view(np.uint8)
    if pad:
        rows = np.hstack([rows, np.zeros((h, pad), np.uint8)])
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=rows.shape[1])
    msg.data = array.array("B", rows.tobytes())
    return msg


def encode_compressed(rgb: np.ndarray, fmt: str) -> CompressedImage:
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8")
    msg.data = array.array("B", buf.tobytes())
    return msg


def bad_raw_frames(h: int, w: int) -> list[tuple[str, Image]]:
    good = encode_raw(synthetic_scene(h, w, 0), "rgb8")

    def variant(**fields) -> Image:
        msg = Image(height=good.height, width=good.width, encoding=good.encoding, step=good.step, data=good.data)
        for key, value in fields.items():
            setattr(msg, key, value)
        return msg

    return [
        ("unsupported_encoding", variant(encoding="yuv422")),
        ("step_too_small", variant(step=w * 3 - 3)),
        ("data_too_short", variant(data=good.data[: len(good.data) - w * 3])),
        ("truncated_data", variant(data=good.data[: len(good.data) // 2])),
        ("zero_size", Image(height=0, width=0, encoding="rgb8", step=0)),
        ("absurd_size", variant(height=200_000, width=200_000, step=600_000)),
    ]


def bad_compressed_frames(h: int, w: int) -> list[tuple[str, CompressedImage]]:
    rgb = synthetic_scene(h, w, 0)
    jpeg, png = encode_compressed(rgb, "jpeg"), encode_compressed(rgb, "png")
    corrupt_png = bytearray(png.data)
    corrupt_png[len(corrupt_png) // 2: len(corrupt_png) // 2 + 32] = bytes(32)
    return [
        ("truncated_jpeg", CompressedImage(format="jpeg", data=jpeg.data[: len(jpeg.data) // 2])),
        ("truncated_png", CompressedImage(format="png", data=png.data[: len(png.data) // 2])),
        ("corrupt_png", CompressedImage(format="png", data=array.array("B", bytes(corrupt_png)))),
        ("not_an_image", CompressedImage(format="jpeg", data=array.array("B", b"hello camera" * 20))),
        ("empty", CompressedImage(format="jpeg")),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True, help="raw image topic; compressed goes to <topic>/compressed")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--encodings", default="")
    parser.add_argument("--compressed", default="")
    parser.add_argument("--frames-per-encoding", type=int, default=10)
    parser.add_argument("--bad", choices=("raw", "compressed"))
    parser.add_argument("--bad-gap", type=float, default=0.4, help="seconds between a bad and the next good frame")
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--pad", type=int, default=0, help="row padding bytes for raw frames")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--wait-subscribers", type=float, default=20.0)
    args = parser.parse_args(argv)

    rclpy.init()
    node = rclpy.create_node("fake_camera")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=(
        ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT))
    raw_pub = node.create_publisher(Image, args.topic, qos)
    compressed_pub = node.create_publisher(CompressedImage, args.topic + "/compressed", qos)
    want = compressed_pub if (args.compressed or args.bad == "compressed") else raw_pub
    try:  # a reader matched to our writer: what we publish from now on reaches it
        wait_for_matched_subscriptions(want, args.wait_subscribers)
    except ReadinessTimeout:
        print("NO_SUBSCRIBER", flush=True)
        return 3
    period = 1.0 / args.rate
    index = 0

    def send(msg, kind: str, frame_id: str) -> None:
        stamp = node.get_clock().now().to_msg()
        msg.header.stamp, msg.header.frame_id = stamp, frame_id
        (compressed_pub if kind == "compressed" else raw_pub).publish(msg)
        print(f"SENT {kind} {frame_id} {stamp.sec} {stamp.nanosec}", flush=True)

    next_time = time.monotonic()

    def pace(seconds: float) -> None:
        nonlocal next_time
        next_time += seconds
        delay = next_time - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:  # late: do not try to catch up with a burst
            next_time = time.monotonic()

    for encoding in filter(None, args.encodings.split(",")):
        for _ in range(args.frames_per_encoding):
            send(encode_raw(synthetic_scene(args.height, args.width, index), encoding, args.pad), "raw", f"cam_{encoding}")
            index += 1
            pace(period)
    for fmt in filter(None, args.compressed.split(",")):
        for _ in range(args.frames_per_encoding):
            send(encode_compressed(synthetic_scene(args.height, args.width, index), fmt), "compressed", f"cam_{fmt}")
            index += 1
            pace(period)
    if args.bad:
        cases = bad_raw_frames(args.height, args.width) if args.bad == "raw" else bad_compressed_frames(args.height, args.width)
        for case, bad in cases:
            send(bad, args.bad, f"bad_{case}")
            pace(args.bad_gap)
            rgb = synthetic_scene(args.height, args.width, index)
            good = encode_raw(rgb, "rgb8") if args.bad == "raw" else encode_compressed(rgb, "png")
            send(good, args.bad, f"good_after_{case}")
            index += 1
            pace(args.bad_gap)
    if args.duration > 0:
        # Encoded once, sent in a loop: a camera driver does not spend CPU drawing its frames, and
        # on a loaded machine drawing 512x1024 frames would cap the rate below the one asked for.
        frames = [encode_raw(synthetic_scene(args.height, args.width, i), "rgb8") for i in range(16)]
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            send(frames[index % len(frames)], "raw", "cam_stream")
            index += 1
            pace(period)
    finish(node, (raw_pub, compressed_pub) if args.reliability == "reliable" else ())
    return 0


def finish(node, reliable_publishers) -> None:
    """A camera process's end: its reliable publishers' last frames delivered before the
    participant goes away, then shut down and say DONE (what the tests wait for)."""
    for publisher in reliable_publishers:
        publisher.wait_for_all_acked(Duration(seconds=5))
    node.destroy_node()
    rclpy.shutdown()
    print("DONE", flush=True)


if __name__ == "__main__":
    sys.exit(main())
