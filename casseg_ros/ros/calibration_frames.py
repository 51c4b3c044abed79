"""Calibration frames for int8 and precision auto: a folder of images, or the camera topic of a bag.

A bag is read with the project's rosbag2 reader (``casseg_ros.replay.bag``) and every message is
decoded by the node's own decoder (``casseg_ros.ros.conversions.to_rgb``, after the rclpy
deserialiser), so calibration sees exactly the frames the node would see. Frames the node would
reject (bad encoding, corrupt JPEG...) are skipped, as the node skips them.

In the ROS layer, not the ROS-free runtime: it needs rclpy's deserialiser and the message classes.
``casseg-export --int8`` reads its frames here; the node's and ``casseg-replay``'s ``calibration``
setting becomes a backend's options through ``calibration_options`` (read only when needed).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from casseg_ros.replay.bag import COMPRESSED_TYPE, IMAGE_TYPES, BagError, FrameStream, find_connection, open_reader
from casseg_ros.ros.conversions import InvalidImage, to_rgb

__all__ = ["IMAGE_SUFFIXES", "BagError", "bag_frames", "calibration_frames", "calibration_options", "folder_frames"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def folder_frames(folder: str | os.PathLike) -> Iterator[np.ndarray]:
    """RGB frames of the images in ``folder`` (sorted by name; not recursive)."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:  # an unreadable file is skipped, like a frame the node rejects
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def bag_frames(bag: str | os.PathLike, topic: str | None = None) -> tuple[Iterator[np.ndarray], str]:
    """(RGB frames of the bag's image topic, that topic's name). ``topic`` None: the bag's only
    camera topic (a ``*label*`` topic is ground truth, not camera). Raises BagError for a bag with
    no image topic at all, naming the topics it has."""
    reader = open_reader(bag)
    if not any(c.msgtype in IMAGE_TYPES for c in reader.connections):
        listing = ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections) or "none"
        reader.close()
        raise BagError(f"bag {bag} has no image topic ({' or '.join(IMAGE_TYPES)}) to calibrate on "
                       f"(topics: {listing})")
    try:
        conn = find_connection(reader, topic, IMAGE_TYPES, "image")
    except BagError:
        reader.close()
        raise
    msg_class = CompressedImage if conn.msgtype == COMPRESSED_TYPE else Image

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in FrameStream(reader, conn):
                try:
                    yield to_rgb(deserialize_message(frame.raw, msg_class))
                except InvalidImage:
                    continue
                except Exception:  # noqa: BLE001 - rclpy raises RMWError for malformed CDR; skipped as replay does
                    continue
        finally:
            reader.close()

    return frames(), conn.topic


def calibration_frames(path: str | os.PathLike, topic: str | None = None) -> tuple[Iterator[np.ndarray], str]:
    """(frames, source description for the model's metadata) for a folder of images or a bag
    (a rosbag2 directory, which has a metadata.yaml, or an .mcap / .db3 file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"calibration data not found: {path}")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        if topic:
            raise ValueError(f"--calibration-topic applies to a bag; {path} is a folder of images")
        return folder_frames(path), f"{path} (images)"
    frames, used_topic = bag_frames(path, topic)
    return frames, f"{path}:{used_topic}"


def calibration_options(path: str | os.PathLike) -> dict[str, Any]:
    """A backend's ``calibration`` options (``create_backend``, ``pipeline.start_backend``) for the
    frames of ``path`` (a bag or a folder of images): read only when the backend needs them (int8
    not cached yet, precision auto not recorded yet); ``calibration_source`` names them in the cache key."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"calibration data not found: {path}")
    return {"calibration": functools.partial(calibration_frames, path), "calibration_source": str(path.resolve())}
