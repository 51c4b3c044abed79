"""Class vocabulary: names, language embeddings, optional descriptions and display palette.

A vocabulary is built once offline (see `casseg_ros.text.build_vocabulary` / `casseg-vocab`).
This module is its one codec: `to_dict`/`from_dict` (JSON-able metadata; the embeddings travel
next to it) and `to_bytes`/`from_bytes` (safetensors: tensor `embeddings` plus that metadata as
JSON), used by vocabulary files, checkpoints, exported ONNX models and the training cache. It can
be inspected and loaded without pickle and without any embedding model installed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from casseg_ros.fileio import atomic_write_bytes
from casseg_ros.perception.palette import palette_for_names

__all__ = ["Vocabulary", "VocabularyError", "METADATA_KEY", "FORMAT_NAME"]

METADATA_KEY = "casseg_vocabulary"
FORMAT_NAME = "casseg-vocabulary-v1"
_EPS = 1e-12


class VocabularyError(ValueError):
    """Invalid vocabulary contents or an unreadable vocabulary file."""


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (float32); all-zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, _EPS)).astype(np.float32)


@dataclass
class Vocabulary:
    """K class names with their (K, E) L2-normalised float32 text embeddings.

    `palette` defaults to `palette_for_names(names)` (each name its usual colour: Cityscapes, ADE20K,
    COCO, else one from its hash). `descriptions`, when present, are the texts the
    embeddings were computed from besides the names (e.g. LLM-written visual descriptions).
    """

    names: list[str]
    embeddings: np.ndarray
    descriptions: list[str] | None = None
    provider: str = "unknown"
    palette: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        k = len(self.names)
        if k == 0:
            raise VocabularyError("a vocabulary needs at least one class name")
        if any(not n.strip() for n in self.names):
            raise VocabularyError("class names must be non-empty")
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise VocabularyError(f"duplicate class names: {duplicates}")
        emb = np.asarray(self.embeddings)
        if emb.ndim != 2 or emb.shape[0] != k:
            raise VocabularyError(f"embeddings must be ({k}, E) for {k} names, got shape {emb.shape}")
        if not np.all(np.isfinite(emb)):
            raise VocabularyError("embeddings contain NaN or infinite values")
        emb = emb.astype(np.float32)
        norms = np.linalg.norm(emb, axis=1)
        if np.any(norms < 1e-6):
            raise VocabularyError(f"zero embedding for classes {[n for n, v in zip(self.names, norms) if v < 1e-6]}")
        # Renormalise only when needed, so save/load round-trips are bit-exact.
        self.embeddings = emb if np.allclose(norms, 1.0, atol=1e-5) else l2_normalize(emb)
        if self.descriptions is not None:
            self.descriptions = [str(d) for d in self.descriptions]
            if len(self.descriptions) != k:
                raise VocabularyError(f"{len(self.descriptions)} descriptions for {k} names")
        if self.palette is None:
            self.palette = palette_for_names(self.names)
        pal = np.asarray(self.palette)
        if pal.shape != (k, 3) or pal.min(initial=0) < 0 or pal.max(initial=0) > 255:
            raise VocabularyError(f"palette must be ({k}, 3) values in 0..255, got shape {pal.shape}")
        self.palette = pal.astype(np.uint8)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able metadata (everything except the embedding values)."""
        return {
            "format": FORMAT_NAME,
            "names": list(self.names),
            "descriptions": None if self.descriptions is None else list(self.descriptions),
            "provider": self.provider,
            "palette": self.palette.tolist(),
            "embedding_dim": self.embedding_dim,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], embeddings: np.ndarray) -> "Vocabulary":
        """Inverse of `to_dict` given the embeddings stored next to it."""
        try:
            names = list(data["names"])
        except (KeyError, TypeError) as exc:
            raise VocabularyError(f"vocabulary metadata has no 'names' list: {exc}") from None
        dim = data.get("embedding_dim")
        if dim is not None and np.ndim(embeddings) == 2 and int(dim) != np.shape(embeddings)[1]:
            raise VocabularyError(f"metadata says embedding_dim={dim}, embeddings have {np.shape(embeddings)[1]}")
        palette = data.get("palette")
        return cls(
            names=names,
            embeddings=embeddings,
            descriptions=data.get("descriptions"),
            provider=str(data.get("provider", "unknown")),
            palette=None if palette is None else np.asarray(palette, dtype=np.int64),
        )

    def to_bytes(self) -> bytes:
        """The codec's self-contained form: safetensors bytes (tensor `embeddings`, metadata JSON).

        The same bytes are a vocabulary file (`save`) and the vocabulary inside an exported ONNX
        (`casseg_ros.runtime.model_export`); checkpoints store `to_dict()` next to their own
        `class_embeddings` tensor instead, so the embeddings are not written twice.
        """
        # One metadata entry only: safetensors orders several entries at random, and these bytes
        # must be deterministic (they are part of an exported ONNX, whose hash keys engine caches).
        metadata = {METADATA_KEY: json.dumps(self.to_dict(), sort_keys=True)}
        return safetensors.numpy.save({"embeddings": np.ascontiguousarray(self.embeddings)}, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "vocabulary bytes") -> "Vocabulary":
        """Inverse of `to_bytes`; raises VocabularyError naming `source` on any problem."""
        try:
            tensors = safetensors.numpy.load(bytes(data))
            metadata = _safetensors_metadata(data)
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise VocabularyError(f"{source}: cannot read safetensors data: {exc}") from None
        if "embeddings" not in tensors:
            raise VocabularyError(f"{source}: no 'embeddings' tensor (not a vocabulary file?)")
        if METADATA_KEY not in metadata:
            raise VocabularyError(f"{source}: no '{METADATA_KEY}' metadata (not a vocabulary file?)")
        try:
            meta = json.loads(metadata[METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise VocabularyError(f"{source}: invalid vocabulary metadata JSON: {exc}") from None
        return cls.from_dict(meta, tensors["embeddings"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write `to_bytes()` atomically (casseg_ros.fileio): a crash or error mid-write leaves any
        previous file untouched and no temp file behind."""
        return atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read a file written by `save`; raises VocabularyError naming the file on any problem."""
        path = Path(path)
        if not path.is_file():
            raise VocabularyError(f"vocabulary file not found: {path}")
        return cls.from_bytes(path.read_bytes(), source=str(path))


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes (the library reads it only from files): the format
    is an 8-byte little-endian header length, then the JSON header."""
    header_len = int.from_bytes(bytes(data[:8]), "little")
    header = json.loads(bytes(data[8 : 8 + header_len]))
    return dict(header.get("__metadata__") or {})
