"""Swin Transformer backbone (timm, ``features_only``) returning NCHW maps at strides 4/8/16/32."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models.swin_transformer import checkpoint_filter_fn
from torch import nn

# Small variants keep the Swin architecture (patch 4, window 7, 4 stages) with fewer channels and
# blocks, so that CPU demos and CI train in minutes; the tiny/small/base ones are the paper's.
SWIN_VARIANTS: dict[str, dict] = {
    "swin_nano": dict(arch="swin_tiny_patch4_window7_224", embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
    "swin_micro": dict(arch="swin_tiny_patch4_window7_224", embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16)),
    "swin_tiny": dict(arch="swin_tiny_patch4_window7_224"),
    "swin_small": dict(arch="swin_small_patch4_window7_224"),
    "swin_base": dict(arch="swin_base_patch4_window7_224"),
}

SIZE_MULTIPLE = 32
"""Inputs are padded to a multiple of the coarsest stride so every stage has integer size."""


class BackboneWeightsError(RuntimeError):
    """The pretrained backbone file is missing, unreadable or does not match the variant."""


class SwinBackbone(nn.Module):
    def __init__(
        self,
        variant: str = "swin_tiny",
        img_size: Sequence[int] = (512, 1024),
        drop_path_rate: float = 0.1,
        weights_path: Optional[str] = None,
    ) -> None:
        super().__init__()
        if variant not in SWIN_VARIANTS:
            raise ValueError(f"unknown Swin variant {variant!r}; choose one of {sorted(SWIN_VARIANTS)}")
        spec = dict(SWIN_VARIANTS[variant])
        arch = spec.pop("arch")
        self.variant = variant
        # pretrained=False: weights never come from a hub, only from a local file (below).
        self.body = timm.create_model(
            arch,
            pretrained=False,
            features_only=True,
            img_size=tuple(img_size),
            strict_img_size=False,
            drop_path_rate=drop_path_rate,
            **spec,
        )
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())
        if weights_path:
            self.load_pretrained(weights_path, arch, dict(spec, img_size=tuple(img_size), strict_img_size=False))

    def load_pretrained(self, path: str, arch: str, spec: dict) -> None:
        """Load timm/Microsoft Swin weights from a local safetensors file (classifier head dropped)."""
        file = Path(path)
        if not file.is_file():
            raise BackboneWeightsError(f"backbone weights file not found: {file}")
        if file.suffix != ".safetensors":
            raise BackboneWeightsError(f"backbone weights must be a .safetensors file, got {file.name}")
        try:
            state = load_file(str(file))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise BackboneWeightsError(f"cannot read backbone weights {file}: {exc}") from exc
        # checkpoint_filter_fn needs the full (non-features) model, built for the same input size
        # (timm shrinks windows for small inputs), to resize the relative-position tables.
        reference = timm.create_model(arch, pretrained=False, num_classes=0, **spec)
        state = checkpoint_filter_fn(state, reference)
        # FeatureListNet flattens "layers.0" into "layers_0"; the classifier and final norm are unused.
        renamed = {}
        for key, value in state.items():
            if key.startswith(("head.", "norm.")):
                continue
            renamed[key.replace("layers.", "layers_", 1) if key.startswith("layers.") else key] = value
        own = self.body.state_dict()
        missing = sorted(k for k in own if k not in renamed and not k.endswith(("relative_position_index", "attn_mask")))
        unexpected = sorted(k for k in renamed if k not in own)
        mismatched = sorted(k for k in renamed if k in own and renamed[k].shape != own[k].shape)
        if missing or unexpected or mismatched:
            raise BackboneWeightsError(
                f"backbone weights {file.name} do not match variant {self.variant!r}: "
                f"missing keys {missing[:8]}{'…' if len(missing) > 8 else ''}, "
                f"unexpected keys {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}, "
                f"shape mismatches {mismatched[:8]}{'…' if len(mismatched) > 8 else ''}"
            )
        self.body.load_state_dict(renamed, strict=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: (B,3,H,W) with H, W multiples of ``SIZE_MULTIPLE``. Returns NCHW maps."""
        # timm's Swin emits NHWC feature maps.
        return [f.permute(0, 3, 1, 2) for f in self.body(images)]


def pad_to_multiple(images: torch.Tensor, multiple: int = SIZE_MULTIPLE) -> torch.Tensor:
    """Zero-pad (bottom/right) so H and W are multiples of ``multiple``; crop back afterwards."""
    h, w = images.shape[-2:]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))
