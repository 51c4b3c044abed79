"""Graph reasoning (torch_geometric dense GCN) over class nodes or region nodes.

Two node kinds (``ModelConfig.graph_nodes``):

* ``classes`` (``ClassGraphReasoning``): one node per class, its text embedding plus the
  mask-pooled image feature of that class; the refined nodes are the class embeddings the head
  scores against.
* ``regions`` (``RegionGraphReasoning``): N nodes found from the fused pixel features by soft
  k-means (a fixed number of unrolled iterations, so every shape is static); the refined region
  features go back to the pixels through the soft assignment.

Three edge definitions (``ModelConfig.graph_edges``, ``GraphEdges``) for either kind: ``spatial``
(soft contact of the nodes' masks, ``soft_spatial_adjacency``), ``semantic`` (learned scaled
dot-product similarity of the node features, top-k per node, ``semantic_adjacency``) and ``both``
(their gated sum). Every operation treats nodes alike, so the class graph stays equivariant to
the vocabulary order and runs with any class count K, exported or not.
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():
    # torch_geometric 2.8 runs torch.jit.script on its own classes at import, which torch 2.14 answers
    # with a FutureWarning: printed by every command (--help included) about code that is not ours.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from torch_geometric.nn import DenseGCNConv

# Masked logits: finite, so a row with every entry masked (a one-node graph) stays NaN-free in fp16.
_MASKED = -1.0e4


def no_self_loops(n: int, like: torch.Tensor) -> torch.Tensor:
    """(n, n) ones with a zero diagonal, in ``like``'s dtype and device."""
    # not torch.eye: it exports as EyeLike, which TensorRT takes only for a static node count
    nodes = torch.arange(n, device=like.device)
    return (nodes.unsqueeze(1) != nodes.unsqueeze(0)).to(like.dtype)


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
    """Mean feature of each soft mask: (B,D,H,W),(B,N,H,W) → (B,N,D)."""
    weights = probs.flatten(2)
    pooled = torch.bmm(weights, features.flatten(2).transpose(1, 2))
    return pooled / (weights.sum(-1, keepdim=True) + eps)


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B,N,N) float mask of the k largest entries of each row (all of them for k = 0 or k >= N).

    An entry's rank is the number of larger entries in its row, counted by comparison instead of
    ``torch.topk``: TopK needs k <= N, and the class count N is a run-time input of exported graphs.
    """
    if k <= 0:
        return torch.ones_like(scores)
    larger = (scores.unsqueeze(-1) < scores.unsqueeze(-2)).to(scores.dtype).sum(-1)  # (B,N,N)
    return (larger < k).to(scores.dtype)


def semantic_adjacency(queries: torch.Tensor, keys: torch.Tensor, top_k: int = 0) -> torch.Tensor:
    """Semantic edges: learned similarity of node features, whatever their positions in the image.

    queries, keys: (B,N,d) projections of the node features. Scaled dot product, each node keeps
    its ``top_k`` most similar other nodes (0 = all), softmax over those, then symmetrised: (B,N,N),
    zero diagonal, in [0, 1].
    """
    n, d = queries.shape[1], queries.shape[2]
    scores = torch.matmul(queries, keys.transpose(1, 2)) * d**-0.5
    others = no_self_loops(n, scores)
    scores = scores + (1.0 - others) * _MASKED  # never its own neighbour
    kept = top_k_mask(scores, top_k) * others
    weights = (scores + (1.0 - kept) * _MASKED).softmax(-1) * kept
    return (0.5 * (weights + weights.transpose(1, 2))).clamp(0.0, 1.0)


class GraphEdges(nn.Module):
    """The edge definition of a graph: ``spatial``, ``semantic`` or ``both`` (a learned gated sum).

    Only the parameters the definition uses exist, so a spatial graph has none here (and the class
    graph's checkpoints from before edge definitions load unchanged).
    """

    def __init__(self, dim: int, kind: str = "spatial", top_k: int = 0) -> None:
        super().__init__()
        if kind not in ("spatial", "semantic", "both"):
            raise ValueError(f"unknown edge definition {kind!r} (expected spatial, semantic or both)")
        self.kind = kind
        self.top_k = int(top_k)
        self.query: Optional[nn.Linear] = None
        self.key: Optional[nn.Linear] = None
        self.mix: Optional[nn.Parameter] = None
        if kind != "spatial":
            self.query = nn.Linear(dim, dim)
            self.key = nn.Linear(dim, dim)
        if kind == "both":
            self.mix = nn.Parameter(torch.zeros(()))  # sigmoid(0): both definitions weigh the same at init

    @property
    def needs_spatial(self) -> bool:
        return self.kind != "semantic"

    def forward(self, nodes: torch.Tensor, spatial: Optional[torch.Tensor]) -> torch.Tensor:
        """nodes: (B,N,D) node features; spatial: (B,N,N) soft contact (unused for ``semantic``)."""
        if self.kind == "spatial":
            return spatial
        semantic = semantic_adjacency(self.query(nodes), self.key(nodes), self.top_k)
        if self.kind == "semantic":
            return semantic
        gate = torch.sigmoid(self.mix)
        return gate * spatial + (1.0 - gate) * semantic


def message_passing(h: torch.Tensor, adjacency: torch.Tensor, convs: nn.ModuleList,
                    norms: nn.ModuleList) -> torch.Tensor:
    """Dense GCN layers, each with a post-norm residual: h (B,N,D), adjacency (B,N,N) non-negative
    weights → (B,N,D). No layers: h unchanged."""
    for conv, norm in zip(convs, norms):
        h = norm(h + F.gelu(conv(h, adjacency)))
    return h


class ClassGraphReasoning(nn.Module):
    """Message passing between class nodes; output = refined class embeddings.

    Node features combine the class text embedding with the mask-pooled image feature of that
    class. A gated residual keeps each class close to its own text embedding, which prevents
    the over-smoothing that makes deep GCN nodes indistinguishable.
    """

    def __init__(self, dim: int, layers: int = 2, edges: str = "spatial", top_k: int = 0) -> None:
        super().__init__()
        self.node_in = nn.Linear(2 * dim, dim)
        # no layers, no messages: then no edges either (nor their parameters)
        self.edges = GraphEdges(dim, edges, top_k) if layers else None
        self.convs = nn.ModuleList(DenseGCNConv(dim, dim) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.gate = nn.Linear(2 * dim, dim)
        # Start close to identity: the gate opens as training finds useful context.
        nn.init.constant_(self.gate.bias, -2.0)

    @property
    def needs_spatial(self) -> bool:
        """Whether ``forward`` reads the classes' spatial contact (the caller computes it)."""
        return self.edges is not None and self.edges.needs_spatial

    def forward(self, class_embeddings: torch.Tensor, pooled: torch.Tensor,
                spatial: Optional[torch.Tensor]) -> torch.Tensor:
        """class_embeddings, pooled: (B,K,D); spatial: (B,K,K) soft contact of the classes (None
        for semantic edges). Returns (B,K,D)."""
        h = self.node_in(torch.cat([class_embeddings, pooled], dim=-1))
        if self.edges is not None:
            h = message_passing(h, self.edges(h, spatial), self.convs, self.norms)
        gate = torch.sigmoid(self.gate(torch.cat([class_embeddings, h], dim=-1)))
        return class_embeddings + gate * h


class RegionGraphReasoning(nn.Module):
    """Message passing between N region nodes found from the pixel features; output = refined pixels.

    Regions: soft k-means on L2-normalised projections of the pixel features, started from N
    learned seeds, ``iterations`` unrolled updates (assignment = softmax over regions of the scaled
    cosine to each centre; centre = assignment-weighted mean). Node features are the
    assignment-pooled pixel features; after message passing each pixel receives the refined
    features of its regions (weighted by its assignment) through a gated residual that starts
    almost closed, the same guard against over-smoothing as the class graph's.
    """

    def __init__(self, dim: int, regions: int = 8, iterations: int = 3, layers: int = 2, edges: str = "spatial",
                 top_k: int = 0) -> None:
        super().__init__()
        self.regions = int(regions)
        self.iterations = int(iterations)
        self.cluster_proj = nn.Linear(dim, dim)
        self.seeds = nn.Parameter(torch.randn(self.regions, dim))
        self.log_sharpness = nn.Parameter(torch.tensor(2.3))  # exp: cosine scale ≈ 10
        self.node_in = nn.Linear(dim, dim)
        # no layers, no messages: then no edges either (nor their parameters)
        self.edges = GraphEdges(dim, edges, top_k) if layers else None
        self.convs = nn.ModuleList(DenseGCNConv(dim, dim) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.node_out = nn.Linear(dim, dim)
        self.gate = nn.Linear(2 * dim, dim)
        nn.init.constant_(self.gate.bias, -2.0)

    def assign(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (B,P,D) → soft assignment (B,P,N), rows sum to 1."""
        points = F.normalize(self.cluster_proj(pixels), dim=-1)  # (B,P,D)
        centres = F.normalize(self.seeds, dim=-1).unsqueeze(0).expand(points.shape[0], -1, -1)  # (B,N,D)
        sharpness = self.log_sharpness.exp()
        for _ in range(self.iterations):
            assignment = (sharpness * torch.bmm(points, centres.transpose(1, 2))).softmax(-1)  # (B,P,N)
            centres = F.normalize(torch.bmm(assignment.transpose(1, 2), points), dim=-1)  # weighted mean, on the sphere
        return (sharpness * torch.bmm(points, centres.transpose(1, 2))).softmax(-1)

    def forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """pixels: (B,D,H,W) fused pixel features. Returns refined pixels (B,D,H,W) and the
        assignment maps (B,N,H,W)."""
        b, d, h, w = pixels.shape
        flat = pixels.flatten(2).transpose(1, 2)  # (B,HW,D)
        assignment = self.assign(flat)  # (B,HW,N)
        maps = assignment.transpose(1, 2).reshape(b, self.regions, h, w)
        nodes = self.node_in(mask_pool(pixels, maps))  # (B,N,D)
        if self.edges is not None:
            spatial = None
            if self.edges.needs_spatial:
                # on a 2x coarser grid, like the class graph's: contact is a region-level statistic
                spatial = soft_spatial_adjacency(F.avg_pool2d(maps, 2, ceil_mode=True))
            nodes = message_passing(nodes, self.edges(nodes, spatial), self.convs, self.norms)
        nodes = self.node_out(nodes)
        back = torch.bmm(assignment, nodes)  # (B,HW,D): each pixel's regions, by its assignment
        gate = torch.sigmoid(self.gate(torch.cat([flat, back], dim=-1)))
        refined = flat + gate * back
        return refined.transpose(1, 2).reshape(b, d, h, w), maps
