#!/usr/bin/env python3
"""Generate the demo recordings data/demo.mcap and data/demo_sequence.mcap from procedural context scenes.

Deterministic: same arguments -> byte-identical file (fixed stamps, seeded scenes, no wall-clock
time anywhere; rosbags' mcap writer stores only what it is given). The scenes come from a seed
stream disjoint from the training (seed 0) and validation (seed 1_000_003) splits, so the demo
evaluates the model on frames it was not trained on.

Topics (all stamped with one header per frame, 10 Hz):
  /camera/image_raw        sensor_msgs/Image rgb8       the camera
  /camera/camera_info      sensor_msgs/CameraInfo       its intrinsics (pinhole, no distortion)
  /camera/depth/image_raw  sensor_msgs/Image 16UC1      registered depth, millimetres, 0 = invalid
                                                        (sky, and beyond the 65.535 m of 16 bits)
  /camera/labels           sensor_msgs/Image mono8      ground-truth class ids (255 = ignore)
  /camera/label_info       vision_msgs/LabelInfo        names of those ids (one message, first)
  /camera/instances        sensor_msgs/Image mono16     ground-truth instance ids, 0 = none
                                                        (--sequence only: the same id for the same
                                                        object in every frame)
--sequence writes data/demo_sequence.mcap instead: one street scene seen by a panning camera whose
cars drive, pass (occluding each other), leave and enter (no people: the demo weights do not segment
them at this size)
(training/datasets/context_sequences.py), for the tracking metrics of casseg-replay.
The depth is the scenes' exact geometry (training/datasets/context_scenes.py: a camera over a
ground plane, objects standing on it, the skyline beyond, sky at infinity), rounded to the mm.

Usage: python scripts/make_demo_bag.py [--out data/demo.mcap] [--frames 100] [--height 128 --width 256]
       python scripts/make_demo_bag.py --sequence            # -> data/demo_sequence.mcap
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

from casseg_ros.replay.bag import CAMERA_INFO_TYPE, IMAGE_TYPE, LABEL_INFO_TYPE, typestore  # noqa: E402
from training.datasets.context_scenes import CONTEXT_CLASSES, ContextScenes, Scene, SceneCamera  # noqa: E402
from training.datasets.context_sequences import ContextSequence  # noqa: E402

DEMO_SEED = 20_251_125
SEQUENCE_SEED = 20_251_203
START_STAMP_NS = 1_764_000_000 * 1_000_000_000  # fixed epoch: 2025-11-24T16:00:00Z
IMAGE_TOPIC = "/camera/image_raw"
LABEL_TOPIC = "/camera/labels"
LABEL_INFO_TOPIC = "/camera/label_info"
CAMERA_INFO_TOPIC = "/camera/camera_info"
DEPTH_TOPIC = "/camera/depth/image_raw"
INSTANCE_TOPIC = "/camera/instances"
FRAME_ID = "camera_optical_frame"
DEPTH_LIMIT_MM = np.iinfo(np.uint16).max  # 16UC1: 65.535 m; farther (and the sky) is 0 = invalid


def depth_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """(H,W) metres, +inf for no depth -> 16UC1 millimetres (REP-118), 0 where invalid or out of range."""
    mm = np.rint(np.where(np.isfinite(depth_m), depth_m, 0.0) * 1000.0)
    return np.where((mm > 0) & (mm <= DEPTH_LIMIT_MM), mm, 0).astype("<u2")


def camera_info(store, header, camera: SceneCamera):
    """sensor_msgs/CameraInfo of the scenes' pinhole camera (rectified: no distortion, R = I)."""
    T = store.types
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    return T[CAMERA_INFO_TYPE](
        header=header, height=camera.height, width=camera.width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array(camera.k), r=np.eye(3).reshape(-1),
        p=np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def build(out: Path, frames: int, height: int, width: int, rate_hz: float, sequence: bool = False) -> Path:
    """The demo bag (independent scenes), or with `sequence` the moving sequence with its instance ids."""
    store = typestore()
    T = store.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    Image, LabelInfo, VisionClass = T[IMAGE_TYPE], T[LABEL_INFO_TYPE], T["vision_msgs/msg/VisionClass"]
    if sequence:
        # vehicles only: the demo weights do not segment people at this size (person IoU 0.1 %,
        # models/MODEL_CARD.md), so people would measure the segmentation, not the tracking
        moving = ContextSequence(frames=frames, height=height, width=width, seed=SEQUENCE_SEED, person_share=0.0,
                                 initial_objects=2, spawn_every=15)

        def scene_at(i: int) -> Scene:
            return moving.frame(i).scene
    else:
        scene_at = ContextScenes(num_samples=frames, height=height, width=width, seed=DEMO_SEED).generate

    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".demo_bag.", dir=out.parent))
    try:
        writer = Writer(tmpdir / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
        # zstd-compressed mcap chunks (readable by rosbags and the mcap reader): labels shrink ~50x.
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        with writer:
            info_conn = writer.add_connection(LABEL_INFO_TOPIC, LABEL_INFO_TYPE, typestore=store)
            img_conn = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=store)
            cam_conn = writer.add_connection(CAMERA_INFO_TOPIC, CAMERA_INFO_TYPE, typestore=store)
            depth_conn = writer.add_connection(DEPTH_TOPIC, IMAGE_TYPE, typestore=store)
            lab_conn = writer.add_connection(LABEL_TOPIC, IMAGE_TYPE, typestore=store)
            inst_conn = writer.add_connection(INSTANCE_TOPIC, IMAGE_TYPE, typestore=store) if sequence else None
            period_ns = int(round(1e9 / rate_hz))

            def header(t_ns: int):
                return Header(stamp=Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000), frame_id=FRAME_ID)

            class_map = [VisionClass(class_id=i, class_name=n) for i, n in enumerate(CONTEXT_CLASSES)]
            info = LabelInfo(header=header(START_STAMP_NS), class_map=class_map, threshold=0.0)
            writer.write(info_conn, START_STAMP_NS, store.serialize_cdr(info, LABEL_INFO_TYPE))
            for i in range(frames):
                scene = scene_at(i)
                t_ns = START_STAMP_NS + i * period_ns
                h = header(t_ns)
                img = Image(header=h, height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                            data=np.ascontiguousarray(scene.image).reshape(-1))
                lab = Image(header=h, height=height, width=width, encoding="mono8", is_bigendian=0, step=width,
                            data=np.ascontiguousarray(scene.label).reshape(-1))
                depth = Image(header=h, height=height, width=width, encoding="16UC1", is_bigendian=0, step=width * 2,
                              data=depth_millimetres(scene.depth).view(np.uint8).reshape(-1))
                writer.write(img_conn, t_ns, store.serialize_cdr(img, IMAGE_TYPE))
                writer.write(cam_conn, t_ns, store.serialize_cdr(camera_info(store, h, scene.camera), CAMERA_INFO_TYPE))
                writer.write(depth_conn, t_ns, store.serialize_cdr(depth, IMAGE_TYPE))
                writer.write(lab_conn, t_ns, store.serialize_cdr(lab, IMAGE_TYPE))
                if inst_conn is not None:
                    ids = Image(header=h, height=height, width=width, encoding="mono16", is_bigendian=0,
                                step=width * 2, data=scene.instance_map.astype("<u2").view(np.uint8).reshape(-1))
                    writer.write(inst_conn, t_ns, store.serialize_cdr(ids, IMAGE_TYPE))
        produced = tmpdir / "bag" / "bag.mcap"
        os.replace(produced, out)  # a single .mcap file: rosbags, the mcap CLI/reader and ros2 bag read it
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="default data/demo.mcap (--sequence: data/demo_sequence.mcap)")
    p.add_argument("--sequence", action="store_true", help="the moving sequence with ground-truth instance ids")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--rate", type=float, default=10.0, help="recorded frame rate [Hz]")
    a = p.parse_args(argv)
    out = a.out or REPO / "data" / ("demo_sequence.mcap" if a.sequence else "demo.mcap")
    path = build(out, a.frames, a.height, a.width, a.rate, a.sequence)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {a.frames} frames {a.width}x{a.height} @ {a.rate} Hz), "
          f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
