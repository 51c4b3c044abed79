"""A fake RGB-D camera process: image + camera_info + registered depth, identical stamps.

    PYTHONPATH=test python -m ros_helpers.rgbd_camera --ns /t123/camera --frames 5 [--bad-depth] [--compressed]

Publishes on <ns>/image_raw (or <ns>/image_raw/compressed), <ns>/camera_info and
<ns>/depth/image_raw. The depth of frame i is a fronto-parallel plane at `plane_depth(i)` metres
(16UC1 for even frames, 32FC1 for odd ones), with a band of invalid pixels (0 / NaN) at the top.
With --bad-depth each bad depth case is sent with a frame, followed by a good frame. Every
published frame prints `SENT <frame_id> <sec> <nanosec>` (the consumer's ground truth).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from casseg_ros.processes.readiness import ReadinessTimeout, wait_for_matched_subscriptions
from ros_helpers.camera import encode_compressed, encode_raw, finish, synthetic_scene

FX, FY = 120.0, 110.0
INVALID_ROWS = 4


def plane_depth(index: int) -> float:
    return 1.5 + 0.25 * index


def camera_info(width: int, height: int) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info.k = [FX, 0.0, cx, 0.0, FY, cy, 0.0, 0.0, 1.0]
    info.p = [FX, 0.0, cx, 0.0, 0.0, FY, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


def depth_image(metres: np.ndarray, encoding: str) -> Image:
    pixels = np.round(np.nan_to_num(metres, nan=0.0) * 1000).astype("<u2") if encoding == "16UC1" \
        else metres.astype("<f4")
    msg = Image(height=metres.shape[0], width=metres.shape[1], encoding=encoding, is_bigendian=0,
                step=metres.shape[1] * pixels.itemsize)
    msg.data = pixels.tobytes()
    return msg


def good_depth(index: int, height: int, width: int) -> Image:
    metres = np.full((height, width), plane_depth(index), np.float32)
    metres[:INVALID_ROWS] = np.nan
    return depth_image(metres, "16UC1" if index % 2 == 0 else "32FC1")


def bad_depths(height: int, width: int) -> list[tuple[str, Image | None]]:
    rgb8 = depth_image(np.ones((height, width), np.float32), "32FC1")
    rgb8.encoding = "rgb8"
    return [
        ("wrong_encoding", rgb8),
        ("size_mismatch", depth_image(np.ones((height // 2, width // 2), np.float32), "32FC1")),
        ("all_invalid", depth_image(np.full((height, width), np.nan, np.float32), "32FC1")),
        ("no_matching_stamp", None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ns", required=True, help="camera namespace, e.g. /t1/camera")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--period", type=float, default=0.5, help="seconds between frames (nothing dropped)")
    parser.add_argument("--bad-depth", action="store_true")
    parser.add_argument("--compressed", action="store_true", help="image on image_raw/compressed (png)")
    parser.add_argument("--wait-subscribers", type=float, default=30.0)
    args = parser.parse_args(argv)

    rclpy.init()
    node = rclpy.create_node("fake_rgbd_camera")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = (node.create_publisher(CompressedImage, f"{args.ns}/image_raw/compressed", qos) if args.compressed
                 else node.create_publisher(Image, f"{args.ns}/image_raw", qos))
    info_pub = node.create_publisher(CameraInfo, f"{args.ns}/camera_info", qos)
    depth_pub = node.create_publisher(Image, f"{args.ns}/depth/image_raw", qos)
    try:
        for pub in (image_pub, info_pub, depth_pub):
            wait_for_matched_subscriptions(pub, args.wait_subscribers)
    except ReadinessTimeout:
        print("NO_SUBSCRIBER", flush=True)
        return 3
    info = camera_info(args.width, args.height)

    def send(index: int, frame_id: str, depth: Image | None) -> None:
        stamp = node.get_clock().now().to_msg()
        rgb = synthetic_scene(args.height, args.width, index)
        image = encode_compressed(rgb, "png") if args.compressed else encode_raw(rgb, "rgb8")
        for msg in (info, depth):
            if msg is not None:
                msg.header.stamp, msg.header.frame_id = stamp, frame_id
        # camera_info and depth first, as a driver usually sends them with (or before) the image.
        info_pub.publish(info)
        if depth is not None:
            depth_pub.publish(depth)
        image.header.stamp, image.header.frame_id = stamp, frame_id
        image_pub.publish(image)
        print(f"SENT {frame_id} {stamp.sec} {stamp.nanosec}", flush=True)
        time.sleep(args.period)

    index = 0
    for _ in range(args.frames):
        send(index, f"good_{index}", good_depth(index, args.height, args.width))
        index += 1
    if args.bad_depth:
        for case, depth in bad_depths(args.height, args.width):
            send(index, f"bad_{case}", depth)
            index += 1
            send(index, f"good_after_{case}", good_depth(index, args.height, args.width))
            index += 1
    finish(node, (image_pub, info_pub, depth_pub))
    return 0


if __name__ == "__main__":
    sys.exit(main())
