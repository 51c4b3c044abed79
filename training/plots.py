"""Evaluation plots: confusion matrix, per-class IoU bars, cross-attention and region assignment maps.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``: no pyplot state, no
global backend switch) and written through ``casseg_ros.fileio`` like every file training writes.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
from matplotlib.figure import Figure

from casseg_ros.fileio import atomic_write_bytes

__all__ = ["plot_attention", "plot_confusion_matrix", "plot_per_class_iou"]


def save_figure(fig: Figure, path: str, dpi: int) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())


def label_size(k: int) -> tuple[float, float, int]:
    """(inches per matrix cell, inches per bar, tick font size) for ``k`` classes: roomy up to ~40
    classes, then denser, so a 150-class figure (ADE20K) stays ~2,500 pixels wide (at the roomy
    size it was 8,300 and took ~40 s to draw)."""
    return (0.45, 0.35, 7) if k <= 40 else (0.14, 0.11, 4)


def plot_confusion_matrix(confmat, class_names, path: str) -> None:
    cm = np.asarray(confmat, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(class_names)
    inches, _, fontsize = label_size(k)
    fig = Figure(figsize=(max(5, inches * k + 2), max(4, inches * k + 1.5)))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(k), class_names, fontsize=fontsize)
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
    save_figure(fig, path, dpi=120)


def plot_per_class_iou(per_class: dict, path: str, title: str = "per-class IoU") -> None:
    names = list(per_class)
    vals = [100 * (v if v is not None else 0.0) for v in per_class.values()]
    _, inches, fontsize = label_size(len(names))
    fig = Figure(figsize=(max(5, inches * len(names) + 2), 4))
    ax = fig.subplots()
    ax.bar(range(len(names)), vals, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=fontsize)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_attention(image: np.ndarray, attention: np.ndarray, class_names, path: str, top: int = 6,
                   pred: np.ndarray | None = None, palette: np.ndarray | None = None, prefix: str = "attn") -> None:
    """Image (+ prediction) and the ``top`` heaviest of (K, h, w) maps: cross-attention of the classes,
    or the soft assignment to region nodes (``class_names`` then names the regions)."""
    order = np.argsort(-attention.reshape(attention.shape[0], -1).mean(1))[:top]
    n = len(order) + (2 if pred is not None else 1)
    fig = Figure(figsize=(2.6 * n, 2.2))
    axes = fig.subplots(1, n)
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=8)
    i = 1
    if pred is not None:
        pal = palette if palette is not None else (np.random.default_rng(0).integers(0, 255, (256, 3)))
        axes[1].imshow(np.asarray(pal, dtype=np.uint8)[pred])
        axes[1].set_title("prediction", fontsize=8)
        i = 2
    for ax_i, c in zip(range(i, n), order):
        a = cv2.resize(attention[c], (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        axes[ax_i].imshow(image)
        axes[ax_i].imshow(a, cmap="jet", alpha=0.5)
        axes[ax_i].set_title(f"{prefix}: {class_names[c]}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
