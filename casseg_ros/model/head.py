"""Similarity head: logits = scale · cos(pixel embedding, class embedding)."""
from __future__ import annotations

import math

import torch
from torch import nn


class SimilarityHead(nn.Module):
    """No per-class weights: a new vocabulary needs new text embeddings, not a new head."""

    def __init__(self, logit_scale_init: float = 10.0) -> None:
        super().__init__()
        # Learned in log space so the scale stays positive.
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    def forward(self, pixel_embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """pixel_embeddings: (B,D,H,W), L2-normalised; class_embeddings: (B,K,D), L2-normalised → (B,K,H,W)."""
        b, d, h, w = pixel_embeddings.shape
        logits = torch.bmm(class_embeddings, pixel_embeddings.flatten(2))
        return self.log_scale.exp() * logits.reshape(b, -1, h, w)
