"""The published class mask: encoding, the "unknown" id and the confidence threshold rule.

One definition for the node and the replay tool, so offline numbers describe what the node
publishes. LabelInfo.msg documents the unknown id.
"""
from __future__ import annotations

import numpy as np

from casseg_ros.message_buffers import message_array

UNKNOWN_MONO8 = 255
UNKNOWN_MONO16 = 65535


def mask_encoding_for(num_classes: int) -> str:
    """Up to 255 classes (ids 0..254) fit mono8 beside 255 = unknown; more need mono16."""
    return "mono8" if num_classes <= UNKNOWN_MONO8 else "mono16"


def unknown_id_for(encoding: str) -> int:
    return UNKNOWN_MONO8 if encoding == "mono8" else UNKNOWN_MONO16


def class_mask(class_ids: np.ndarray, confidence: np.ndarray, threshold: float, encoding: str) -> np.ndarray:
    """Class ids as the mask's dtype; pixels below ``threshold`` confidence become unknown. The
    mask is a message array (casseg_ros/message_buffers.py): published without a copy."""
    mask = message_array(class_ids.shape, np.uint8 if encoding == "mono8" else np.uint16)
    np.copyto(mask, class_ids, casting="unsafe")
    if threshold > 0.0:
        mask[confidence < threshold] = unknown_id_for(encoding)
    return mask
