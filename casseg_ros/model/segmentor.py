"""ContextSegmentor: Swin → FPN decoder (+ cross-attention fusion) → graph reasoning (over class
nodes or region nodes) → similarity head."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from casseg_ros.text.vocabulary import Vocabulary

from .backbone import SIZE_MULTIPLE, SwinBackbone, pad_to_multiple
from .config import ModelConfig
from .decoder import FPNPixelDecoder
from .fusion import CrossAttentionFusion
from .graph import ClassGraphReasoning, RegionGraphReasoning, mask_pool, soft_spatial_adjacency
from .head import SimilarityHead
from .output_tail import segmentation_tail, upsample_logits

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SegmentationOutput:
    logits: Optional[torch.Tensor]
    """(B,K,H,W) at the input resolution (or ``output_size``); None with ``upsample=False``."""
    pixel_embeddings: torch.Tensor
    """(B,D,ceil(H/s),ceil(W/s)) L2-normalised."""
    class_embeddings: torch.Tensor
    """(B,K,D) class embeddings used by the head (refined by the graph when it is on)."""
    text_embeddings: torch.Tensor
    """(K,D) projected text embeddings (contrastive targets)."""
    adjacency: torch.Tensor
    """(B,K,K) soft spatial class graph of the prediction, in [0,1]."""
    attention: Optional[torch.Tensor] = None
    """(B,K,H/f,W/f) cross-attention maps (f = fusion stride), when requested and fusion is on."""
    assignment: Optional[torch.Tensor] = None
    """(B,N,ceil(H/s),ceil(W/s)) soft assignment of the pixels to the N region nodes, when requested
    (``return_attention``) and the graph has region nodes."""
    grid_logits: Optional[torch.Tensor] = None
    """(B,K,ceil(H/s),ceil(W/s)) logits on the stride-s grid, before the upsampling."""


def scene_adjacency(probs: torch.Tensor) -> torch.Tensor:
    """Class graph on a 2× coarser grid than the embeddings: a scene-level statistic that does
    not need stride-8 detail, at a quarter of the cost."""
    return soft_spatial_adjacency(F.avg_pool2d(probs, 2, ceil_mode=True))


def build_graph(config: ModelConfig) -> nn.Module:
    """The graph module ``config`` names: class nodes or region nodes, with its edge definition."""
    dim = config.decoder_dim
    if config.graph_nodes == "classes":
        return ClassGraphReasoning(dim, config.graph_layers, config.graph_edges, config.graph_topk)
    return RegionGraphReasoning(dim, config.graph_regions, config.graph_region_iterations, config.graph_layers,
                                config.graph_edges, config.graph_topk)


class ContextSegmentor(nn.Module):
    """The seed paper's model; every context module can be switched off for ablations.

    ``vocabulary`` is a ``casseg_ros.text.Vocabulary`` (names, (K,E) embeddings, palette); the
    embeddings are a buffer of the model, so checkpoints carry them and the forward pass never
    calls a provider.
    """

    def __init__(self, config: ModelConfig, vocabulary: Vocabulary) -> None:
        super().__init__()
        self.config = config
        self.vocabulary = vocabulary
        embeddings = torch.as_tensor(np.asarray(vocabulary.embeddings), dtype=torch.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(vocabulary.names):
            raise ValueError(
                f"vocabulary embeddings must be (K,E) with K={len(vocabulary.names)} names, got {tuple(embeddings.shape)}"
            )
        self.register_buffer("class_embeddings", embeddings)
        dim = config.decoder_dim
        self.backbone = SwinBackbone(config.backbone, config.img_size, config.drop_path_rate, config.backbone_weights)
        self.decoder = FPNPixelDecoder(self.backbone.channels, self.backbone.strides, dim, config.output_stride,
                                       config.decoder_norm)
        self.text_proj = nn.Sequential(nn.Linear(embeddings.shape[1], dim), nn.GELU(), nn.Linear(dim, dim))
        self.pixel_proj = nn.Conv2d(dim, dim, 1)
        self.fusion = CrossAttentionFusion(dim, config.fusion_heads) if config.fusion else None
        self.graph = build_graph(config) if config.graph else None
        self.head = SimilarityHead(config.logit_scale_init)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    @property
    def class_names(self) -> list[str]:
        return list(self.vocabulary.names)

    @property
    def text_dim(self) -> int:
        """E, the text-embedding width the text projection takes (384 for all-MiniLM-L6-v2)."""
        return int(self.text_proj[0].in_features)

    def check_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Raise ValueError unless ``vocabulary`` can drive this model. Every module after the text
        projection treats classes alike (attention over class tokens, a dense GCN over K nodes, a
        cosine head), so any class count K >= 1 works; only the embedding width E is fixed."""
        if vocabulary.embedding_dim != self.text_dim:
            raise ValueError(f"vocabulary embeddings have dimension {vocabulary.embedding_dim} (provider "
                             f"{vocabulary.provider!r}), but this model's text projection takes {self.text_dim}")

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Replace the classes (names, palette, text embeddings buffer); the weights stay as they are."""
        self.check_vocabulary(vocabulary)
        embeddings = torch.as_tensor(np.asarray(vocabulary.embeddings), dtype=torch.float32)
        self.class_embeddings = embeddings.to(self.class_embeddings.device)  # a registered buffer: stays one
        self.vocabulary = vocabulary

    def forward(self, images: torch.Tensor, return_attention: bool = False,
                class_embeddings: Optional[torch.Tensor] = None,
                output_size: Optional[Sequence[int]] = None, upsample: bool = True) -> SegmentationOutput:
        """images: (B,3,H,W) float, ImageNet-normalised; any H, W. ``class_embeddings``: (K,E) text
        embeddings to score against instead of the vocabulary's buffer (exported graphs take them as
        an input, so a deployed model changes its classes without a new export). ``output_size``:
        (H', W') to give the logits at instead of (H, W) — those of the image stretched to H'xW',
        upsampled from the stride-s grid in one bilinear step; needs H, W multiples of the stride s.
        ``upsample=False``: no full-resolution logits (``logits`` None), only ``grid_logits`` (the
        export module's tail upsamples them itself, a band at a time: model/output_tail.py)."""
        b, _, h, w = images.shape
        padded = pad_to_multiple(images, SIZE_MULTIPLE)
        raw_text = self.class_embeddings if class_embeddings is None else class_embeddings
        text = self.text_proj(raw_text)  # (K,D)
        tokens = text.unsqueeze(0).expand(b, -1, -1)
        attention_maps: list[torch.Tensor] = []

        def fuse(level: torch.Tensor) -> torch.Tensor:
            fused, attn = self.fusion(level, tokens, return_attention)
            if attn is not None:
                attention_maps.append(attn)
            return fused

        features = self.backbone(padded)
        pixels = self.decoder(features, fuse if self.fusion is not None else None, self.config.fusion_stride)
        stride = self.config.output_stride
        pixels = pixels[..., : math.ceil(h / stride), : math.ceil(w / stride)]
        assignment = None
        if isinstance(self.graph, RegionGraphReasoning):  # regions refine the pixels, before the head
            pixels, assignment = self.graph(pixels)
        pixel_emb = F.normalize(self.pixel_proj(pixels), dim=1)
        text_emb = F.normalize(text, dim=-1)
        class_emb = text_emb.unsqueeze(0).expand(b, -1, -1)
        coarse_logits = self.head(pixel_emb, class_emb)
        if isinstance(self.graph, ClassGraphReasoning):  # classes refine the class embeddings: a second head pass
            probs = coarse_logits.softmax(1)
            pooled = mask_pool(pixels, probs)
            spatial = scene_adjacency(probs) if self.graph.needs_spatial else None
            class_emb = F.normalize(self.graph(class_emb, pooled, spatial), dim=-1)
            coarse_logits = self.head(pixel_emb, class_emb)
        adjacency = scene_adjacency(coarse_logits.softmax(1))
        logits = upsample_logits(coarse_logits, (h, w), stride, output_size) if upsample else None
        attention = None
        if attention_maps:
            f = self.config.fusion_stride
            attention = attention_maps[0][..., : math.ceil(h / f), : math.ceil(w / f)]
        return SegmentationOutput(logits, pixel_emb, class_emb, text_emb, adjacency, attention,
                                  assignment if return_attention else None, coarse_logits)

    def normalize_uint8(self, images_nhwc: torch.Tensor, size: Optional[Sequence[int]] = None) -> torch.Tensor:
        """uint8 (B,H,W,3) RGB → float (B,3,H,W) ImageNet-normalised; with ``size`` = (H', W') resized
        bilinearly to (B,3,H',W') (half-pixel, no antialiasing: cv2.INTER_LINEAR's sampling)."""
        # Cast first: in the exported graph uint8 then appears only as the network input, which is
        # all TensorRT 10 accepts (a uint8 Transpose does not parse).
        x = images_nhwc.float().permute(0, 3, 1, 2)
        if size is not None:
            # before the normalisation, on the smaller image: a per-channel affine map commutes with
            # linear interpolation, so this equals resizing the normalised image
            x = F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False,
                              antialias=False)
        return (x - self.pixel_mean) / self.pixel_std

    def export_module(self, model_size: Optional[Sequence[int]] = None) -> "SegmentationPipeline":
        """uint8 NHWC batch → (class ids, confidence, class scores, adjacency), all in one graph;
        ``model_size``: see ``SegmentationPipeline``."""
        return SegmentationPipeline(self, model_size)


class SegmentationPipeline(nn.Module):
    """Pre-processing, model and post-processing in one module, so an exported graph (ONNX,
    TensorRT) leaves the host no per-pixel work but the copy of the outputs. The class (text)
    embeddings are its second input: (K,E) float32, any K; None = the model's own vocabulary.

    ``model_size`` (H, W), multiples of the model's output stride: images of any size (a camera's)
    are resized bilinearly to it inside the module, and the stride-s logits are upsampled straight
    to the images' own size, where softmax and argmax run: the outputs are at the input resolution
    and the host resizes nothing. None: the model runs every image at its own size.
    """

    def __init__(self, model: ContextSegmentor, model_size: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.model = model
        self.model_size = None if model_size is None else (int(model_size[0]), int(model_size[1]))
        stride = model.config.output_stride
        if self.model_size is not None and (self.model_size[0] % stride or self.model_size[1] % stride):
            raise ValueError(f"model_size must be a multiple of the output stride {stride}, got {self.model_size}")

    def forward(self, images_nhwc_uint8: torch.Tensor, class_embeddings: Optional[torch.Tensor] = None):
        # the model stops at the stride-s logits: the tail upsamples them (a band at a time)
        output_size = None if self.model_size is None else images_nhwc_uint8.shape[1:3]
        images = self.model.normalize_uint8(images_nhwc_uint8, self.model_size)
        out = self.model(images, class_embeddings=class_embeddings, upsample=False)
        ids, confidence, class_scores = segmentation_tail(out.grid_logits, images.shape[-2:],
                                                          self.model.config.output_stride, output_size)
        return ids, confidence, class_scores, out.adjacency


class LogitsPipeline(nn.Module):
    """uint8 NHWC → raw logits; used to check exported graphs against PyTorch logit by logit."""

    def __init__(self, model: ContextSegmentor) -> None:
        super().__init__()
        self.model = model

    def forward(self, images_nhwc_uint8: torch.Tensor, class_embeddings: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.model(self.model.normalize_uint8(images_nhwc_uint8), class_embeddings=class_embeddings).logits
