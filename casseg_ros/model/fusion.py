"""Cross-attention fusion: pixel features are queries, class text embeddings are keys/values."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def class_attention(attn: nn.MultiheadAttention, queries: torch.Tensor, tokens: torch.Tensor,
                    need_weights: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``attn(queries, tokens, tokens)`` (batch_first) written out with ``attn``'s own parameters.

    ``nn.MultiheadAttention`` traces the key count K into constant reshapes, so its exported graph
    only runs with the class count it was exported with; here every reshape leaves K to ``-1``, which
    lets an exported graph take any number of class embeddings. Returns the attended values
    (B,N,D) and, when asked, the head-averaged weights (B,N,K).
    """
    b, n, d = queries.shape
    heads = attn.num_heads
    head_dim = d // heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    q = F.linear(queries, w_q, b_q).reshape(b, n, heads, head_dim).transpose(1, 2)  # (B,h,N,hd)
    k = F.linear(tokens, w_k, b_k).reshape(b, -1, heads, head_dim).transpose(1, 2)  # (B,h,K,hd)
    v = F.linear(tokens, w_v, b_v).reshape(b, -1, heads, head_dim).transpose(1, 2)
    weights = torch.matmul(q * head_dim**-0.5, k.transpose(2, 3)).softmax(-1)  # (B,h,N,K)
    if attn.training and attn.dropout > 0:
        weights = F.dropout(weights, attn.dropout)
    out = torch.matmul(weights, v).transpose(1, 2).reshape(b, n, d)
    return attn.out_proj(out), weights.mean(1) if need_weights else None


class CrossAttentionFusion(nn.Module):
    """Post-norm transformer decoder layer without self-attention.

    Every pixel gathers the language embedding of the classes it resembles, so locally
    ambiguous regions inherit the meaning of their class hypotheses.
    """

    def __init__(self, dim: int, num_heads: int = 4, ffn_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        # The module holds the parameters (checkpoint layout); ``class_attention`` computes with them.
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
        attended, weights = class_attention(self.attn, queries, class_tokens, return_attention)
        x = self.norm_attn(queries + attended)
        x = self.norm_ffn(x + self.ffn(x))
        fused = x.transpose(1, 2).reshape(b, d, h, w)
        attention = None
        if weights is not None:
            attention = weights.transpose(1, 2).reshape(b, -1, h, w)
        return fused, attention
