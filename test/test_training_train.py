"""Training loop: configs, exact CPU resume, TensorBoard/checkpoints, DDP (2 gloo processes)."""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from casseg_ros.model.checkpoint import load_checkpoint
from casseg_ros.text import Vocabulary
from test_training_datasets import make_ade20k, make_bdd100k, make_cityscapes, make_coco, make_vistas
from training.config import load_config
from training.datasets import build_dataset
from training.train import rng_state, set_rng_state, train, vocabulary_cache_path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "training" / "configs").glob("*.yaml"))


def test_all_configs_parse_and_switch_the_right_modules():
    from casseg_ros.model import ModelConfig

    assert len(CONFIGS) == 30  # 5 variants x 6 datasets
    expected = {"baseline": (False, False, False), "fusion": (True, False, False), "graph": (False, True, False),
                "contrastive": (False, False, True), "full": (True, True, True)}
    for path in CONFIGS:
        cfg = load_config(str(path))
        variant, dataset = path.stem.split("_", 1)
        mc = ModelConfig.from_dict(cfg.model)
        assert (mc.fusion, mc.graph, mc.contrastive) == expected[variant], path.name
        assert cfg.data.name == dataset and cfg.optim.name == "adam"
        if dataset != "context_scenes":  # the paper's settings
            assert cfg.optim.lr == 1e-4 and cfg.optim.batch_size == 16 and mc.backbone == "swin_tiny"
    with pytest.raises(ValueError, match="unknown"):
        load_config(str(CONFIGS[0]), ["optim.lrr=1"])


def tiny_config(tmp_path, name="tiny", **over):
    d = {
        "name": name,
        "model": dict(backbone="swin_nano", img_size=[32, 64], decoder_dim=32, drop_path_rate=0.2,
                      output_stride=8, fusion=True, graph=True, contrastive=True),
        "data": dict(name="context_scenes", num_train=16, num_val=2, height=32, width=64, seed=0,
                     crop_size=[32, 64], scale_range=[0.8, 1.25], num_workers=1),
        "optim": dict(lr=1e-3, batch_size=4),
        "loss": dict(contrastive_weight=0.5),
        "train": dict(steps=4, checkpoint_every=2, log_every=1, out_dir=str(tmp_path / name), seed=3,
                      num_threads=1, vocab_cache=str(tmp_path / "vocab")),
    }
    for k, v in over.items():
        sec, key = k.split("__")
        d[sec][key] = v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def seed_vocab(tmp_path, names):
    """Pre-fill the vocabulary cache (fixed random embeddings) so tests need no text model."""
    emb = np.random.default_rng(0).normal(size=(len(names), 16)).astype(np.float32)
    Vocabulary(names=list(names), embeddings=emb, provider="test").save(
        vocabulary_cache_path(list(names), "local", str(tmp_path / "vocab")))


def test_rng_state_roundtrip_weights_only(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    import random
    random.seed(3)
    st = rng_state()
    torch.save(st, tmp_path / "rng.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


@pytest.mark.slow
def test_resume_is_bit_identical_on_cpu(tmp_path):
    from training.datasets import CONTEXT_CLASSES

    seed_vocab(tmp_path, CONTEXT_CLASSES)
    straight = load_config(str(tiny_config(tmp_path, "straight")))
    train(straight, progress=False)
    # interrupted after 2 steps (a checkpoint), then the same command continues to 4
    split = load_config(str(tiny_config(tmp_path, "split")), ["train.steps=2"])
    train(split, progress=False)
    first = torch.load(tmp_path / "split" / "train_state.pt", weights_only=True)
    assert first["step"] == 2
    # control: the same continuation without the saved RNG streams must NOT match
    shutil.copytree(tmp_path / "split", tmp_path / "norng")
    os.remove(tmp_path / "norng" / "rng_rank0.pt")
    train(load_config(str(tiny_config(tmp_path, "norng"))), progress=False)
    resumed = load_config(str(tiny_config(tmp_path, "split")))
    train(resumed, progress=False)
    a = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    # the weights did move between step 2 and 4 (so equality above is not trivial)
    assert any(not torch.equal(first["model"][k], b["model"][k]) for k in b["model"])
    c = torch.load(tmp_path / "norng" / "train_state.pt", weights_only=True)
    assert c["step"] == 4 and any(not torch.equal(a["model"][k], c["model"][k]) for k in a["model"])
    # outputs of a run: safetensors via the model's save_checkpoint, TensorBoard, metrics

    out = tmp_path / "split"
    m = load_checkpoint(out / "model_final.safetensors")
    assert m.class_names == CONTEXT_CLASSES and m.config.fusion and m.config.graph
    assert glob.glob(str(out / "tb" / "events.out.tfevents.*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 4 and 0 <= metrics["val_miou"] <= 1
    assert (out / "config.yaml").is_file()
    assert json.loads((out / "vocabulary.json").read_text())["provider"] == "test"  # the cache was used
    assert not list(out.rglob(".*.tmp"))  # atomic writes left no temp file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(tmp_path):
    from training.datasets import CONTEXT_CLASSES

    seed_vocab(tmp_path, CONTEXT_CLASSES)
    cfg = tiny_config(tmp_path, "ddp", train__steps=2, train__checkpoint_every=2, data__num_workers=0)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "training.train", "--config", str(cfg), "--no-progress"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "ddp"
    st = torch.load(out / "train_state.pt", weights_only=True)
    assert st["world_size"] == 2 and st["step"] == 2
    assert (out / "rng_rank0.pt").is_file() and (out / "rng_rank1.pt").is_file()
    r0 = torch.load(out / "rng_rank0.pt", weights_only=True)["torch"]
    r1 = torch.load(out / "rng_rank1.pt", weights_only=True)["torch"]
    assert not torch.equal(r0, r1)  # per-rank streams
    assert (out / "model_final.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cityscapes", "coco", "ade20k", "bdd100k", "mapillary_vistas"])
def test_paper_configs_train_and_evaluate_on_fixtures(tmp_path, dataset):
    """The reproduction configs run end to end through `training.train` (tiny backbone, a few steps,
    real-layout fixtures), the per-class table included."""
    root = tmp_path / dataset
    if dataset == "cityscapes":
        make_cityscapes(root, split="train", h=64, w=128)
        make_cityscapes(root, split="val", h=64, w=128)
    elif dataset == "coco":
        make_coco(root, split="train")
        make_coco(root, split="val")
    elif dataset == "ade20k":
        make_ade20k(root, "training", count=4)
        make_ade20k(root, "validation")
    elif dataset == "bdd100k":
        make_bdd100k(root, "train", count=4)
        make_bdd100k(root, "val")
    else:
        make_vistas(root, "training", count=4)
        make_vistas(root, "validation")
    config = REPO / "training" / "configs" / f"full_{dataset}.yaml"
    names = list(build_dataset(load_config(str(config), [f"data.root={root}"]).data, "val").class_names)
    seed_vocab(tmp_path, names)
    cfg = load_config(str(config), [
        "model.backbone=swin_nano", "model.backbone_weights=null", "model.img_size=[32,64]", f"data.root={root}",
        "data.crop_size=[32,64]", "data.base_size=0", "data.eval_size=null", "data.num_workers=0",
        "optim.batch_size=2", "train.steps=2", "train.checkpoint_every=1", "train.eval_every=0",
        "train.num_threads=1", f"train.out_dir={tmp_path / 'out'}", f"train.vocab_cache={tmp_path / 'vocab'}"])
    assert cfg.optim.lr == 1e-4 and cfg.optim.name == "adam"  # the paper's settings survive the overrides
    m = train(cfg, progress=False)
    assert m["step"] == 2 and 0 <= m["val_miou"] <= 1
    assert (m["val_map"] is not None) == (dataset == "coco")
    assert list(m["per_class_iou"]) == names
    assert (tmp_path / "out" / "eval_val" / "per_class_iou.md").is_file()
    # the second step moved the weights (a loss over this dataset's labels with gradients)
    after_one = load_checkpoint(tmp_path / "out" / "model_step1.safetensors").state_dict()
    after_two = load_checkpoint(tmp_path / "out" / "model_final.safetensors").state_dict()
    assert any(not torch.equal(after_one[k], after_two[k]) for k in after_two)


def test_the_graph_ablation_and_names_configs():
    """training/configs/long_range: the baseline and {classes, regions} x {spatial, semantic, both}, graph
    only; training/configs/names: the demo model with and without the name pool, nothing else apart."""
    from casseg_ros.model import ModelConfig

    long_range = sorted((REPO / "training" / "configs" / "long_range").glob("*.yaml"))
    seen = set()
    for path in long_range:
        cfg = load_config(str(path))
        mc = ModelConfig.from_dict(cfg.model)
        assert not mc.fusion and not mc.contrastive and cfg.data.layout == "long_range", path.name
        assert cfg.data.scale_range == (1.0, 1.0) and cfg.data.width >= 672
        seen.add("baseline" if not mc.graph else f"{mc.graph_nodes}-{mc.graph_edges}")
        assert path.stem in seen
    assert len(long_range) == len(seen) == 7
    control, names = (load_config(str(REPO / "training" / "configs" / "names" / f"{n}.yaml")) for n in ("control", "names"))
    assert control.train.paraphrases == "" and (REPO / names.train.paraphrases).is_file()
    assert control.train.prompt_templates == names.train.prompt_templates and len(names.train.prompt_templates) >= 3
    assert control.model == names.model and control.data == names.data and control.optim == names.optim
    assert {k: v for k, v in vars(control.train).items() if k not in ("paraphrases", "out_dir")} == \
        {k: v for k, v in vars(names.train).items() if k not in ("paraphrases", "out_dir")}


@pytest.mark.slow
def test_names_training_records_its_prompts_and_pool(tmp_path):
    """Every name embedded as the mean over the templates; the checkpoint says which templates and pool."""
    from casseg_ros.model.checkpoint import read_checkpoint
    from casseg_ros.text import build_vocabulary
    from model_factory import local_vocabulary
    from training.datasets import CONTEXT_CLASSES

    local_vocabulary(("road",))  # sets the hub offline, as every test using the bundled model does
    templates = ["a photo of a {name}.", "{name}"]
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump({"road": ["roadway"], "car": ["sedan"]}))
    path = tiny_config(tmp_path, "names", train__paraphrases=str(pool), train__prompt_templates=templates,
                       train__steps=2)
    m = train(load_config(str(path)), progress=False)
    assert m["step"] == 2
    state, meta = read_checkpoint(tmp_path / "names" / "model_final.safetensors")
    assert meta["extra"]["prompt_templates"] == templates and meta["extra"]["name_pool"] == str(pool)
    expected = build_vocabulary(CONTEXT_CLASSES, "local", templates=templates).embeddings
    np.testing.assert_allclose(state["class_embeddings"].numpy(), expected, atol=1e-6)
