#!/usr/bin/env python3
"""Generate the demo recording data/demo.mcap from procedural context-scenes frames.

Deterministic: same arguments -> byte-identical file (fixed stamps, seeded scenes, no wall-clock
time anywhere; rosbags' mcap writer stores only what it is given). The scenes come from a seed
stream disjoint from the training (seed 0) and validation (seed 1_000_003) splits, so the demo
evaluates the model on frames it was not trained on.

Topics (all stamped with one header per frame, 10 Hz):
  /camera/image_raw   sensor_msgs/Image rgb8       the camera
  /camera/labels      sensor_msgs/Image mono8      ground-truth class ids (255 = ignore)
  /camera/label_info  vision_msgs/LabelInfo        names of those ids (one message, first)

Usage: python scripts/make_demo_bag.py [--out data/demo.mcap] [--frames 100] [--height 128 --width 256]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from rosbags.rosbag2 import Writer  # noqa: E402
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin  # noqa: E402

from casseg_ros.replay.bag import IMAGE_TYPE, LABEL_INFO_TYPE, typestore  # noqa: E402
from training.datasets.context_scenes import CONTEXT_CLASSES, ContextScenes  # noqa: E402

DEMO_SEED = 20_251_125
START_STAMP_NS = 1_764_000_000 * 1_000_000_000  # fixed epoch: 2025-11-24T16:00:00Z
IMAGE_TOPIC = "/camera/image_raw"
LABEL_TOPIC = "/camera/labels"
LABEL_INFO_TOPIC = "/camera/label_info"
FRAME_ID = "camera_optical_frame"


def build(out: Path, frames: int, height: int, width: int, rate_hz: float) -> Path:
    store = typestore()
    T = store.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    Image, LabelInfo, VisionClass = T[IMAGE_TYPE], T[LABEL_INFO_TYPE], T["vision_msgs/msg/VisionClass"]
    dataset = ContextScenes(num_samples=frames, height=height, width=width, seed=DEMO_SEED)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".demo_bag.", dir=out.parent))
    try:
        writer = Writer(tmpdir / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
        # zstd-compressed mcap chunks (readable by rosbags and the mcap reader): labels shrink ~50x.
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        with writer:
            info_conn = writer.add_connection(LABEL_INFO_TOPIC, LABEL_INFO_TYPE, typestore=store)
            img_conn = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=store)
            lab_conn = writer.add_connection(LABEL_TOPIC, IMAGE_TYPE, typestore=store)
            period_ns = int(round(1e9 / rate_hz))

            def header(t_ns: int):
                return Header(stamp=Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000), frame_id=FRAME_ID)

            class_map = [VisionClass(class_id=i, class_name=n) for i, n in enumerate(CONTEXT_CLASSES)]
            info = LabelInfo(header=header(START_STAMP_NS), class_map=class_map, threshold=0.0)
            writer.write(info_conn, START_STAMP_NS, store.serialize_cdr(info, LABEL_INFO_TYPE))
            for i in range(frames):
                scene = dataset.generate(i)
                t_ns = START_STAMP_NS + i * period_ns
                h = header(t_ns)
                img = Image(header=h, height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                            data=np.ascontiguousarray(scene.image).reshape(-1))
                lab = Image(header=h, height=height, width=width, encoding="mono8", is_bigendian=0, step=width,
                            data=np.ascontiguousarray(scene.label).reshape(-1))
                writer.write(img_conn, t_ns, store.serialize_cdr(img, IMAGE_TYPE))
                writer.write(lab_conn, t_ns, store.serialize_cdr(lab, IMAGE_TYPE))
        produced = tmpdir / "bag" / "bag.mcap"
        os.replace(produced, out)  # a single .mcap file: rosbags, the mcap CLI/reader and ros2 bag read it
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "data" / "demo.mcap")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--rate", type=float, default=10.0, help="recorded frame rate [Hz]")
    a = p.parse_args(argv)
    path = build(a.out, a.frames, a.height, a.width, a.rate)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {a.frames} frames {a.width}x{a.height} @ {a.rate} Hz), "
          f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
