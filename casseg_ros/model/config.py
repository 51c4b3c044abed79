"""Typed configuration of the segmentation model and its loss (plain dataclasses + YAML)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import yaml


@dataclass
class ModelConfig:
    """Everything needed to rebuild a ``ContextSegmentor`` (stored inside every checkpoint)."""

    backbone: str = "swin_tiny"
    """Key of ``casseg_ros.model.backbone.SWIN_VARIANTS`` (swin_nano … swin_base)."""
    backbone_weights: Optional[str] = None
    """Optional local safetensors file with timm Swin weights (ImageNet pretraining)."""
    img_size: Tuple[int, int] = (512, 1024)
    """Nominal input size used to build the Swin (any size works at run time)."""
    drop_path_rate: float = 0.1
    decoder_dim: int = 128
    """Width D of the pixel decoder, the fused features and the joint pixel/text space."""
    output_stride: int = 8
    """Stride of the pixel-embedding map (4 or 8)."""
    fusion: bool = True
    fusion_heads: int = 4
    fusion_stride: int = 16
    """Pyramid level (16 or 32) at which pixel queries attend to class embeddings.

    Attending at a coarse level keeps the cost below 5 % of the backbone while the
    top-down decoder path still carries the language context to every pixel."""
    graph: bool = True
    graph_layers: int = 2
    contrastive: bool = True
    """Contrastive term in the loss (no parameters; a training switch)."""
    logit_scale_init: float = 10.0

    def __post_init__(self) -> None:
        self.img_size = tuple(int(v) for v in self.img_size)  # YAML gives lists
        if self.output_stride not in (4, 8):
            raise ValueError(f"output_stride must be 4 or 8, got {self.output_stride}")
        if self.fusion_stride not in (16, 32):
            raise ValueError(f"fusion_stride must be 16 or 32, got {self.fusion_stride}")
        if self.decoder_dim % self.fusion_heads:
            raise ValueError(
                f"decoder_dim ({self.decoder_dim}) must be divisible by fusion_heads ({self.fusion_heads})"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["img_size"] = list(self.img_size)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**data)


@dataclass
class LossConfig:
    ignore_index: int = 255
    contrastive_weight: float = 0.1
    """λ in CE + λ·contrastive."""
    temperature: float = 0.07
    max_contrastive_pixels: int = 4096
    """Pixels sampled per batch for the contrastive term (bounds memory)."""


def load_model_config(path: str | Path) -> ModelConfig:
    """Read a ModelConfig from a YAML file, either flat or under a ``model:`` key."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    return ModelConfig.from_dict(data)
