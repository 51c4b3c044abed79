"""Bags and checkpoints for the replay/demo tests: tiny random model, small generated recordings."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_demo_bag_module():
    spec = importlib.util.spec_from_file_location("make_demo_bag", REPO / "scripts" / "make_demo_bag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_context_checkpoint(path: Path) -> Path:
    """Random tiny model whose vocabulary is the context-scenes classes (labels map by name)."""
    import torch

    from casseg_ros.model import ContextSegmentor, ModelConfig
    from casseg_ros.model.checkpoint import save_checkpoint
    from casseg_ros.text import Vocabulary
    from model_factory import TINY
    from training.datasets.context_scenes import CONTEXT_CLASSES

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((len(CONTEXT_CLASSES), 384)).astype(np.float32)
    torch.manual_seed(0)
    model = ContextSegmentor(ModelConfig(**TINY), Vocabulary(names=CONTEXT_CLASSES, embeddings=emb, provider="test"))
    save_checkpoint(path, model.eval())
    return path


def write_bag(path: Path, messages: list[tuple[str, str, object | bytes]], storage: str = "mcap") -> Path:
    """messages: (topic, msgtype, rosbags message or raw CDR bytes), stamped 10 Hz in order given."""
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import StoragePlugin

    from casseg_ros.replay.bag import typestore

    store = typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for i, (topic, msgtype, msg) in enumerate(messages):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            raw = msg if isinstance(msg, bytes) else store.serialize_cdr(msg, msgtype)
            writer.write(conns[topic], 1_000_000_000 + i * 100_000_000, raw)
    return path


def ros_image(stamp_ns: int, pixels: np.ndarray | None = None, encoding: str = "rgb8", **override):
    from casseg_ros.replay.bag import typestore

    T = typestore().types
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                                      frame_id="cam")
    pixels = np.zeros((0, 0, 3), np.uint8) if pixels is None else pixels
    h, w = pixels.shape[:2]
    fields = dict(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                  step=pixels.strides[0] if pixels.size else 0, data=np.ascontiguousarray(pixels).reshape(-1).view(np.uint8))
    fields.update(override)
    return T["sensor_msgs/msg/Image"](**fields)


def ros_compressed(stamp_ns: int, data: bytes, fmt: str = "jpeg"):
    from casseg_ros.replay.bag import typestore

    T = typestore().types
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                                      frame_id="cam")
    return T["sensor_msgs/msg/CompressedImage"](header=header, format=fmt, data=np.frombuffer(data, np.uint8))


def scene_pixels(seed: int = 0, h: int = 48, w: int = 96) -> tuple[np.ndarray, np.ndarray]:
    from training.datasets.context_scenes import ContextScenes

    s = ContextScenes(4, height=h, width=w, seed=seed).generate(seed % 4)
    return s.image, s.label


def jpeg(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))[1].tobytes()


def png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))[1].tobytes()
