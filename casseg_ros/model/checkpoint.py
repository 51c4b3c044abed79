"""Checkpoints: one safetensors file holding weights, text embeddings, model config and vocabulary.

Only two loaders are ever used: safetensors (no code execution possible) and, for legacy
``.pt``/``.pth`` files, ``torch.load(weights_only=True)``. Pickled arbitrary objects are refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from safetensors import safe_open

from casseg_ros.fileio import atomic_write_bytes
from casseg_ros.text.vocabulary import Vocabulary, VocabularyError

from .config import ModelConfig
from .segmentor import ContextSegmentor

FORMAT = "casseg_ros/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, of the wrong kind, or does not match its config."""


# What a file that is not a checkpoint often is, by its first bytes (for the error message).
_KNOWN_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"PK\x03\x04", "a zip archive "
                "(e.g. a torch.save .pt file)"), (b"\x89MCAP", "an MCAP recording"), (b"SQLite format 3", "an SQLite file"))


def check_safetensors_file(path: str | Path) -> None:
    """CheckpointError naming `path` unless it starts like a safetensors file (an 8-byte
    little-endian header length that fits the file, then a JSON object): safetensors itself would
    say "header too large" of a PNG."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(16)
        size = os.fstat(handle.fileno()).st_size
    header_length = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if len(head) >= 9 and head[8:9] == b"{" and header_length >= 2:
        if header_length > size - 8:
            raise CheckpointError(f"{path} is a truncated checkpoint: its safetensors header alone needs "
                                  f"{header_length + 8} bytes, the file has {size}")
        return
    kind = next((what for magic, what in _KNOWN_MAGIC if head.startswith(magic)), None)
    raise CheckpointError(f"{path} is not a checkpoint: it does not start with a safetensors header"
                          + (f" (it looks like {kind})" if kind else f" ({size} bytes)"))


def save_checkpoint(path: str | Path, model: ContextSegmentor, extra: dict[str, Any] | None = None) -> Path:
    """Weights + config + vocabulary metadata (``Vocabulary.to_dict``; its embeddings are the
    ``class_embeddings`` tensor) in one safetensors file, written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return _write_checkpoint(path, tensors, model.config.to_dict(), model.vocabulary, extra)


def _write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                      vocabulary: Vocabulary, extra: dict[str, Any] | None) -> Path:
    metadata = {
        "format": FORMAT,
        "model_config": json.dumps(config, sort_keys=True),
        "vocabulary": json.dumps(vocabulary.to_dict(), sort_keys=True),
        "extra": json.dumps(extra or {}, sort_keys=True),
    }
    return atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=metadata))


def bake_vocabulary(checkpoint: str | Path, vocabulary: Vocabulary, output: str | Path) -> Path:
    """Write a copy of ``checkpoint`` whose classes are ``vocabulary`` (names, palette, text
    embeddings); the weights are copied unchanged. The source is never overwritten; the copy is
    written atomically. Raises CheckpointError (unreadable source, embedding width the model's
    text projection does not take, output = source)."""
    checkpoint, output = Path(checkpoint), Path(output)
    if output.suffix != ".safetensors":
        raise CheckpointError(f"the baked checkpoint must be a .safetensors file, got {output.name}")
    if output.resolve() == checkpoint.resolve():
        raise CheckpointError(f"bake writes a copy: the output {output} must not be the source checkpoint")
    state, meta = read_checkpoint(checkpoint)
    current = _vocabulary(checkpoint, state, meta)
    if vocabulary.embedding_dim != current.embedding_dim:
        raise CheckpointError(f"the new vocabulary's embeddings have dimension {vocabulary.embedding_dim} (provider "
                              f"{vocabulary.provider!r}); {checkpoint} takes {current.embedding_dim} (provider "
                              f"{current.provider!r})")
    state = dict(state, class_embeddings=torch.from_numpy(np.ascontiguousarray(vocabulary.embeddings)))
    extra = dict(meta["extra"], vocabulary_baked_from={"checkpoint": checkpoint.name,
                                                       "classes": current.names})
    return _write_checkpoint(output, state, meta["model_config"], vocabulary, extra)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state_dict, metadata dict with 'model_config', 'vocabulary', 'extra')."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        check_safetensors_file(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                raw_meta = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:
            raise CheckpointError(f"corrupt or unreadable safetensors checkpoint {path}: {exc}") from exc
        if raw_meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a casseg_ros checkpoint (metadata format={raw_meta.get('format')!r})")
        try:
            meta = {key: json.loads(raw_meta[key]) for key in ("model_config", "vocabulary")}
            meta["extra"] = json.loads(raw_meta.get("extra", "{}"))
        except (KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"checkpoint {path} has broken metadata: {exc}") from exc
        return state, meta
    if path.suffix in (".pt", ".pth"):
        try:
            blob = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot load {path} with torch.load(weights_only=True): {exc}") from exc
        if not isinstance(blob, dict) or "state_dict" not in blob or "model_config" not in blob:
            raise CheckpointError(f"{path} must hold a dict with 'state_dict', 'model_config' and 'vocabulary'")
        return blob["state_dict"], {"model_config": blob["model_config"], "vocabulary": blob["vocabulary"], "extra": blob.get("extra", {})}
    raise CheckpointError(f"unsupported checkpoint type {path.suffix!r} (use .safetensors, or .pt loaded weights-only)")


def _vocabulary(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Vocabulary:
    if "class_embeddings" not in state:
        raise CheckpointError(f"checkpoint {path} has no 'class_embeddings' tensor")
    try:
        return Vocabulary.from_dict(meta["vocabulary"], state["class_embeddings"].numpy())
    except VocabularyError as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid vocabulary: {exc}") from exc


def read_vocabulary(path: str | Path) -> Vocabulary:
    """The class vocabulary (names, palette, text embeddings) stored in a checkpoint."""
    state, meta = read_checkpoint(path)
    return _vocabulary(path, state, meta)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> ContextSegmentor:
    """Rebuild the model from a checkpoint, in eval mode. Mismatches name the offending keys."""
    state, meta = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(dict(meta["model_config"], backbone_weights=None))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid model config: {exc}") from exc
    vocabulary = _vocabulary(path, state, meta)
    model = ContextSegmentor(config, vocabulary)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {path} does not match its model config: missing keys {result.missing_keys[:8]}, "
            f"unexpected keys {result.unexpected_keys[:8]}"
        )
    return model.to(map_location).eval()
