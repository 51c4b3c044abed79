"""Small models for tests: random weights, a real Vocabulary with random (seeded) embeddings."""
from __future__ import annotations

import numpy as np
import torch

from casseg_ros.model import ContextSegmentor, ModelConfig

TINY = dict(backbone="swin_nano", decoder_dim=32, fusion_heads=2, img_size=(64, 128), drop_path_rate=0.0)


def random_vocabulary(num_classes: int = 5, dim: int = 384, seed: int = 0):
    from casseg_ros.text import Vocabulary

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((num_classes, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return Vocabulary(names=[f"class_{i}" for i in range(num_classes)], embeddings=emb, descriptions=None, provider="test")


def tiny_model(num_classes: int = 5, seed: int = 0, **overrides) -> ContextSegmentor:
    torch.manual_seed(seed)
    config = ModelConfig(**{**TINY, **overrides})
    return ContextSegmentor(config, random_vocabulary(num_classes, seed=seed)).eval()
