"""``predict(image)`` on the original resolution, in PyTorch (the reference for every backend)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from .segmentor import ContextSegmentor


@dataclass
class Prediction:
    class_map: np.ndarray
    """(H,W) int32 class ids."""
    confidence: np.ndarray
    """(H,W) float32 max softmax probability."""
    class_scores: np.ndarray
    """(K,) float32 mean probability of each class over the image."""
    adjacency: np.ndarray
    """(K,K) float32 class graph weights."""


class Predictor:
    def __init__(self, model: ContextSegmentor, device: str = "cpu", input_size: Optional[Sequence[int]] = None) -> None:
        self.device = torch.device(device)
        self.pipeline = model.export_module().to(self.device).eval()
        self.input_size = tuple(input_size) if input_size else None

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> Prediction:
        """image: (H,W,3) uint8 RGB. With ``input_size`` the model runs at that size and the
        outputs are resized back (nearest) to (H,W)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H,W,3) uint8 RGB image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        net_input = image
        if self.input_size and (h, w) != self.input_size:
            net_input = cv2.resize(image, (self.input_size[1], self.input_size[0]), interpolation=cv2.INTER_LINEAR)
        batch = torch.from_numpy(np.ascontiguousarray(net_input))[None].to(self.device)
        class_ids, confidence, scores, adjacency = self.pipeline(batch)
        class_map = class_ids[0].cpu().numpy()
        conf = confidence[0].float().cpu().numpy()
        if class_map.shape != (h, w):
            class_map = cv2.resize(class_map, (w, h), interpolation=cv2.INTER_NEAREST)
            conf = cv2.resize(conf, (w, h), interpolation=cv2.INTER_NEAREST)
        return Prediction(class_map, conf, scores[0].float().cpu().numpy(), adjacency[0].float().cpu().numpy())
