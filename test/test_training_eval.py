"""Metrics: torchmetrics mIoU vs the official Cityscapes evaluator; COCOeval segm mAP; plots."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from casseg_ros.runtime import Backend, InferenceResult
from training.cityscapes_official import run_cityscapes_evaluator, write_cityscapes_prediction
from training.datasets import (
    ADE20KSceneParsing,
    BDD100KSemantic,
    CityscapesSemantic,
    COCOPanopticSemantic,
    ContextScenes,
    MapillaryVistasSemantic,
)
from training.datasets.cityscapes import id_to_train_id_lut
from training.evaluate import evaluate
from training.instances import InstanceCollector, coco_segm_map, instances_from_class_map
from training.metrics import SemanticMetrics
from training.plots import plot_confusion_matrix, plot_per_class_iou

from model_factory import random_vocabulary, tiny_model
from test_training_datasets import make_ade20k, make_bdd100k, make_cityscapes, make_coco, make_vistas


def _noisy(train_ids: np.ndarray, rng, flip=0.3) -> np.ndarray:
    pred = train_ids.copy()
    pred[pred == 255] = rng.integers(0, 19, int((pred == 255).sum()))
    m = rng.random(pred.shape) < flip
    pred[m] = rng.integers(0, 19, int(m.sum()))
    return pred


def test_miou_matches_official_cityscapes_evaluator(tmp_path):
    frames = [("aachen", 0, 19), ("bochum", 0, 7), ("zurich", 3, 100)]
    make_cityscapes(tmp_path / "cs", frames=frames, h=64, w=128)
    ds = CityscapesSemantic(str(tmp_path / "cs"), "val")
    rng = np.random.default_rng(0)
    metrics = SemanticMetrics(19, ds.class_names)
    results = tmp_path / "results"
    for i in range(len(ds)):
        _, lab = ds[i]
        pred = _noisy(lab, rng)
        metrics.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(lab.astype(np.int64)))
        write_cityscapes_prediction(pred, ds.sample_id(i), str(results))
    ours = metrics.compute()
    official = run_cityscapes_evaluator(str(tmp_path / "cs"), str(results), "val")
    assert 0.05 < ours["miou"] < 0.95
    assert abs(ours["miou"] - official["averageScoreClasses"]) < 1e-4
    for name, iou in ours["per_class_iou"].items():
        off = official["classScores"][name]
        if iou is None:
            assert np.isnan(off)
        else:
            assert abs(iou - off) < 1e-6, name


class _ConstantBackend(Backend):
    """Predicts a fixed per-pixel class pattern (stands in for a network in the eval plumbing)."""

    name = "constant"

    def __init__(self, k, fn):
        super().__init__(None, input_size=None)
        self.k, self.fn = k, fn

    def _load(self) -> None:
        self._vocabulary = random_vocabulary(self.k)

    def _run(self, images):
        b, h, w, _ = images.shape
        ids = np.broadcast_to(np.asarray(self.fn(h, w), np.int32), (b, h, w)).copy()
        return InferenceResult(ids, np.full((b, h, w), 0.9, np.float32), np.full((b, self.k), 1 / self.k, np.float32),
                               np.zeros((b, self.k, self.k), np.float32))


@pytest.mark.slow
def test_evaluate_cityscapes_end_to_end(tmp_path):
    make_cityscapes(tmp_path / "cs", h=64, w=128)
    ds = CityscapesSemantic(str(tmp_path / "cs"), "val")
    backend = _ConstantBackend(19, lambda h, w: (np.arange(h * w).reshape(h, w) // 97) % 19)
    res = evaluate(backend, ds, out_dir=str(tmp_path / "ev"), cityscapes_results=str(tmp_path / "res"),
                   attention_model=tiny_model(num_classes=19))
    assert abs(res.miou - res.extra["cityscapes_official_miou"]) < 1e-4
    for f in ("confusion_matrix.png", "per_class_iou.png", "metrics.json", "per_class_iou.md", "attention_000.png"):
        assert (tmp_path / "ev" / f).stat().st_size > 0, f
    pngs = sorted((tmp_path / "res").glob("*_pred_labelIds.png"))
    assert len(pngs) == 2
    ids = np.asarray(Image.open(pngs[0]))
    assert set(np.unique(id_to_train_id_lut()[ids])) <= set(range(19))  # only valid label ids written
    assert not list(tmp_path.rglob(".*.tmp"))  # every file went through the atomic writer


@pytest.mark.slow
def test_evaluate_saves_region_assignment_maps_like_attention_maps(tmp_path):
    ds = ContextScenes(2, 64, 128, seed=5)
    backend = _ConstantBackend(9, lambda h, w: np.zeros((h, w), np.int64))
    model = tiny_model(num_classes=9, fusion=False, graph_nodes="regions", graph_edges="semantic")
    evaluate(backend, ds, out_dir=str(tmp_path), attention_model=model, compute_map=False)
    assert (tmp_path / "assignment_000.png").stat().st_size > 0 and (tmp_path / "assignment_001.png").is_file()
    assert not list(tmp_path.glob("attention_*.png"))  # no fusion, no cross-attention maps


def _collector_with_gt():
    ds = ContextScenes(4, 64, 128, seed=5)
    col = InstanceCollector([{"id": c, "name": ds.class_names[c]} for c in ds.thing_classes])
    scenes = []
    for i in range(4):
        s = ds.generate(i)
        col.add_image(i + 1, *s.label.shape)
        for k, c in enumerate(s.instance_classes):
            col.add_gt(i + 1, c, s.instance_map == k + 1)
        scenes.append(s)
    return ds, col, scenes


def test_cocoeval_perfect_and_wrong_predictions():
    ds, col, scenes = _collector_with_gt()
    gt = col.gt_coco()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": 0.9} for a in gt.dataset["annotations"]]
    assert coco_segm_map(gt, perfect)["map"] == pytest.approx(1.0)
    car, boat = ds.class_names.index("car"), ds.class_names.index("boat")
    swapped = [dict(d, category_id={car: boat, boat: car}.get(d["category_id"], d["category_id"])) for d in perfect]
    assert coco_segm_map(gt, swapped)["map"] < 0.7
    assert coco_segm_map(gt, [])["map"] == 0.0


def test_instances_from_class_map_give_perfect_map_on_ground_truth():
    ds, col, scenes = _collector_with_gt()
    gt = col.gt_coco()
    dets = []
    for i, s in enumerate(scenes):
        conf = np.ones(s.label.shape, np.float32)
        for c, mask, score in instances_from_class_map(s.label, conf, ds.thing_classes, min_area=1):
            col.add_detection(i + 1, c, mask, score)
    # touching same-class instances merge into one component, so allow the merged ones to miss
    m = coco_segm_map(gt, col.dt)["map"]
    assert m > 0.8


def test_coco_fixture_map_through_evaluate(tmp_path):
    make_coco(tmp_path)
    ds = COCOPanopticSemantic(str(tmp_path), "val")
    calls = []

    def perfect(h, w):
        _, lab = ds[len(calls)]
        calls.append(1)
        return np.where(lab == 255, 2, lab)

    res = evaluate(_ConstantBackend(3, perfect), ds)
    assert len(calls) == len(ds)
    assert res.map == pytest.approx(1.0) and res.miou == pytest.approx(1.0)
    wrong = _ConstantBackend(3, lambda h, w: np.full((h, w), 1))   # everything is one car
    res2 = evaluate(wrong, ds)
    assert res2.map < 0.5 and res2.miou < 0.5


def _hand_iou(pairs, k):
    """Per-class IoU over (prediction, train ids) pairs, 255 ignored, counted here from scratch."""
    inter, union = np.zeros(k), np.zeros(k)
    for pred, gt in pairs:
        valid = gt != 255
        for c in range(k):
            inter[c] += ((pred == c) & (gt == c) & valid).sum()
            union[c] += (((pred == c) | (gt == c)) & valid).sum()
    return {c: inter[c] / union[c] for c in range(k) if union[c] > 0}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["ade20k", "bdd100k", "vistas_v1.2", "vistas_v2.0"])
def test_evaluate_scores_each_dataset_with_its_ignore_rule(tmp_path, dataset):
    """mIoU through `evaluate` (the metrics every dataset shares) equals a count by hand: ignored
    pixels (ADE20K's 0, BDD100K's 255, Vistas' "evaluate": false labels) never count, whatever is
    predicted there; one wrong block lowers exactly the two classes it touches."""
    if dataset == "ade20k":
        make_ade20k(tmp_path)
        ds = ADE20KSceneParsing(str(tmp_path), "val")
    elif dataset == "bdd100k":
        make_bdd100k(tmp_path)
        ds = BDD100KSemantic(str(tmp_path), "val")
    else:
        make_vistas(tmp_path)
        ds = MapillaryVistasSemantic(str(tmp_path), "val", version=dataset.split("_")[1])
    k = len(ds.class_names)
    labels = [ds[i][1] for i in range(len(ds))]
    present = sorted(set(np.unique(np.concatenate([lab.ravel() for lab in labels]))) - {255})
    # ignored pixels get a class found nowhere (else the last one): counted, it would score below 1
    at_ignored = next((c for c in range(k) if c not in present), present[-1])
    wrong_from, wrong_to = present[0], present[1]
    preds = []
    for lab in labels:
        pred = np.where(lab == 255, at_ignored, lab).astype(np.int32)
        rows, cols = np.nonzero(lab == wrong_from)
        pred[rows[0]:rows[0] + 8, cols[0]:cols[0] + 8] = wrong_to  # one 8x8 block of the first class is wrong
        preds.append(pred)
    served = iter(preds)
    res = evaluate(_ConstantBackend(k, lambda h, w: next(served)), ds, out_dir=str(tmp_path / "ev"))
    expected = _hand_iou(zip(preds, labels), k)
    assert set(expected) == set(present) and (labels[0] == 255).any()
    assert 0 < expected[wrong_from] < 1 and 0 < expected[wrong_to] < 1
    assert all(expected[c] == 1 for c in present if c not in (wrong_from, wrong_to))
    assert res.miou == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
    for c, name in enumerate(ds.class_names):
        if c in expected:
            assert res.per_class_iou[name] == pytest.approx(expected[c], abs=1e-6), name
        else:
            assert res.per_class_iou[name] is None, name
    table = (tmp_path / "ev" / "per_class_iou.md").read_text().splitlines()
    assert len([line for line in table if line.startswith("| ")]) == k + 1  # header + one row per class
    assert np.asarray(res.confusion_matrix).shape == (k, k)


def test_plots(tmp_path):
    cm = np.array([[5, 1], [0, 3]])
    plot_confusion_matrix(cm, ["a", "b"], str(tmp_path / "cm.png"))
    plot_per_class_iou({"a": 0.5, "b": None}, str(tmp_path / "iou.png"))
    assert Image.open(tmp_path / "cm.png").size[0] > 100 and Image.open(tmp_path / "iou.png").size[0] > 100


def test_instances_match_the_scene_graph_definition():
    """Our mask instances are exactly the scene graph's instances (8-connected, min_area, score)."""
    from casseg_ros.perception.scene_graph import extract_scene_graph

    ds = ContextScenes(6, 64, 128, seed=2)
    rng = np.random.default_rng(0)
    for i in range(6):
        lab = ds[i][1].astype(np.int32)
        conf = rng.random(lab.shape).astype(np.float32)
        ours = instances_from_class_map(lab, conf, ds.thing_classes, min_area=8)
        sg = extract_scene_graph(lab, ds.class_names, confidence=conf, min_area=8)
        theirs = sorted((inst.class_id, tuple(inst.bbox), inst.area, round(inst.score, 4))
                        for inst in sg.instances if inst.class_id in ds.thing_classes)
        mine = []
        for c, mask, score in ours:
            ys, xs = np.nonzero(mask)
            mine.append((c, (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)),
                         int(mask.sum()), round(score, 4)))
        assert sorted(mine) == theirs
