"""Cross-entropy + λ · pixel–text contrastive loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LossConfig


def pixel_text_contrastive(
    pixel_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    ignore_index: int = 255,
    max_pixels: int = 4096,
) -> torch.Tensor:
    """InfoNCE over classes: each labelled pixel embedding is pulled to its class's text embedding
    and pushed from the other classes' ones.

    pixel_embeddings: (B,D,h,w) L2-normalised; text_embeddings: (K,D) L2-normalised;
    labels: (B,H,W) class ids at full resolution (nearest-resized to h×w here).
    """
    h, w = pixel_embeddings.shape[-2:]
    small = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    emb = pixel_embeddings.permute(0, 2, 3, 1).reshape(-1, pixel_embeddings.shape[1])
    target = small.reshape(-1)
    valid = (target != ignore_index).nonzero(as_tuple=True)[0]
    if valid.numel() == 0:
        return pixel_embeddings.sum() * 0.0  # keeps the graph connected for DDP
    if valid.numel() > max_pixels:
        valid = valid[torch.randperm(valid.numel(), device=valid.device)[:max_pixels]]
    similarity = emb[valid] @ text_embeddings.t() / temperature
    return F.cross_entropy(similarity, target[valid])


class SegmentationLoss(nn.Module):
    def __init__(self, config: LossConfig | None = None, contrastive: bool = True) -> None:
        super().__init__()
        self.config = config or LossConfig()
        self.contrastive = contrastive

    def forward(self, output, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """output: ``SegmentationOutput``; labels: (B,H,W) int64 with ``ignore_index`` for void."""
        cfg = self.config
        ce = F.cross_entropy(output.logits, labels, ignore_index=cfg.ignore_index)
        losses = {"ce": ce}
        total = ce
        if self.contrastive and cfg.contrastive_weight > 0:
            con = pixel_text_contrastive(
                output.pixel_embeddings,
                output.text_embeddings,
                labels,
                cfg.temperature,
                cfg.ignore_index,
                cfg.max_contrastive_pixels,
            )
            losses["contrastive"] = con
            total = total + cfg.contrastive_weight * con
        losses["loss"] = total
        return losses
