"""FPN pixel decoder: Swin pyramid → one map of width D at stride 4 or 8 (Panoptic-FPN style)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PixelChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel (NCHW): normalises with no statistic taken across
    the image, so a pixel's output depends only on its receptive field."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``group``: GroupNorm, whose mean and variance are taken over the whole image -- an
    image-wide channel, through which even a model without context modules reads distant cues
    (training/results/long_range_groupnorm.md); ``pixel``: ``PixelChannelNorm``, strictly local."""
    if kind == "group":
        # GroupNorm, not BatchNorm: training batches on a CPU are tiny.
        return nn.GroupNorm(min(32, channels // 4), channels)
    if kind == "pixel":
        return PixelChannelNorm(channels)
    raise ValueError(f"unknown decoder norm {kind!r} (expected group or pixel)")


def conv_norm_act(in_ch: int, out_ch: int, kernel: int, norm: str = "group") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        norm_layer(norm, out_ch),
        nn.GELU(),
    )


class FPNPixelDecoder(nn.Module):
    """Lateral 1×1 + top-down sum, then every level upsampled to the output stride and summed.

    ``context_hook`` (the cross-attention fusion) is applied to the top-down map at
    ``hook_stride`` before it is propagated to finer levels, so language context reaches every
    pixel at the cost of attending only on a coarse grid.
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], dim: int, output_stride: int = 8,
                 norm: str = "group") -> None:
        super().__init__()
        if output_stride not in strides:
            raise ValueError(f"output_stride {output_stride} is not one of the backbone strides {list(strides)}")
        # Levels finer than the output stride are not used, so they get no parameters.
        self.first_level = list(strides).index(output_stride)
        self.strides = list(strides)[self.first_level :]
        self.output_stride = output_stride
        kept = list(in_channels)[self.first_level :]
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in kept)
        self.smooth = nn.ModuleList(conv_norm_act(dim, dim, 3, norm) for _ in kept)
        self.out = conv_norm_act(dim, dim, 3, norm)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        context_hook: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        hook_stride: int = 16,
    ) -> torch.Tensor:
        features = list(features)[self.first_level :]
        top_down: Optional[torch.Tensor] = None
        levels: list[torch.Tensor] = []
        for idx in reversed(range(len(features))):
            lateral = self.lateral[idx](features[idx])
            if top_down is not None:
                lateral = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            if context_hook is not None and self.strides[idx] == hook_stride:
                lateral = context_hook(lateral)
            top_down = lateral
            levels.append(self.smooth[idx](lateral))
        size = levels[-1].shape[-2:]  # finest kept level = output stride
        fused = levels[-1]
        for level in levels[:-1]:
            fused = fused + F.interpolate(level, size=size, mode="bilinear", align_corners=False)
        return self.out(fused)
