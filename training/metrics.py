"""Semantic segmentation metrics: mIoU / per-class IoU / confusion matrix (torchmetrics).

mIoU is the mean of the per-class IoUs over the classes that occur in the ground truth or in the
prediction (a class with an empty union has no IoU; the official Cityscapes evaluator does the
same with NaN), computed with ``MulticlassJaccardIndex(ignore_index=255, average=None)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics.classification import MulticlassJaccardIndex

from .transforms import IGNORE

__all__ = ["IGNORE", "SemanticMetrics", "iou_table"]


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
