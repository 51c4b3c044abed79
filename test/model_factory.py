"""Small models for tests: random weights with either a Vocabulary of random (seeded) embeddings
(provider "test": it cannot embed new names) or one of real all-MiniLM-L6-v2 embeddings of its
class names (provider "local", offline), so that tests can swap vocabularies the way the node does;
and a text provider that takes its time (`SlowTestProvider`)."""
from __future__ import annotations

import functools
import os
import threading
import time

import numpy as np
import torch

from casseg_ros.model import ContextSegmentor, ModelConfig
from casseg_ros.text import EmbeddingProvider, Vocabulary, build_vocabulary

TINY = dict(backbone="swin_nano", decoder_dim=32, fusion_heads=2, img_size=(64, 128), drop_path_rate=0.0)
LOCAL_NAMES = ("road", "car", "person", "sky", "building")


def random_vocabulary(num_classes: int = 5, dim: int = 384, seed: int = 0) -> Vocabulary:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((num_classes, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return Vocabulary(names=[f"class_{i}" for i in range(num_classes)], embeddings=emb, descriptions=None, provider="test")


@functools.lru_cache(maxsize=8)
def local_vocabulary(names: tuple[str, ...] = LOCAL_NAMES) -> Vocabulary:
    """``build_vocabulary(names, "local")``: the bundled MiniLM, hub forced offline (cached per names)."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return build_vocabulary(list(names), "local")


def tiny_model(num_classes: int = 5, seed: int = 0, **overrides) -> ContextSegmentor:
    torch.manual_seed(seed)
    config = ModelConfig(**{**TINY, **overrides})
    return ContextSegmentor(config, random_vocabulary(num_classes, seed=seed)).eval()


def tiny_local_model(names: tuple[str, ...] = LOCAL_NAMES, seed: int = 0, **overrides) -> ContextSegmentor:
    """Random weights, a "local"-provider vocabulary of ``names`` (real 384-d MiniLM embeddings)."""
    torch.manual_seed(seed)
    config = ModelConfig(**{**TINY, **overrides})
    return ContextSegmentor(config, local_vocabulary(tuple(names))).eval()


class SlowTestProvider(EmbeddingProvider):
    """Seeded 384-d embeddings (the width of the tiny models' text projection) after `delay_s`: a
    text model that takes its time. Counts its loads and names the threads it embedded on."""

    name = "slow_test"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s, self.loads, self.embed_threads, self.embed_nice = delay_s, 0, [], []

    def load(self) -> None:
        self.loads += 1

    def embed(self, texts):
        self.embed_threads.append(threading.current_thread().name)
        self.embed_nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        time.sleep(self.delay_s)
        emb = np.random.default_rng(len(texts)).standard_normal((len(texts), 384)).astype(np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)
