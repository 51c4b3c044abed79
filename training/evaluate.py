"""Evaluate a segmentation model on a dataset: mIoU and per-class IoU (``training.metrics``),
COCO-style instance mAP (``training.instances``), the official Cityscapes evaluator
(``training.cityscapes_official``), plots and attention maps (``training.plots``).

    python -m training.evaluate --checkpoint out/x/model_final.safetensors \
        --config training/configs/full_context_scenes.yaml [--split val] [--out out/x/eval]

Predictions come from a ``casseg_ros.runtime`` Backend — the path the node deploys — so the
evaluated pixels are the published ones: ``evaluate(backend, dataset)`` for any backend,
``evaluate_model(model, dataset)`` for an in-memory model (``TorchBackend.from_model``). With
``eval_size`` the network runs at that size and the class map is resized back (nearest), as the
node does; ``None`` (every shipped config) runs each image at its own size.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from casseg_ros.fileio import atomic_write_text
from casseg_ros.model import ContextSegmentor
from casseg_ros.model.checkpoint import load_checkpoint
from casseg_ros.runtime import Backend, TorchBackend

from .cityscapes_official import run_cityscapes_evaluator, write_cityscapes_prediction
from .config import load_config
from .datasets import CityscapesSemantic, COCOPanopticSemantic, ContextScenes, build_dataset
from .instances import InstanceCollector, coco_segm_map, instances_from_class_map, mask_rle
from .metrics import SemanticMetrics, iou_table
from .plots import plot_attention, plot_confusion_matrix, plot_per_class_iou


@dataclass
class EvalResult:
    miou: float
    per_class_iou: dict
    pixel_accuracy: float
    confusion_matrix: list
    map: float | None = None
    map50: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy, "per_class_iou": self.per_class_iou,
                "map": self.map, "map50": self.map50, "confusion_matrix": self.confusion_matrix, **self.extra}


@dataclass
class Sample:
    index: int
    image: np.ndarray
    label: np.ndarray
    instance_masks: list[tuple[int, np.ndarray]] | None = None
    """(class id, mask) per ground-truth instance, where the dataset draws them (context scenes)."""


def samples(dataset, count: int) -> Iterator[Sample]:
    for i in range(count):
        if isinstance(dataset, ContextScenes):
            scene = dataset.generate(i)
            masks = [(c, scene.instance_map == k + 1) for k, c in enumerate(scene.instance_classes)]
            yield Sample(i, scene.image, scene.label, masks)
        else:
            image, label = dataset[i]
            yield Sample(i, image, label)


class InstanceScoring:
    """COCO segm mAP over the connected components of the predicted class map (thing classes):
    against the COCO instance annotations, or the instances a context scene was drawn with."""

    def __init__(self, dataset, class_names: list[str], min_area: int) -> None:
        self.dataset = dataset
        self.thing = list(getattr(dataset, "thing_classes", []))
        self.min_area = min_area
        self.collector = self.coco_gt = None
        if self.thing and isinstance(dataset, COCOPanopticSemantic) and os.path.isfile(dataset.instances_json):
            self.coco_gt = dataset.instance_gt()
        elif self.thing and isinstance(dataset, ContextScenes):
            self.collector = InstanceCollector([{"id": c, "name": class_names[c]} for c in self.thing])
        self.image_ids: list[int] = []
        self.detections: list[dict] = []

    @property
    def active(self) -> bool:
        return self.collector is not None or self.coco_gt is not None

    def add(self, sample: Sample, class_map: np.ndarray, confidence: np.ndarray) -> None:
        if self.collector is not None:
            image_id = sample.index + 1
            self.collector.add_image(image_id, *sample.label.shape)
            for c, mask in sample.instance_masks:
                self.collector.add_gt(image_id, c, mask)
        else:
            image_id = self.dataset.image_id(sample.index)
        self.image_ids.append(image_id)
        for c, mask, score in instances_from_class_map(class_map, confidence, self.thing, self.min_area):
            category = c if self.collector is not None else self.dataset.contiguous_to_cat_id[c]
            self.detections.append({"image_id": image_id, "category_id": category,
                                    "segmentation": mask_rle(mask), "score": score})

    def compute(self) -> dict:
        gt = self.collector.gt_coco() if self.collector is not None else self.coco_gt
        return coco_segm_map(gt, self.detections, self.image_ids)


def attention_maps(model: ContextSegmentor, image: np.ndarray) -> dict[str, np.ndarray]:
    """The maps ``model`` returns on one uint8 RGB image: ``attention`` (K, h, w) cross-attention
    (fusion on) and ``assignment`` (N, h', w') soft assignment to the region nodes (region graph)."""
    device = model.class_embeddings.device
    with torch.inference_mode():
        # a copy: dataset arrays may be read-only, which torch.from_numpy warns about
        batch = torch.from_numpy(np.array(image, dtype=np.uint8))[None].to(device)
        out = model(model.normalize_uint8(batch), return_attention=True)
    maps = {"attention": out.attention, "assignment": out.assignment}
    return {k: v[0].float().cpu().numpy() for k, v in maps.items() if v is not None}


def write_report(result: EvalResult, class_names: list[str], out_dir: str) -> None:
    plot_confusion_matrix(result.confusion_matrix, class_names, os.path.join(out_dir, "confusion_matrix.png"))
    plot_per_class_iou(result.per_class_iou, os.path.join(out_dir, "per_class_iou.png"),
                       f"per-class IoU (mIoU {100 * result.miou:.1f})")
    atomic_write_text(os.path.join(out_dir, "metrics.json"), json.dumps(result.to_dict(), indent=1))
    atomic_write_text(os.path.join(out_dir, "per_class_iou.md"),
                      iou_table(result.per_class_iou) + f"\n\nmIoU: {100 * result.miou:.2f}\n")


def evaluate(backend: Backend, dataset, max_images: int | None = None, out_dir: str | None = None,
             attention_model: ContextSegmentor | None = None, num_attention: int = 2,
             cityscapes_results: str | None = None, progress: bool = False, compute_map: bool = True,
             min_instance_area: int = 16) -> EvalResult:
    """Evaluate ``backend`` on ``dataset`` (ContextScenes, CityscapesSemantic or COCOPanopticSemantic).

    ``out_dir``: plots, metrics.json, per_class_iou.md and — with ``attention_model`` — the
    attention maps (fusion) and region assignment maps (region graph) of the first ``num_attention``
    images. ``cityscapes_results``: also write
    labelIds PNGs there and run the official evaluator on them.
    """
    names = list(dataset.class_names)
    metrics = SemanticMetrics(len(names), names)
    instances = InstanceScoring(dataset, names, min_instance_area) if compute_map else None
    official = cityscapes_results if isinstance(dataset, CityscapesSemantic) else None
    palette = backend.vocabulary.palette
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    for sample in tqdm(samples(dataset, count), total=count, desc="eval", leave=False, disable=not progress):
        pred = backend.infer(sample.image)
        class_map, confidence = pred.class_ids[0], pred.confidence[0]
        metrics.update(torch.from_numpy(class_map), torch.from_numpy(sample.label.astype(np.int64)))
        if instances is not None and instances.active:
            instances.add(sample, class_map, confidence)
        if official:
            write_cityscapes_prediction(class_map, dataset.sample_id(sample.index), official)
        if out_dir and attention_model is not None and sample.index < num_attention:
            for kind, maps in attention_maps(attention_model, sample.image).items():
                labels = names if kind == "attention" else [f"region {i}" for i in range(len(maps))]
                path = os.path.join(out_dir, f"{kind}_{sample.index:03d}.png")
                plot_attention(sample.image, maps, labels, path, pred=class_map, palette=palette,
                               prefix="attn" if kind == "attention" else "assigned")
    m = metrics.compute()
    result = EvalResult(m["miou"], m["per_class_iou"], m["pixel_accuracy"], m["confusion_matrix"])
    if instances is not None and instances.active:
        ap = instances.compute()
        result.map, result.map50 = ap["map"], ap["map50"]
        result.extra["map75"] = ap["map75"]
    if official:
        scores = run_cityscapes_evaluator(dataset.root, official, dataset.split)
        result.extra["cityscapes_official_miou"] = float(scores["averageScoreClasses"])
    if out_dir:
        write_report(result, names, out_dir)
    return result


def evaluate_model(model: ContextSegmentor, dataset, device: str | torch.device = "cpu", eval_size=None,
                   **kwargs) -> EvalResult:
    """``evaluate`` an in-memory model through ``TorchBackend.from_model`` (attention maps included)."""
    model.eval()
    backend = TorchBackend.from_model(model, str(device), eval_size)
    return evaluate(backend, dataset, attention_model=model, **kwargs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="model .safetensors (casseg_ros.model.checkpoint)")
    ap.add_argument("--config", required=True, help="training YAML (for the dataset section)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--out", default=None, help="output dir (default: <checkpoint dir>/eval_<split>)")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cityscapes-official", action="store_true",
                    help="also write labelIds PNGs and run the official cityscapesscripts evaluator")
    ap.add_argument("--override", nargs="*", default=[], help="section.key=value config overrides")
    a = ap.parse_args(argv)
    cfg = load_config(a.config, a.override)
    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    model = load_checkpoint(a.checkpoint, map_location=device)
    ds = build_dataset(cfg.data, a.split)
    if list(model.class_names) != list(ds.class_names):
        raise SystemExit(f"checkpoint classes {model.class_names[:5]}... do not match dataset {ds.class_names[:5]}...")
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.checkpoint)), f"eval_{a.split}")
    cs_dir = os.path.join(out, "cityscapes_results") if a.cityscapes_official else None
    res = evaluate_model(model, ds, device, cfg.data.eval_size, max_images=a.max_images, out_dir=out,
                         cityscapes_results=cs_dir, progress=True)
    print(iou_table(res.per_class_iou))
    print(f"mIoU {100 * res.miou:.2f}" + (f"  mAP {100 * res.map:.2f}" if res.map is not None else ""))
    if "cityscapes_official_miou" in res.extra:
        print(f"official cityscapesscripts mIoU {100 * res.extra['cityscapes_official_miou']:.2f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
