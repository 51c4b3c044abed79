"""Typed configuration of the segmentation model and its loss (plain dataclasses + YAML)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import yaml

GRAPH_NODES = ("classes", "regions")
GRAPH_EDGES = ("spatial", "semantic", "both")
# What a config written before a key existed means: checkpoints saved without ``graph_nodes`` /
# ``graph_edges`` have the class graph with spatial edges, whatever the defaults are now.
LEGACY_GRAPH = {"graph_nodes": "classes", "graph_edges": "spatial"}


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
    decoder_norm: str = "group"
    """``group`` (GroupNorm: its statistics span the whole image) or ``pixel`` (LayerNorm over each
    pixel's channels: no image-wide path, what a baseline without context modules needs)."""
    fusion: bool = True
    fusion_heads: int = 4
    fusion_stride: int = 16
    """Pyramid level (16 or 32) at which pixel queries attend to class embeddings.

    Attending at a coarse level keeps the cost below 5 % of the backbone while the
    top-down decoder path still carries the language context to every pixel."""
    graph: bool = True
    graph_layers: int = 2
    """Message-passing (GCN) layers; 0 keeps the node encoding and the gated update, no messages."""
    graph_nodes: str = "regions"
    """``classes``: one node per class (mask-pooled features); ``regions``: ``graph_regions`` nodes
    found by soft k-means on the fused pixel features, returned to the pixels through the assignment.
    Regions with spatial edges is the default since the graph ablation (training/results/
    graph_ablation.md: the tightest significant gain over no graph, +13.2 [+7.7, +18.7] mIoU)."""
    graph_edges: str = "spatial"
    """``spatial``: soft contact of the nodes' masks; ``semantic``: learned scaled dot-product
    similarity of the node features (top-``graph_topk`` per node); ``both``: their gated sum."""
    graph_regions: int = 8
    """N, the number of region nodes (static, so exports keep fixed shapes)."""
    graph_region_iterations: int = 3
    """Soft k-means iterations that find the regions (unrolled)."""
    graph_topk: int = 4
    """Semantic edges kept per node (0 = all)."""
    contrastive: bool = True
    """Contrastive term in the loss (no parameters; a training switch)."""
    logit_scale_init: float = 10.0

    def __post_init__(self) -> None:
        self.img_size = tuple(int(v) for v in self.img_size)  # YAML gives lists
        if self.output_stride not in (4, 8):
            raise ValueError(f"output_stride must be 4 or 8, got {self.output_stride}")
        if self.fusion_stride not in (16, 32):
            raise ValueError(f"fusion_stride must be 16 or 32, got {self.fusion_stride}")
        if self.decoder_norm not in ("group", "pixel"):
            raise ValueError(f"decoder_norm must be group or pixel, got {self.decoder_norm!r}")
        if self.graph_nodes not in GRAPH_NODES:
            raise ValueError(f"graph_nodes must be one of {GRAPH_NODES}, got {self.graph_nodes!r}")
        if self.graph_edges not in GRAPH_EDGES:
            raise ValueError(f"graph_edges must be one of {GRAPH_EDGES}, got {self.graph_edges!r}")
        for name in ("graph_layers", "graph_topk"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("graph_regions", "graph_region_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
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
        return cls(**{**LEGACY_GRAPH, **data})


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
