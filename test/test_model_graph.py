"""The graph's node kinds (classes, regions) and edge definitions (spatial, semantic, both): what
each edge rule connects, equivariance, gradients, old configs, and exports that agree with PyTorch
(static shapes for regions, any class count for the class graph)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from casseg_ros.model import ModelConfig, SegmentationLoss
from casseg_ros.model.checkpoint import load_checkpoint, save_checkpoint
from casseg_ros.model.graph import (
    ClassGraphReasoning,
    GraphEdges,
    RegionGraphReasoning,
    semantic_adjacency,
    soft_spatial_adjacency,
    top_k_mask,
)
from casseg_ros.runtime import create_backend
from casseg_ros.export.parity import make_test_pattern
from model_factory import random_vocabulary, tiny_model

torch.set_num_threads(1)

VARIANTS = [dict(graph_nodes=n, graph_edges=e) for n in ("classes", "regions") for e in ("spatial", "semantic", "both")]


def _id(v: dict) -> str:
    return f"{v['graph_nodes']}-{v['graph_edges']}"


def test_top_k_mask_is_torch_topk():
    scores = torch.randn(3, 7, 7)
    for k in (1, 3, 6):
        expected = torch.zeros_like(scores).scatter_(-1, scores.topk(k, dim=-1).indices, 1.0)
        assert torch.equal(top_k_mask(scores, k), expected)
    assert torch.equal(top_k_mask(scores, 0), torch.ones_like(scores))
    assert torch.equal(top_k_mask(scores, 9), torch.ones_like(scores))  # k above N keeps all


def test_semantic_adjacency_keeps_the_k_most_similar_others():
    torch.manual_seed(0)
    q, k = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    adj = semantic_adjacency(q, k, top_k=2)
    assert adj.shape == (2, 6, 6) and torch.allclose(adj, adj.transpose(1, 2))
    assert torch.all(adj.diagonal(dim1=1, dim2=2) == 0) and adj.min() >= 0 and adj.max() <= 1
    # before symmetrising, each node puts its weight on its 2 best-scoring other nodes
    scores = (q @ k.transpose(1, 2)) - 1e4 * torch.eye(6)
    rows = torch.zeros_like(scores).scatter_(-1, scores.topk(2, dim=-1).indices, 1.0)
    assert torch.all((adj > 0) == ((rows + rows.transpose(1, 2)) > 0))
    one = semantic_adjacency(torch.randn(1, 1, 8), torch.randn(1, 1, 8), top_k=2)  # a one-node graph
    assert torch.equal(one, torch.zeros(1, 1, 1))


def test_semantic_edges_connect_nodes_whose_masks_never_touch():
    """Node 0 and node 2 are far apart in the image: spatial messages cannot pass between them in
    one layer, semantic ones can."""
    masks = torch.zeros(1, 3, 12, 12)
    masks[0, 0, :, :3], masks[0, 1, :, 3:9], masks[0, 2, :, 9:] = 1, 1, 1  # 0 | 1 | 2
    spatial = soft_spatial_adjacency(masks)
    assert spatial[0, 0, 2] == 0 and spatial[0, 0, 1] > 0
    torch.manual_seed(0)
    for kind, reaches in (("spatial", False), ("semantic", True), ("both", True)):
        graph = ClassGraphReasoning(dim=8, layers=1, edges=kind).eval()
        emb, pooled = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
        changed = pooled.clone()
        changed[0, 2] += 3.0
        with torch.no_grad():
            delta = (graph(emb, changed, spatial) - graph(emb, pooled, spatial))[0, 0].abs().max()
        assert (delta > 1e-4) == reaches, (kind, float(delta))


@pytest.mark.parametrize("edges", ["semantic", "both"])
def test_class_graph_with_learned_edges_is_permutation_equivariant(edges):
    torch.manual_seed(0)
    graph = ClassGraphReasoning(dim=16, layers=2, edges=edges, top_k=2).eval()
    probs = torch.rand(2, 5, 12, 20).softmax(1)
    emb, pooled = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = graph(emb, pooled, soft_spatial_adjacency(probs))
    out_perm = graph(emb[:, perm], pooled[:, perm], soft_spatial_adjacency(probs[:, perm]))
    assert torch.allclose(out_perm, out[:, perm], atol=1e-5)


def test_edge_parameters_exist_only_where_used():
    assert list(GraphEdges(8, "spatial").parameters()) == []
    assert {n for n, _ in GraphEdges(8, "semantic").named_parameters()} == {"query.weight", "query.bias",
                                                                           "key.weight", "key.bias"}
    assert "mix" in dict(GraphEdges(8, "both").named_parameters())
    with pytest.raises(ValueError, match="edge definition"):
        GraphEdges(8, "temporal")
    assert ClassGraphReasoning(8, layers=0, edges="both").edges is None  # no messages, no edges


def test_region_assignment_is_a_soft_partition_and_messages_cross_the_image():
    torch.manual_seed(0)
    graph = RegionGraphReasoning(dim=16, regions=4, iterations=3, layers=2, edges="semantic").eval()
    pixels = torch.randn(2, 16, 10, 30)
    with torch.no_grad():
        refined, maps = graph(pixels)
    assert refined.shape == pixels.shape and maps.shape == (2, 4, 10, 30)
    assert torch.allclose(maps.sum(1), torch.ones(2, 10, 30), atol=1e-5) and maps.min() >= 0
    changed = pixels.clone()
    changed[:, :, :, 20:] += 2.0  # the right third of the image
    with torch.no_grad():
        far, _ = graph(changed)
    assert not torch.allclose(far[..., :10], refined[..., :10], atol=1e-4)  # reaches the left third


def test_soft_k_means_moves_the_centres_to_the_image_features():
    """Two pixel clusters, two seeds that lie between them: the unrolled k-means iterations pull each
    centre onto its cluster, so the assignment gets sharper than the seeds alone make it."""
    graph = RegionGraphReasoning(dim=3, regions=2, iterations=3, layers=0)
    with torch.no_grad():
        graph.cluster_proj.weight.copy_(torch.eye(3))
        graph.cluster_proj.bias.zero_()
        graph.seeds.copy_(torch.tensor([[1.0, 0.8, 1.0], [0.8, 1.0, 1.0]]))
    left, right = torch.tensor([1.0, 0.3, 0.0]), torch.tensor([0.3, 1.0, 0.0])
    pixels = torch.stack([left] * 10 + [right] * 10).unsqueeze(0)  # (1,20,3)
    with torch.no_grad():
        iterated = graph.assign(pixels)
        graph.iterations = 0
        seeds_only = graph.assign(pixels)
    for assignment in (iterated, seeds_only):
        assert torch.all(assignment[0, :10].argmax(-1) == 0) and torch.all(assignment[0, 10:].argmax(-1) == 1)
    assert float(seeds_only.max(-1).values.mean()) < 0.8 < 0.95 < float(iterated.max(-1).values.mean())


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_every_variant_trains_and_returns_its_maps(variant):
    model = tiny_model(num_classes=4, fusion=True, graph=True, **variant).train()
    images, labels = torch.randn(2, 3, 50, 75), torch.randint(0, 4, (2, 50, 75))
    out = model(images, return_attention=True)
    assert out.logits.shape == (2, 4, 50, 75) and out.adjacency.shape == (2, 4, 4)
    if variant["graph_nodes"] == "regions":
        regions = model.config.graph_regions
        assert out.assignment.shape == (2, regions, 7, 10)  # the stride-8 grid of 50x75
        assert torch.allclose(out.assignment.sum(1), torch.ones(1), atol=1e-5)
        assert model(images).assignment is None  # only when asked, like the attention maps
    else:
        assert out.assignment is None
    SegmentationLoss()(out, labels)["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_region_graph_is_equivariant_to_vocabulary_order():
    """Regions act on pixels, before the head: the classes still enter only through the cosine head."""
    model = tiny_model(num_classes=5, graph_nodes="regions", graph_edges="both")
    perm = [2, 4, 0, 1, 3]
    x = torch.randn(1, 3, 64, 64)
    emb = torch.from_numpy(model.vocabulary.embeddings)
    with torch.no_grad():
        a = model(x, class_embeddings=emb).logits
        b = model(x, class_embeddings=emb[perm]).logits
    assert torch.allclose(b, a[:, perm], atol=1e-4)


def test_configs_without_the_graph_keys_mean_the_class_graph_with_spatial_edges(tmp_path):
    old = {k: v for k, v in ModelConfig(backbone="swin_nano").to_dict().items() if not k.startswith("graph_")}
    old["graph_layers"] = 2
    config = ModelConfig.from_dict(old)
    assert (config.graph_nodes, config.graph_edges) == ("classes", "spatial")
    model = tiny_model(num_classes=3, graph_nodes="regions", graph_edges="semantic", graph_regions=5)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "r.safetensors", model))
    assert loaded.config == model.config and isinstance(loaded.graph, RegionGraphReasoning)
    for bad, match in ((dict(graph_nodes="pixels"), "graph_nodes"), (dict(graph_edges="temporal"), "graph_edges"),
                       (dict(graph_regions=0), "graph_regions"), (dict(graph_layers=-1), "graph_layers")):
        with pytest.raises(ValueError, match=match):
            ModelConfig(**bad)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [dict(graph_nodes="regions", graph_edges="both", graph_topk=3),
                                     dict(graph_nodes="regions", graph_edges="spatial"),
                                     dict(graph_nodes="classes", graph_edges="semantic", graph_topk=3)], ids=_id)
def test_exported_graph_agrees_with_pytorch_for_any_class_count(tmp_path, variant):
    """Through the backends the node uses (export + ONNX Runtime); the class graph's top-k must also
    hold with fewer classes than k (K = 2) and with more (K = 7) than the export was traced with."""
    model = tiny_model(num_classes=5, **variant)
    ckpt = save_checkpoint(tmp_path / "m.safetensors", model)
    size = (64, 128)
    backends = {name: create_backend(name, ckpt, input_size=size, onnx_cache_dir=tmp_path, num_threads=1)
                for name in ("torch", "onnxruntime")}
    images = np.stack([make_test_pattern(*size), make_test_pattern(*size)[:, ::-1].copy()])
    for k in (5, 2, 7):
        for backend in backends.values():
            backend.set_vocabulary(random_vocabulary(k, seed=k))
        rt, ro = (backends[n].infer(images) for n in ("torch", "onnxruntime"))
        assert rt.class_scores.shape == ro.class_scores.shape == (2, k)
        assert (rt.class_ids == ro.class_ids).mean() >= 0.999
        assert np.abs(rt.confidence - ro.confidence).max() <= 1e-3
        assert np.abs(rt.adjacency - ro.adjacency).max() <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("variant", [dict(graph_nodes="regions", graph_edges="both", graph_topk=3),
                                     dict(graph_nodes="classes", graph_edges="semantic", graph_topk=3)], ids=_id)
def test_exported_graph_variants_parse_in_tensorrt10_with_static_shapes(tmp_path, variant):
    """Checked against TensorRT 10's parser table (no TensorRT here): every operator and restriction,
    and, with the class count pinned as one optimisation-profile shape builds it, every shape static."""
    import onnx

    from casseg_ros.runtime.model_export import export_checkpoint
    from casseg_ros.export.quantize import fold_shape_arithmetic
    from casseg_ros.runtime.tensorrt_support import pin_class_count, shape_problems, tensorrt_problems

    ckpt = save_checkpoint(tmp_path / "m.safetensors", tiny_model(num_classes=5, **variant))
    onnx_path, _ = export_checkpoint(ckpt, tmp_path / "m.onnx", (64, 128))
    assert tensorrt_problems(onnx.load(str(onnx_path))) == []
    # EyeLike takes only a static input, even under a profile over the class count
    assert not [p for p in shape_problems(onnx.load(str(onnx_path))) if "EyeLike" in p]
    pinned = tmp_path / "k7.onnx"
    onnx.save(pin_class_count(onnx.load(str(onnx_path)), 7), str(pinned))
    fold_shape_arithmetic(pinned, tmp_path / "k7-folded.onnx")
    assert shape_problems(onnx.load(str(tmp_path / "k7-folded.onnx"))) == []
