"""The context-aware segmentation model: shapes, gradients, switches, graph, loss, checkpoints."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from casseg_ros.model import (
    BackboneWeightsError,
    ContextSegmentor,
    LossConfig,
    ModelConfig,
    SegmentationLoss,
    SwinBackbone,
    pixel_text_contrastive,
)
from casseg_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from casseg_ros.model.graph import ClassGraphReasoning, soft_spatial_adjacency
from model_factory import TINY, random_vocabulary, tiny_model

torch.set_num_threads(1)


@pytest.mark.parametrize("size", [(64, 128), (50, 75), (97, 33), (32, 32)])
@pytest.mark.parametrize("switches", [dict(fusion=True, graph=True), dict(fusion=False, graph=False)])
def test_forward_shapes_any_size(size, switches):
    model = tiny_model(num_classes=4, **switches)
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size), return_attention=True)
    h, w = size
    assert out.logits.shape == (2, 4, h, w) and out.logits.dtype == torch.float32
    assert out.pixel_embeddings.shape == (2, TINY["decoder_dim"], -(-h // 8), -(-w // 8))
    assert torch.allclose(out.pixel_embeddings.norm(dim=1), torch.ones(1), atol=1e-4)
    assert out.adjacency.shape == (2, 4, 4)
    assert float(out.adjacency.min()) >= 0.0 and float(out.adjacency.max()) <= 1.0
    assert torch.all(out.adjacency.diagonal(dim1=1, dim2=2) == 0)
    if switches["fusion"]:
        assert out.attention.shape == (2, 4, -(-h // 16), -(-w // 16))
        assert torch.allclose(out.attention.sum(1), torch.ones(1), atol=1e-4)  # softmax over classes
    else:
        assert out.attention is None


def test_gradients_reach_every_trainable_module():
    model = tiny_model(num_classes=4).train()
    images = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, 4, (2, 64, 96))
    labels[:, :5] = 255
    losses = SegmentationLoss(LossConfig(contrastive_weight=0.5))(model(images), labels)
    losses["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []
    for key in ("ce", "contrastive", "loss"):
        assert torch.isfinite(losses[key])


def test_switching_a_module_off_removes_its_parameters():
    full = tiny_model(fusion=True, graph=True)
    names = {n.split(".")[0] for n, _ in full.named_parameters()}
    assert {"fusion", "graph", "backbone", "decoder", "head", "text_proj", "pixel_proj"} <= names
    for off, module in (("fusion", "fusion"), ("graph", "graph")):
        model = tiny_model(**{off: False})
        assert getattr(model, module) is None
        assert not any(n.startswith(module + ".") for n, _ in model.named_parameters())
        assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())
    baseline = tiny_model(fusion=False, graph=False)
    assert {n.split(".")[0] for n, _ in baseline.named_parameters()} == {"backbone", "decoder", "text_proj", "pixel_proj", "head"}


def test_graph_reasoning_is_permutation_equivariant():
    torch.manual_seed(0)
    graph = ClassGraphReasoning(dim=16, layers=2).eval()
    probs = torch.rand(2, 5, 12, 20).softmax(1)
    emb = torch.randn(2, 5, 16)
    pooled = torch.randn(2, 5, 16)
    perm = torch.tensor([3, 0, 4, 1, 2])
    adjacency = soft_spatial_adjacency(probs)
    adjacency_perm = soft_spatial_adjacency(probs[:, perm])
    assert torch.allclose(adjacency_perm, adjacency[:, perm][:, :, perm], atol=1e-6)
    out = graph(emb, pooled, adjacency)
    out_perm = graph(emb[:, perm], pooled[:, perm], adjacency_perm)
    assert torch.allclose(out_perm, out[:, perm], atol=1e-5)
    # and it actually mixes information between nodes: changing one node changes the others
    emb2 = emb.clone()
    emb2[:, 0] += 1.0
    assert not torch.allclose(graph(emb2, pooled, adjacency)[:, 1:], out[:, 1:], atol=1e-4)


def test_whole_model_is_equivariant_to_vocabulary_order():
    model = tiny_model(num_classes=5)
    perm = [2, 4, 0, 1, 3]
    permuted = ContextSegmentor(model.config, random_vocabulary(5))
    state = dict(model.state_dict())
    state["class_embeddings"] = state["class_embeddings"][perm]
    permuted.load_state_dict(state)
    permuted.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), permuted(x)
    assert torch.allclose(b.logits, a.logits[:, perm], atol=1e-4)


def test_spatial_adjacency_reflects_touching_classes():
    probs = torch.zeros(1, 3, 10, 10)
    probs[0, 0, :5] = 1  # top half: class 0
    probs[0, 1, 5:, :5] = 1  # bottom-left: class 1
    probs[0, 2, 5:, 5:] = 1  # bottom-right: class 2
    adj = soft_spatial_adjacency(probs)[0]
    assert adj[0, 1] > 0 and adj[1, 2] > 0 and torch.allclose(adj, adj.t())
    probs2 = torch.zeros(1, 3, 10, 10)
    probs2[0, 0, :3] = 1
    probs2[0, 2, 3:7] = 1
    probs2[0, 1, 7:] = 1  # class 0 and 1 separated by class 2
    adj2 = soft_spatial_adjacency(probs2)[0]
    assert adj2[0, 1] == 0 and adj2[0, 2] > 0


def test_contrastive_loss_prefers_aligned_embeddings():
    torch.manual_seed(0)
    k, d = 6, 32
    text = torch.nn.functional.normalize(torch.randn(k, d), dim=-1)
    labels = torch.randint(0, k, (2, 16, 16))
    aligned = text[labels].permute(0, 3, 1, 2) + 0.05 * torch.randn(2, d, 16, 16)
    aligned = torch.nn.functional.normalize(aligned, dim=1)
    shuffled = text[torch.roll(torch.arange(k), 1)][labels].permute(0, 3, 1, 2)
    loss_aligned = pixel_text_contrastive(aligned, text, labels, temperature=0.1)
    loss_shuffled = pixel_text_contrastive(shuffled, text, labels, temperature=0.1)
    assert loss_aligned < 0.1 < loss_shuffled
    # ignored pixels contribute nothing
    all_ignored = torch.full_like(labels, 255)
    assert pixel_text_contrastive(aligned, text, all_ignored, temperature=0.1) == 0


def test_contrastive_switch_controls_the_loss_term():
    model = tiny_model(num_classes=3)
    out = model(torch.randn(1, 3, 32, 32))
    labels = torch.randint(0, 3, (1, 32, 32))
    assert "contrastive" not in SegmentationLoss(contrastive=False)(out, labels)
    with_term = SegmentationLoss(LossConfig(contrastive_weight=1.0), contrastive=True)(out, labels)
    assert torch.allclose(with_term["loss"], with_term["ce"] + with_term["contrastive"])


def test_checkpoint_round_trip(tmp_path):
    model = tiny_model(num_classes=4, graph=False)
    path = save_checkpoint(tmp_path / "m.safetensors", model, extra={"note": "t"})
    assert not [p for p in tmp_path.iterdir() if p.name != "m.safetensors"]  # no temp file left
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and loaded.class_names == model.class_names
    assert loaded.graph is None and not loaded.training
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_committed_demo_checkpoint_still_loads(tmp_path):
    """models/casseg_demo.safetensors loads with the colours it stores, and re-saving it round-trips
    bit for bit; a checkpoint written before the vocabulary codec (vocabulary metadata without
    'format'/'embedding_dim', as the demo's was until it was recoloured) loads too."""
    import json

    import safetensors.torch
    from safetensors import safe_open

    demo = Path(__file__).resolve().parent.parent / "models" / "casseg_demo.safetensors"
    with safe_open(str(demo), framework="pt") as handle:
        metadata = handle.metadata()
        stored = json.loads(metadata["vocabulary"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    model = load_checkpoint(demo)
    assert model.class_names == stored["names"]
    assert model.vocabulary.palette.tolist() == stored["palette"]
    assert torch.equal(torch.from_numpy(model.vocabulary.embeddings), tensors["class_embeddings"])
    again = load_checkpoint(save_checkpoint(tmp_path / "again.safetensors", model))
    assert again.vocabulary.to_dict() == model.vocabulary.to_dict()
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name

    legacy = {key: stored[key] for key in ("names", "palette", "provider", "descriptions")}
    old = tmp_path / "legacy.safetensors"
    old.write_bytes(safetensors.torch.save(tensors, metadata=dict(metadata, vocabulary=json.dumps(legacy))))
    loaded = load_checkpoint(old)
    assert loaded.class_names == stored["names"] and loaded.vocabulary.palette.tolist() == stored["palette"]


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    good = save_checkpoint(tmp_path / "good.safetensors", tiny_model())
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="unsupported"):
        (tmp_path / "x.bin").write_bytes(b"0")
        load_checkpoint(tmp_path / "x.bin")


class _Evil:
    def __reduce__(self):
        return (print, ("pickle executed",))


def test_weights_never_load_through_pickle(tmp_path):
    """``.pt`` files go through torch.load(weights_only=True): arbitrary objects are refused."""
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "model_config": {}, "vocabulary": _Evil()}, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(evil)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    # a legitimate weights-only file works
    model = tiny_model(num_classes=3)
    ok = tmp_path / "ok.pt"
    torch.save({"state_dict": model.state_dict(), "model_config": model.config.to_dict(),
                "vocabulary": model.vocabulary.to_dict()}, ok)
    assert load_checkpoint(ok).num_classes == 3


def test_backbone_pretrained_weights_from_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    from casseg_ros.model.backbone import SWIN_VARIANTS

    spec = dict(SWIN_VARIANTS["swin_nano"])
    arch = spec.pop("arch")
    torch.manual_seed(1)
    reference = timm.create_model(arch, pretrained=False, **spec)
    weights = tmp_path / "swin_nano.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    backbone = SwinBackbone("swin_nano", (64, 64), 0.0, str(weights))
    loaded = backbone.body.state_dict()
    assert torch.equal(loaded["patch_embed.proj.weight"], reference.state_dict()["patch_embed.proj.weight"])
    assert torch.equal(loaded["layers_2.blocks.1.mlp.fc1.weight"], reference.state_dict()["layers.2.blocks.1.mlp.fc1.weight"])
    with pytest.raises(BackboneWeightsError, match="shape mismatches|missing keys") as err:
        SwinBackbone("swin_micro", (64, 64), 0.0, str(weights))
    assert "layers_" in str(err.value)  # names the offending keys
    with pytest.raises(BackboneWeightsError, match="not found"):
        SwinBackbone("swin_nano", (64, 64), 0.0, str(tmp_path / "nope.safetensors"))
    pt = tmp_path / "w.pth"
    pt.write_bytes(b"x")
    with pytest.raises(BackboneWeightsError, match="safetensors"):
        SwinBackbone("swin_nano", (64, 64), 0.0, str(pt))


def test_config_validation():
    with pytest.raises(ValueError, match="output_stride"):
        ModelConfig(output_stride=16)
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"backbone": "swin_nano", "bogus": 1})
    with pytest.raises(ValueError, match="unknown Swin variant"):
        SwinBackbone("swin_giant")


def test_class_attention_is_multihead_attention_with_any_class_count():
    from casseg_ros.model.fusion import class_attention

    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(32, 2, batch_first=True).eval()
    queries = torch.randn(2, 40, 32)
    for k in (1, 5, 17):
        tokens = torch.randn(2, k, 32)
        expected, expected_weights = attn(queries, tokens, tokens, need_weights=True, average_attn_weights=True)
        out, weights = class_attention(attn, queries, tokens, need_weights=True)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)


def test_set_vocabulary_changes_the_classes_not_the_weights():
    model = tiny_model(num_classes=5)
    images = torch.randn(1, 3, 64, 96)
    weights = {k: v.clone() for k, v in model.state_dict().items() if k != "class_embeddings"}
    new = random_vocabulary(3, seed=9)
    with torch.no_grad():
        given = model(images, class_embeddings=torch.from_numpy(new.embeddings)).logits
        model.set_vocabulary(new)
        swapped = model(images).logits
    assert swapped.shape == (1, 3, 64, 96) and model.num_classes == 3 and model.class_names == new.names
    torch.testing.assert_close(swapped, given)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    with pytest.raises(ValueError, match="dimension 64.*384"):
        model.set_vocabulary(random_vocabulary(2, dim=64))
    assert model.num_classes == 3  # a refused vocabulary changes nothing
