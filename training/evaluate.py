"""Evaluation: mIoU (torchmetrics), per-class IoU table, plots, attention maps, official
Cityscapes evaluator hand-off, and COCO-style instance mAP (pycocotools, ``iouType='segm'``).

    python -m training.evaluate --checkpoint out/x/model_final.safetensors \
        --config training/configs/full_context_scenes.yaml [--split val] [--out out/x/eval]

mIoU is the mean of the per-class IoUs over the classes that occur in the ground truth or in
the prediction (a class with an empty union has no IoU; the official Cityscapes evaluator does
the same with NaN), computed with ``MulticlassJaccardIndex(ignore_index=255, average=None)``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassJaccardIndex

IGNORE = 255


# ----------------------------------------------------------------------------- semantic metrics
class SemanticMetrics:
    """Accumulates predictions; ``compute()`` -> dict with miou, per-class IoU, confusion matrix."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, device="cpu"):
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.metric = MulticlassJaccardIndex(
            num_classes=self.num_classes, ignore_index=IGNORE, average=None, validate_args=False,
            sync_on_compute=False,  # evaluation runs on one process (rank 0) even under torchrun
        ).to(device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.metric.update(pred.long().flatten(), target.long().flatten().to(pred.device))

    def compute(self) -> dict:
        iou = self.metric.compute().double().cpu()
        confmat = self.metric.confmat.double().cpu()           # rows = target, cols = prediction
        union = confmat.sum(0) + confmat.sum(1) - confmat.diag()
        present = union > 0
        miou = float(iou[present].mean()) if bool(present.any()) else float("nan")
        per_class = {n: (float(iou[i]) if present[i] else None) for i, n in enumerate(self.class_names)}
        acc = float(confmat.diag().sum() / confmat.sum().clamp(min=1))
        return {"miou": miou, "pixel_accuracy": acc, "per_class_iou": per_class,
                "confusion_matrix": confmat.long().tolist()}


def iou_table(per_class: dict, title: str = "class") -> str:
    lines = [f"| {title} | IoU (%) |", "|---|---:|"]
    for name, v in per_class.items():
        lines.append(f"| {name} | {'—' if v is None else f'{100 * v:.2f}'} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- inference
def normalise_batch(images_uint8_bhwc: torch.Tensor) -> torch.Tensor:
    from casseg_ros.model import IMAGENET_MEAN, IMAGENET_STD

    x = images_uint8_bhwc.permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def predict_probs(model, image_uint8_hwc: np.ndarray, device, eval_size=None, return_attention=False):
    """Softmax probabilities (K,H,W) at the image's own resolution (+ attention maps or None)."""
    h, w = image_uint8_hwc.shape[:2]
    img = image_uint8_hwc
    if eval_size and tuple(eval_size) != (h, w):
        img = cv2.resize(img, (int(eval_size[1]), int(eval_size[0])), interpolation=cv2.INTER_LINEAR)
    x = normalise_batch(torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))[None].to(device))
    out = model(x, return_attention=return_attention) if return_attention else model(x)
    logits = out.logits.float()
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    attn = out.attention[0].float().cpu() if (return_attention and out.attention is not None) else None
    return logits.softmax(1)[0], attn


# ----------------------------------------------------------------------------- instances / mAP
def instances_from_class_map(class_map: np.ndarray, confidence: np.ndarray, thing_classes: Iterable[int],
                             min_area: int = 16) -> list[tuple[int, np.ndarray, float]]:
    """Instances as 8-connected same-class components of ``class_map`` (the scene-graph rule of
    ``casseg_ros.perception.scene_graph``), score = mean confidence over the component.
    Returns [(class_id, bool mask, score)]."""
    out = []
    for c in thing_classes:
        m = (class_map == c).astype(np.uint8)
        if not m.any():
            continue
        n, cc = cv2.connectedComponents(m, connectivity=8)
        for k in range(1, n):
            mask = cc == k
            area = int(mask.sum())
            if area < min_area:
                continue
            out.append((int(c), mask, float(confidence[mask].mean())))
    return out


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


class InstanceCollector:
    """Builds an in-memory COCO ground truth + detections and scores them with COCOeval segm."""

    def __init__(self, categories: list[dict]):
        self.categories = categories  # [{"id":..., "name":...}]
        self.images: list[dict] = []
        self.gt: list[dict] = []
        self.dt: list[dict] = []

    def add_image(self, image_id: int, height: int, width: int) -> None:
        self.images.append({"id": int(image_id), "height": int(height), "width": int(width)})

    def add_gt(self, image_id: int, category_id: int, mask: np.ndarray, iscrowd: int = 0) -> None:
        from pycocotools import mask as mask_utils

        rle = _rle(mask)
        x, y, w, h = mask_utils.toBbox(rle).tolist()
        self.gt.append({"id": len(self.gt) + 1, "image_id": int(image_id), "category_id": int(category_id),
                        "segmentation": rle, "area": float(mask.sum()), "bbox": [x, y, w, h], "iscrowd": iscrowd})

    def add_detection(self, image_id: int, category_id: int, mask: np.ndarray, score: float) -> None:
        self.dt.append({"image_id": int(image_id), "category_id": int(category_id),
                        "segmentation": _rle(mask), "score": float(score)})

    def gt_coco(self):
        from pycocotools.coco import COCO

        import contextlib
        import io

        coco = COCO()
        coco.dataset = {"images": self.images, "annotations": self.gt, "categories": self.categories}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco


def coco_segm_map(gt_coco, detections: list[dict], image_ids: Sequence[int] | None = None, quiet=True) -> dict:
    """COCOeval(iouType='segm'): {'map': AP@[.5:.95], 'map50': AP@.5, 'map75': AP@.75}."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    if not detections:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0, "num_detections": 0}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        # loadRes mutates the dicts it gets (adds bbox/area/id): hand it copies
        dets = [{k: v for k, v in d.items() if k not in ("bbox", "area", "id")} for d in detections]
        dt = gt_coco.loadRes(dets)
        ev = COCOeval(gt_coco, dt, iouType="segm")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = [max(float(v), 0.0) for v in ev.stats[:3]]  # -1 (no GT) -> 0
    return {"map": s[0], "map50": s[1], "map75": s[2], "num_detections": len(detections)}


# ----------------------------------------------------------------------------- Cityscapes official
def write_cityscapes_prediction(pred_train_ids: np.ndarray, sample_id: str, results_dir: str) -> str:
    """Write ``<results_dir>/<city>_<seq>_<frame>_pred_labelIds.png`` (official label ids)."""
    from PIL import Image

    from .datasets.cityscapes import train_id_to_id_lut

    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{sample_id}_pred_labelIds.png")
    ids = train_id_to_id_lut()[np.clip(pred_train_ids, 0, 255).astype(np.uint8)]
    Image.fromarray(ids).save(path)
    return path


def run_cityscapes_evaluator(cityscapes_root: str, results_dir: str, split: str = "val",
                             export_json: str | None = None) -> dict:
    """Run ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`` offline on
    ``results_dir``; returns its result dict ('averageScoreClasses', 'classScores', ...)."""
    os.environ.setdefault("CITYSCAPES_DATASET", cityscapes_root)
    os.environ["CITYSCAPES_RESULTS"] = results_dir
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    args = ev.args
    args.cityscapesPath = cityscapes_root
    args.groundTruthSearch = os.path.join(cityscapes_root, "gtFine", split, "*", "*_gtFine_labelIds.png")
    args.predictionPath = results_dir
    args.predictionWalk = None
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    args.JSONOutput = export_json is not None
    args.exportFile = export_json or os.path.join(results_dir, "resultPixelLevelSemanticLabeling.json")
    gts = sorted(glob.glob(args.groundTruthSearch))
    if not gts:
        raise FileNotFoundError(f"no ground truth matched {args.groundTruthSearch}")
    # nIoU needs *_instanceIds.png and the evaluator's np.in1d (removed in NumPy 2.4); mIoU needs neither
    args.evalInstLevelScore = hasattr(np, "in1d") and all(
        os.path.isfile(g.replace("labelIds", "instanceIds")) for g in gts)
    args.evalPixelAccuracy = False
    preds = [ev.getPrediction(args, g) for g in gts]
    return ev.evaluateImgLists(preds, gts, args)


# ----------------------------------------------------------------------------- plots
def plot_confusion_matrix(confmat, class_names, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confmat, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * k + 2), max(4, 0.45 * k + 1.5)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.01:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_per_class_iou(per_class: dict, path: str, title: str = "per-class IoU") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_class)
    vals = [100 * (v if v is not None else 0.0) for v in per_class.values()]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(names) + 2), 4))
    ax.bar(range(len(names)), vals, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attention(image: np.ndarray, attention: torch.Tensor, class_names, path: str, top: int = 6,
                   pred: np.ndarray | None = None, palette: np.ndarray | None = None) -> None:
    """Image (+ prediction) and the cross-attention map of the ``top`` most-attended classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    att = attention.numpy()
    order = np.argsort(-att.reshape(att.shape[0], -1).mean(1))[:top]
    n = len(order) + (2 if pred is not None else 1)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.2))
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=8)
    i = 1
    if pred is not None:
        pal = palette if palette is not None else (np.random.default_rng(0).integers(0, 255, (256, 3)))
        axes[1].imshow(np.asarray(pal, dtype=np.uint8)[pred])
        axes[1].set_title("prediction", fontsize=8)
        i = 2
    for ax_i, c in zip(range(i, n), order):
        a = cv2.resize(att[c], (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        axes[ax_i].imshow(image)
        axes[ax_i].imshow(a, cmap="jet", alpha=0.5)
        axes[ax_i].set_title(f"attn: {class_names[c]}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- full evaluation
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


def evaluate_model(model, dataset, device="cpu", eval_size=None, max_images: int | None = None,
                   out_dir: str | None = None, num_attention: int = 2, cityscapes_results: str | None = None,
                   progress: bool = False, compute_map: bool = True, min_instance_area: int = 16) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` (ContextScenes, CityscapesSemantic or COCOPanopticSemantic)."""
    from .datasets import CityscapesSemantic, COCOPanopticSemantic, ContextScenes

    model.eval()
    names = list(dataset.class_names)
    metrics = SemanticMetrics(len(names), names, device=device)
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    thing = list(getattr(dataset, "thing_classes", []))
    collector, coco_gt, det = None, None, []
    if compute_map and thing:
        if isinstance(dataset, COCOPanopticSemantic) and os.path.isfile(dataset.instances_json):
            coco_gt = dataset.instance_gt()
        elif isinstance(dataset, ContextScenes):
            collector = InstanceCollector([{"id": c, "name": names[c]} for c in thing])
    palette = getattr(getattr(model, "vocabulary", None), "palette", None)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    image_ids = []
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="eval", leave=False)
    for i in it:
        if isinstance(dataset, ContextScenes):
            scene = dataset.generate(i)
            img, lab = scene.image, scene.label
        else:
            img, lab = dataset[i]
        want_attn = bool(out_dir) and i < num_attention
        probs, attn = predict_probs(model, img, device, eval_size, return_attention=want_attn)
        conf, pred = probs.max(0)
        metrics.update(pred, torch.from_numpy(lab.astype(np.int64)))
        pred_np = pred.cpu().numpy().astype(np.int32)
        if want_attn and attn is not None:
            plot_attention(img, attn, names, os.path.join(out_dir, f"attention_{i:03d}.png"), pred=pred_np,
                           palette=palette)
        if cityscapes_results and isinstance(dataset, CityscapesSemantic):
            write_cityscapes_prediction(pred_np, dataset.sample_id(i), cityscapes_results)
        if collector is not None or coco_gt is not None:
            conf_np = conf.cpu().numpy()
            if collector is not None:
                image_id = i + 1
                collector.add_image(image_id, *lab.shape)
                for k, c in enumerate(scene.instance_classes):
                    collector.add_gt(image_id, c, scene.instance_map == k + 1)
                to_cat = lambda c: c  # noqa: E731
            else:
                image_id = dataset.image_id(i)
                to_cat = lambda c: dataset.contiguous_to_cat_id[c]  # noqa: E731
            image_ids.append(image_id)
            for c, mask, score in instances_from_class_map(pred_np, conf_np, thing, min_instance_area):
                det.append({"image_id": image_id, "category_id": to_cat(c), "segmentation": _rle(mask),
                            "score": score})
    m = metrics.compute()
    res = EvalResult(m["miou"], m["per_class_iou"], m["pixel_accuracy"], m["confusion_matrix"])
    if collector is not None:
        coco_gt = collector.gt_coco()
    if coco_gt is not None:
        ap = coco_segm_map(coco_gt, det, image_ids)
        res.map, res.map50 = ap["map"], ap["map50"]
        res.extra["map75"] = ap["map75"]
    if cityscapes_results and isinstance(dataset, CityscapesSemantic):
        official = run_cityscapes_evaluator(dataset.root, cityscapes_results, dataset.split)
        res.extra["cityscapes_official_miou"] = float(official["averageScoreClasses"])
    if out_dir:
        plot_confusion_matrix(m["confusion_matrix"], names, os.path.join(out_dir, "confusion_matrix.png"))
        plot_per_class_iou(m["per_class_iou"], os.path.join(out_dir, "per_class_iou.png"),
                           f"per-class IoU (mIoU {100 * m['miou']:.1f})")
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(res.to_dict(), f, indent=1)
        with open(os.path.join(out_dir, "per_class_iou.md"), "w") as f:
            f.write(iou_table(m["per_class_iou"]) + f"\n\nmIoU: {100 * m['miou']:.2f}\n")
    return res


def main(argv=None) -> int:
    from casseg_ros.model.checkpoint import load_checkpoint

    from .config import load_config
    from .datasets import build_dataset

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
    res = evaluate_model(model, ds, device, cfg.data.eval_size, a.max_images, out, cityscapes_results=cs_dir,
                         progress=True)
    print(iou_table(res.per_class_iou))
    print(f"mIoU {100 * res.miou:.2f}" + (f"  mAP {100 * res.map:.2f}" if res.map is not None else ""))
    if "cityscapes_official_miou" in res.extra:
        print(f"official cityscapesscripts mIoU {100 * res.extra['cityscapes_official_miou']:.2f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
