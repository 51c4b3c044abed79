"""The long-range context scenes (the cue beyond a Swin window) and the graph ablation's checks:
the cue swap, the paired confidence interval, the run schedule, and that the baseline backbone
structurally cannot see the cue at the benchmark size while a graph model can."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy import stats

from casseg_ros.model import ContextSegmentor, ModelConfig
from casseg_ros.runtime.base import InferenceResult
from model_factory import random_vocabulary
from training.config import DataConfig
from training.datasets import CONTEXT_CLASSES, LongRangeContextScenes, build_dataset
from training.graph_ablation import (
    NormStatisticsReplay,
    cue_swap,
    groupnorm_check,
    hold,
    paired_ci95,
    release,
    schedule,
)
from training.make_configs import GRAPH_VARIANTS

torch.set_num_threads(1)
C = {n: i for i, n in enumerate(CONTEXT_CLASSES)}
H, W = 64, 672  # the benchmark size: every stage's map a whole number of windows (see long_range_scenes.py)


def _columns(mask: np.ndarray) -> np.ndarray:
    return np.nonzero(mask.any(0))[0]


@pytest.mark.slow
def test_long_range_scenes_are_deterministic_and_differ_only_in_the_far_cue():
    ds = LongRangeContextScenes(30, H, W, seed=4)
    sides, gaps = set(), []
    for i in range(30):
        street, harbour = ds.generate(i, scene="street"), ds.generate(i, scene="harbour")
        np.testing.assert_array_equal(ds[i][0], LongRangeContextScenes(30, H, W, seed=4)[i][0])
        cue = street.label == C["road"]
        np.testing.assert_array_equal(cue, harbour.label == C["water"])
        vehicle = street.label == C["car"]
        np.testing.assert_array_equal(vehicle, harbour.label == C["boat"])
        assert vehicle.any() and cue.any()
        assert not (street.label == C["water"]).any() and not (harbour.label == C["road"]).any()
        # the two renderings are pixel-identical outside the cue zone: vehicles included
        np.testing.assert_array_equal(street.image[~cue], harbour.image[~cue])
        # the shadows are paved ground, like everything around the vehicles
        np.testing.assert_array_equal(street.label[~cue & ~vehicle], harbour.label[~cue & ~vehicle])
        cue_cols, vehicle_cols = _columns(cue), _columns(vehicle)
        left = cue_cols.max() < W / 2
        sides.add(left)
        gaps.append(vehicle_cols.min() - cue_cols.max() if left else cue_cols.min() - vehicle_cols.max())
        assert len(street.instance_classes) == street.instance_map.max()
    assert sides == {True, False}  # the cue is at either edge
    assert min(gaps) >= 360, min(gaps)  # beyond a 224-px window plus the shifted and decoder reach


def test_build_dataset_knows_the_layout():
    cfg = DataConfig(layout="long_range", height=H, width=W, num_train=3, num_val=2)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert isinstance(train, LongRangeContextScenes) and len(val) == 2 and val.seed != train.seed
    assert train[0][0].shape == (H, W, 3)
    with pytest.raises(ValueError, match="layout"):
        build_dataset(DataConfig(layout="panorama"), "train")


def _model(norm: str = "pixel", **graph) -> ContextSegmentor:
    torch.manual_seed(0)
    config = ModelConfig(backbone="swin_nano", img_size=(H, W), decoder_dim=32, output_stride=8, fusion=False,
                         contrastive=False, drop_path_rate=0.0, decoder_norm=norm, **({"graph": False} | graph))
    return ContextSegmentor(config, random_vocabulary(len(CONTEXT_CLASSES))).eval()


def _cue_gradient(model: ContextSegmentor, scene) -> float:
    """Largest |d (car - boat logit over the vehicle pixels) / d (cue pixel)|."""
    x = model.normalize_uint8(torch.from_numpy(scene.image)[None]).requires_grad_(True)
    logits = model(x).logits[0]
    vehicle = torch.from_numpy(scene.label == C["car"])
    (logits[C["car"]][vehicle].sum() - logits[C["boat"]][vehicle].sum()).backward()
    return float(x.grad[0].abs().sum(0)[torch.from_numpy(scene.label == C["road"])].max())


def test_the_baseline_cannot_reach_the_cue_but_a_graph_can():
    """With the per-pixel decoder norm, the baseline's vehicle logits do not depend on any cue pixel
    (up to exp(-100) of Swin's masked attention, a denormal); the region graph's and, through the
    image-wide statistics, a GroupNorm baseline's do."""
    ds = LongRangeContextScenes(4, H, W, seed=1)
    blind, groupnorm = _model(), _model("group")
    sees = _model(graph=True, graph_nodes="regions", graph_edges="semantic")
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in blind.modules())
    for i in range(2):
        scene = ds.generate(i, scene="street")
        assert _cue_gradient(blind, scene) < 1e-30
        assert _cue_gradient(sees, scene) > 1e-6 and _cue_gradient(groupnorm, scene) > 1e-6


@pytest.mark.slow
def test_norm_statistics_replay_swaps_only_the_groupnorm_statistics():
    model = _model("group")
    a, b = (torch.from_numpy(LongRangeContextScenes(2, H, W, seed=3).generate(i).image)[None] for i in range(2))
    replay = NormStatisticsReplay(model)
    assert len(replay.norms) == 4
    with torch.no_grad():
        plain = model(model.normalize_uint8(b)).logits
        replay.mode = "record"
        model(model.normalize_uint8(b))
        replay.mode = "replay"
        own = model(model.normalize_uint8(b)).logits  # its own statistics, replayed: unchanged
        replay.mode = "record"
        model(model.normalize_uint8(a))
        replay.mode = "replay"
        other = model(model.normalize_uint8(b)).logits
    replay.close()
    torch.testing.assert_close(own, plain, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(other, plain, atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(model(model.normalize_uint8(b)).logits, plain)  # hooks gone
    check = groupnorm_check(_model(), LongRangeContextScenes(3, H, W, seed=3), 3)
    assert check["group_norms"] == 0 and check["flip_rate"] == check["flip_rate_with_street_statistics"]


class _Stub:
    """A backend that answers every image with ``rule(image)`` (a class map)."""

    def __init__(self, rule):
        self.rule = rule

    def infer(self, images):
        ids = np.stack([self.rule(im) for im in images]).astype(np.int32)
        return InferenceResult(ids, np.ones(ids.shape, np.float32), np.zeros((len(ids), 9), np.float32),
                               np.zeros((len(ids), 9, 9), np.float32))


def test_cue_swap_tells_a_blind_model_from_one_that_follows_the_cue():
    ds = LongRangeContextScenes(6, H, W, seed=2)
    blind = cue_swap(_Stub(lambda im: np.full(im.shape[:2], C["car"])), ds, 6)
    assert blind["flip_rate"] == 0.0 and blind["pair_accuracy"] == 0.5 and blind["pair_confusion"] == 0.5

    def by_cue(image):  # blue water anywhere on the ground (the lower half; the sky is blue too) -> boat
        ground = image[image.shape[0] // 2:].astype(int)
        water = (ground[..., 2] - ground[..., 0]) > 80
        return np.full(image.shape[:2], C["boat"] if water.sum() > 500 else C["car"])

    follows = cue_swap(_Stub(by_cue), ds, 6)
    assert follows["flip_rate"] == 1.0 and follows["pair_accuracy"] == 1.0 and follows["pair_confusion"] == 0.0
    assert follows["vehicle_pixels"] == blind["vehicle_pixels"] > 0


def test_paired_ci95_is_the_t_interval_of_the_mean_difference():
    deltas = [0.031, 0.038, 0.041]
    low, high = paired_ci95(deltas)
    mean, sem = np.mean(deltas), np.std(deltas, ddof=1) / np.sqrt(3)
    assert (low, high) == pytest.approx(stats.t.interval(0.95, 2, loc=mean, scale=sem))
    assert low > 0 and paired_ci95([0.1]) is None


def test_schedule_is_seed_major_and_workers_hold_runs(tmp_path):
    variants = list(GRAPH_VARIANTS)
    assert len(variants) == 7 and variants[0] == "baseline"
    order = schedule([0, 1, 2], variants)
    assert order[:7] == [(0, v) for v in variants] and len(order) == 21
    run = tmp_path / "run"
    assert hold(str(run)) and hold(str(run))  # held by this process, again
    (run / "worker.pid").write_text("1")  # held by a live process (init)
    assert not hold(str(run))
    (run / "worker.pid").write_text("999999999")  # by one that is gone: taken over
    assert hold(str(run)) and (run / "worker.pid").read_text() == str(os.getpid())
    release(str(run))
    assert not (run / "worker.pid").exists()
