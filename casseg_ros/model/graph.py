"""Graph reasoning over the classes of the scene (torch_geometric dense GCN)."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():
    # torch_geometric 2.8 runs torch.jit.script on its own classes at import, which torch 2.14 answers
    # with a FutureWarning: printed by every command (--help included) about code that is not ours.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from torch_geometric.nn import DenseGCNConv


def soft_spatial_adjacency(probs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Class graph from a soft prediction: how much of class i lies next to class j.

    probs: (B,K,H,W) softmax probabilities. A 3×3 max-pool spreads each class by one cell, so
    ``A_ij = <p_i, dilate(p_j)> / sqrt(|p_i| |p_j|)`` is large when the two classes touch or
    overlap in the image. Symmetric, zero diagonal, in [0, 1]. Fixed shapes (K×K), so the whole
    graph exports to ONNX/TensorRT; every operation treats classes alike, so it is
    permutation-equivariant.
    """
    b, k = probs.shape[:2]
    dilated = F.max_pool2d(probs, kernel_size=3, stride=1, padding=1)
    flat, flat_dilated = probs.flatten(2), dilated.flatten(2)
    contact = torch.bmm(flat, flat_dilated.transpose(1, 2))  # (B,K,K)
    mass = flat.sum(-1)  # (B,K)
    norm = torch.sqrt(mass.unsqueeze(2) * flat_dilated.sum(-1).unsqueeze(1)) + eps
    adjacency = contact / norm
    adjacency = 0.5 * (adjacency + adjacency.transpose(1, 2))
    # not torch.eye: it exports as EyeLike, which TensorRT takes only for a static class count
    classes = torch.arange(k, device=probs.device)
    off_diagonal = (classes.unsqueeze(1) != classes.unsqueeze(0)).to(probs.dtype)
    return (adjacency * off_diagonal).clamp(0.0, 1.0)


def mask_pool(features: torch.Tensor, probs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean feature of each class region, weighted by its soft mask: (B,D,H,W),(B,K,H,W) → (B,K,D)."""
    weights = probs.flatten(2)
    pooled = torch.bmm(weights, features.flatten(2).transpose(1, 2))
    return pooled / (weights.sum(-1, keepdim=True) + eps)


class ClassGraphReasoning(nn.Module):
    """Message passing between class nodes; output = refined class embeddings.

    Node features combine the class text embedding with the mask-pooled image feature of that
    class. A gated residual keeps each class close to its own text embedding, which prevents
    the over-smoothing that makes deep GCN nodes indistinguishable.
    """

    def __init__(self, dim: int, layers: int = 2) -> None:
        super().__init__()
        self.node_in = nn.Linear(2 * dim, dim)
        self.convs = nn.ModuleList(DenseGCNConv(dim, dim) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.gate = nn.Linear(2 * dim, dim)
        # Start close to identity: the gate opens as training finds useful context.
        nn.init.constant_(self.gate.bias, -2.0)

    def forward(self, class_embeddings: torch.Tensor, pooled: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """class_embeddings, pooled: (B,K,D); adjacency: (B,K,K). Returns (B,K,D)."""
        h = self.node_in(torch.cat([class_embeddings, pooled], dim=-1))
        for conv, norm in zip(self.convs, self.norms):
            h = norm(h + F.gelu(conv(h, adjacency)))
        gate = torch.sigmoid(self.gate(torch.cat([class_embeddings, h], dim=-1)))
        return class_embeddings + gate * h
