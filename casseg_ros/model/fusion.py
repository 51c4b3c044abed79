"""Cross-attention fusion: pixel features are queries, class text embeddings are keys/values."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn


class CrossAttentionFusion(nn.Module):
    """Post-norm transformer decoder layer without self-attention.

    Every pixel gathers the language embedding of the classes it resembles, so locally
    ambiguous regions inherit the meaning of their class hypotheses.
    """

    def __init__(self, dim: int, num_heads: int = 4, ffn_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_attn = nn.LayerNorm(dim)
        hidden = int(dim * ffn_ratio)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(
        self, pixels: torch.Tensor, class_tokens: torch.Tensor, return_attention: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """pixels: (B,D,H,W); class_tokens: (B,K,D). Returns fused (B,D,H,W) and (B,K,H,W) attention."""
        b, d, h, w = pixels.shape
        queries = pixels.flatten(2).transpose(1, 2)  # (B, HW, D)
        attended, weights = self.attn(
            queries, class_tokens, class_tokens, need_weights=return_attention, average_attn_weights=True
        )
        x = self.norm_attn(queries + attended)
        x = self.norm_ffn(x + self.ffn(x))
        fused = x.transpose(1, 2).reshape(b, d, h, w)
        attention = None
        if weights is not None:
            attention = weights.transpose(1, 2).reshape(b, -1, h, w)
        return fused, attention
