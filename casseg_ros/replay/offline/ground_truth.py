"""The ground truth of a recording: its label topic, its class names, and each frame scored.

A bag may carry a ground-truth class-id topic (mono8/mono16, e.g. `/camera/labels`) and a
vision_msgs/LabelInfo naming its ids. Ids are mapped to the model's by class name, so a bag
labelled with another numbering scores correctly; classes the model lacks are ignored (255).
"""
from __future__ import annotations

import cv2
import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from casseg_ros.replay.bag import IMAGE_TYPE, LABEL_INFO_TYPE, BagFrame, typestore
from casseg_ros.replay.metrics import IoUEvaluator, InvalidLabel, ReplayStats, label_to_ids


def gt_mapping(gt_names: list[str], model_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """LUT ground-truth id -> model id by class name (255 where the model lacks the class)."""
    index = {n: i for i, n in enumerate(model_names)}
    lut = np.full(max(len(gt_names), 1), 255, dtype=np.int64)
    missing = []
    for i, name in enumerate(gt_names):
        if name in index:
            lut[i] = index[name]
        else:
            missing.append(name)
    return lut, missing


def auto_label_topic(reader, image_topic: str) -> str | None:
    """The bag's only other Image topic with "label" in its name, if there is exactly one."""
    candidates = [c.topic for c in reader.connections
                  if c.msgtype == IMAGE_TYPE and c.topic != image_topic and "label" in c.topic.lower()]
    return candidates[0] if len(candidates) == 1 else None


def at_size(ids: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An id image (labels, instances) at the prediction's size (output_resolution: model): nearest,
    so no id is invented; unchanged when the sizes agree."""
    if ids.shape == tuple(shape):
        return ids
    return cv2.resize(ids.astype(np.int32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(ids.dtype)


def auto_instance_topic(reader, image_topic: str) -> str | None:
    """The bag's only other Image topic with "instance" in its name (ground-truth instance ids), if one."""
    candidates = [c.topic for c in reader.connections
                  if c.msgtype == IMAGE_TYPE and c.topic != image_topic and "instance" in c.topic.lower()]
    return candidates[0] if len(candidates) == 1 else None


def ground_truth_names(reader) -> list[str] | None:
    """Class names of the ground truth from a vision_msgs/LabelInfo topic in the bag, if one exists."""
    conns = [c for c in reader.connections if c.msgtype == LABEL_INFO_TYPE]
    if len(conns) != 1:
        return None
    for _, _, raw in reader.messages(connections=conns):
        msg = typestore().deserialize_cdr(raw, LABEL_INFO_TYPE)
        by_id = {int(c.class_id): str(c.class_name) for c in msg.class_map}
        return [by_id.get(i, f"<unnamed {i}>") for i in range(max(by_id) + 1)] if by_id else None
    return None


class GroundTruth:
    """Scores each frame's argmax against the bag's label topic (ids mapped by class name)."""

    def __init__(self, model_names: list[str], gt_names: list[str] | None, stats: ReplayStats):
        self.lut, self.missing = gt_mapping(gt_names, model_names) if gt_names else (None, [])
        self.iou = IoUEvaluator(model_names, self.lut)
        self.stats = stats

    def update(self, frame: BagFrame, class_ids: np.ndarray) -> np.ndarray | None:
        """Ground-truth ids of the frame (None when it has no usable label); counted in the IoU."""
        if frame.label_raw is None:
            self.stats.label_notes[frame.label_note or "no label"] += 1
            return None
        try:
            gt = at_size(label_to_ids(deserialize_message(frame.label_raw, Image)), class_ids.shape)
            self.iou.update(class_ids, gt)
        except InvalidLabel as exc:
            self.stats.label_notes[exc.reason] += 1
            return None
        except Exception as exc:  # noqa: BLE001 - malformed label CDR
            self.stats.label_notes[f"undecodable label message: {type(exc).__name__}"] += 1
            return None
        return gt

    def in_model_ids(self, gt: np.ndarray) -> np.ndarray:
        if self.lut is None:
            return gt.astype(np.int32)
        return np.where(gt < 255, self.lut[np.clip(gt, 0, len(self.lut) - 1)], 255).astype(np.int32)
