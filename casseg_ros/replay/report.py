"""Markdown report with PNG figures (matplotlib): sample frames (input | prediction | ground truth,
with a legend of the classes they show), per-class IoU, latency histogram, a bird's-eye view of
labelled points.

Every file goes through `casseg_ros.fileio` (temp file + os.replace), so a report directory never
holds a half-written figure. Figures are `matplotlib.figure.Figure` objects rendered by Agg, never
pyplot: no global backend switch, no figure registry to leak into.

metrics.json keeps full precision; report.md is for people and rounds (`_fmt`).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from casseg_ros.fileio import atomic_write_bytes, atomic_write_text


def save_png(path: Path, rgb: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    return atomic_write_bytes(path, buf.tobytes())


def _save_figure(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


@dataclass(frozen=True)
class PanelFigure:
    """One sample frame for the report: equal-height RGB images side by side, titled, and the
    class maps they draw (prediction, ground truth), whose classes the legend names."""

    name: str
    panels: Sequence[tuple[str, np.ndarray]]  # (title, (H, W, 3) uint8 RGB)
    class_maps: Sequence[np.ndarray]  # class ids; ids outside the palette are unknown
    names: Sequence[str]
    palette: np.ndarray  # (K, 3) uint8


def legend_entries(class_maps: Sequence[np.ndarray], names: Sequence[str], palette: np.ndarray
                   ) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of every class present in `class_maps`, in id order; "unknown" (black, as in
    the colour mask) last when some pixel is outside the palette."""
    k = len(palette)
    present: set[int] = set()
    unknown = False
    for ids in class_maps:
        values = np.unique(np.asarray(ids)).tolist()
        present.update(v for v in values if 0 <= v < k)
        unknown = unknown or any(not 0 <= v < k for v in values)
    entries = [(names[i] if i < len(names) else str(i), tuple(int(c) for c in palette[i])) for i in sorted(present)]
    return entries + ([("unknown", (0, 0, 0))] if unknown else [])


def panel_figure(figure: PanelFigure, path: Path) -> Path:
    """The panels in a row at (at least) their own pixel size, the legend of their classes below."""
    dpi, height = 100, max(rgb.shape[0] for _, rgb in figure.panels)
    width = sum(rgb.shape[1] for _, rgb in figure.panels)
    scale = max(1.0, 900.0 / width)  # small camera images are drawn larger
    entries = legend_entries(figure.class_maps, figure.names, figure.palette)
    rows = -(-len(entries) // 6)  # legend rows of up to six classes
    fig = Figure(figsize=(width * scale / dpi, height * scale / dpi + 0.4 + 0.25 * rows), dpi=dpi)
    axes = fig.subplots(1, len(figure.panels), squeeze=False)[0]
    for ax, (title, rgb) in zip(axes, figure.panels):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    if entries:
        fig.legend([Patch(facecolor=np.asarray(c) / 255.0, edgecolor="black", linewidth=0.5) for _, c in entries],
                   [n for n, _ in entries], loc="lower center", ncols=min(6, len(entries)), fontsize=8,
                   frameon=False)
    return _save_figure(fig, path)


def iou_figure(per_class: dict[str, float | None], path: Path, title: str) -> Path | None:
    """Bars of IoU in percent."""
    items = [(n, v) for n, v in per_class.items() if v is not None]
    if not items:
        return None
    names, values = zip(*items)
    fig = Figure(figsize=(max(4.0, 0.6 * len(names) + 1.5), 3.2))
    ax = fig.subplots()
    ax.bar(range(len(names)), values, color="#4477aa")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(i, v + 2, f"{v:.1f}", ha="center", fontsize=8)
    return _save_figure(fig, path)


def latency_figure(series: dict[str, Sequence[float]], path: Path, title: str) -> Path | None:
    """Histogram of one or more latency series given in seconds."""
    series = {k: np.asarray(v, dtype=np.float64) * 1000.0 for k, v in series.items() if len(v)}
    if not series:
        return None
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    for label, ms in series.items():
        ax.hist(ms, bins=min(40, max(5, ms.size // 3)), alpha=0.6, label=f"{label} (p50 {np.median(ms):.1f} ms)")
    ax.set_xlabel("latency [ms]")
    ax.set_ylabel("frames")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def tracking_figure(per_frame: dict[str, Sequence], path: Path, title: str) -> Path | None:
    """Per frame: ground-truth objects matched (incl. switches), missed, false positives, id
    switches (marked), and the flicker since the previous frame on a second axis."""
    frames = np.arange(len(per_frame.get("matches", ())))
    if not frames.size:
        return None
    fig = Figure(figsize=(7, 3.4))
    ax = fig.subplots()
    for key, label in (("matches", "matched"), ("misses", "missed"), ("false_positives", "false positives")):
        ax.plot(frames, per_frame[key], label=label, linewidth=1.2)
    switches = np.asarray(per_frame["id_switches"])
    if switches.any():
        ax.scatter(frames[switches > 0], switches[switches > 0], marker="x", color="k", zorder=3, label="id switches")
    ax.set_xlabel("frame")
    ax.set_ylabel("objects")
    flicker = np.array([np.nan if v is None else 100.0 * v for v in per_frame["flicker"]])
    right = ax.twinx()
    right.plot(frames, flicker, color="tab:purple", linewidth=0.8, alpha=0.7, label="flicker")
    right.set_ylabel("flicker [%]")
    handles = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper right")
    ax.set_title(title)
    return _save_figure(fig, path)


def birds_eye_figure(x: np.ndarray, z: np.ndarray, labels: np.ndarray, palette: np.ndarray, names: Sequence[str],
                     path: Path, title: str, centroids: Sequence[tuple[str, float, float]] = ()) -> Path | None:
    """Top view of labelled points in a camera's optical frame: x (right) against z (forward),
    each point in its class colour (ids outside the palette grey); `centroids` (label, x, z) marked."""
    if not len(x):
        return None
    labels = np.asarray(labels, dtype=np.int64)
    known = labels < len(palette)
    colours = np.full((len(labels), 3), 0.5)
    colours[known] = np.asarray(palette, dtype=np.float64)[labels[known]] / 255.0
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    ax.scatter(x, z, c=colours, s=4, marker=".", linewidths=0, rasterized=True)
    for label, cx, cz in centroids:
        ax.plot(cx, cz, marker="o", markersize=7, markerfacecolor="none", markeredgecolor="black")
        ax.annotate(label, (cx, cz), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.plot(0, 0, marker="^", markersize=9, color="black")  # the camera
    present = sorted(set(labels[known].tolist()))
    ax.legend([Line2D([], [], marker="o", linestyle="", color=np.asarray(palette[i]) / 255.0) for i in present],
              [names[i] if i < len(names) else str(i) for i in present], fontsize=8, loc="upper left")
    ax.set_xlim(float(np.min(x)) - 1.0, float(np.max(x)) + 1.0)
    ax.set_ylim(-1.0, float(np.max(z)) + 1.0)
    ax.set_aspect("equal", adjustable="box")  # metres are metres both ways
    ax.set_xlabel("x [m] (right)")
    ax.set_ylabel("z [m] (forward)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save_figure(fig, path)


def _fmt(v: Any) -> str:
    """A metric for report.md: floats to 3 decimals (metrics.json has them unrounded)."""
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _pct(v: float | None) -> str:
    """An IoU for report.md: percent to one decimal."""
    return "–" if v is None else f"{v:.1f}"


def write_report(out_dir: Path, title: str, metrics: dict[str, Any], overlays: Sequence[PanelFigure],
                 latency_series: dict[str, Sequence[float]], intro: str = "",
                 extra_sections: Sequence[str] = ()) -> Path:
    """report.md + figures/ in out_dir; returns the markdown path. `overlays`: sample frames."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    lines = [f"# {title}", ""]
    if intro:
        lines += [intro, ""]
    status = metrics.get("status", "ok")
    if status != "ok":
        lines += [f"**Status: {status}** — {'; '.join(metrics.get('errors', [])) or ''}", ""]

    lat = metrics.get("latency_ms", {})
    if lat:
        lines += ["## Latency", "", "| stage | p50 ms | p90 ms | p99 ms | mean ms | frames |", "|---|---|---|---|---|---|"]
        for stage, s in lat.items():
            if isinstance(s, dict) and "p50" in s:
                lines.append(f"| {stage} | {_fmt(s['p50'])} | {_fmt(s['p90'])} | {_fmt(s['p99'])} | "
                             f"{_fmt(s['mean'])} | {s['count']} |")
        lines.append("")
    facts = [(k, metrics[k]) for k in ("frames_in_bag_read", "frames_published", "frames_processed",
                                       "frames_received", "frames_skipped", "dropped", "fps_pipeline",
                                       "fps_wall", "output_fps", "wall_s") if k in metrics]
    if facts:
        lines += ["| quantity | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in facts] + [""]
    diag = metrics.get("node_diagnostics")
    if diag:
        lines += ["Node-side counters (its last `/diagnostics`):", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v if v not in (None, '') else '–'} |" for k, v in diag.items()] + [""]
    if metrics.get("skipped_by_reason"):
        lines += ["## Skipped frames", "", "| reason | frames |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in metrics["skipped_by_reason"].items()] + [""]

    fig = latency_figure(latency_series, fig_dir / "latency_hist.png", "per-frame latency")
    if fig:
        lines += [f"![latency histogram](figures/{fig.name})", ""]

    iou = metrics.get("iou") or {}
    if iou.get("frames"):
        lines += ["## Segmentation quality vs ground truth", "",
                  f"mIoU **{_pct(iou['miou'])} %** over {iou['frames']} labelled frames "
                  f"(torchmetrics MulticlassJaccardIndex, ignore_index={iou.get('ignore_index')}; classes "
                  f"absent from both prediction and ground truth are excluded).", "",
                  "| class | IoU (%) | gt pixels |", "|---|---|---|"]
        lines += [f"| {n} | {_pct(v)} | {iou.get('gt_pixels', {}).get(n, '')} |" for n, v in iou["per_class_iou"].items()]
        lines.append("")
        fig = iou_figure(iou["per_class_iou"], fig_dir / "iou_per_class.png", f"per-class IoU (mIoU {_pct(iou['miou'])} %)")
        if fig:
            lines += [f"![per-class IoU](figures/{fig.name})", ""]
    elif "iou" in metrics:
        lines += ["No ground-truth labels were evaluated (no label topic, or no frame had a usable label).", ""]
    tracking = metrics.get("tracking")
    if tracking:
        tracked = (metrics.get("settings") or {}).get("tracking")
        lines += ["## Tracking vs ground-truth instance ids", "",
                  f"{tracking['ground_truth_objects']} ground-truth objects over {tracking['frames']} frames "
                  f"(motmetrics; box IoU >= {tracking['min_iou']} within a class, objects under "
                  f"{tracking['min_area']} visible pixels not scored); scene-graph ids "
                  f"{'tracked (--tracking)' if tracked else 'untracked (each frame its own ids)'}.", "",
                  "| MOTA | IDF1 | id switches | per 100 objects | matches | misses | false positives | flicker | "
                  "temporal mIoU |",
                  "|---|---|---|---|---|---|---|---|---|",
                  f"| {_fmt(tracking['mota'])} | {_fmt(tracking['idf1'])} | {tracking['id_switches']} | "
                  f"{_fmt(tracking['id_switches_per_100'])} | {tracking['matches']} | {tracking['misses']} | "
                  f"{tracking['false_positives']} | {_pct(None if tracking['flicker'] is None else 100 * tracking['flicker'])} % | "
                  f"{_pct(None if tracking['temporal_miou'] is None else 100 * tracking['temporal_miou'])} % |",
                  "", "Flicker: share of the pixels whose ground-truth class stays from one frame to the next "
                  "whose predicted class changes. Temporal mIoU: on those pixels, mIoU of each frame's "
                  "prediction against the previous frame's.", ""]
        fig = tracking_figure(tracking.get("per_frame") or {}, fig_dir / "tracking_per_frame.png",
                              f"tracking per frame (IDF1 {_fmt(tracking['idf1'])})")
        if fig:
            lines += [f"![tracking per frame](figures/{fig.name})", ""]

    if overlays:
        lines += ["## Sample overlays", ""]
        for figure in overlays:
            path = panel_figure(figure, fig_dir / f"{figure.name}.png")
            lines += [f"![{figure.name}](figures/{path.name})", ""]
    lines += list(extra_sections)
    lines += ["Full numbers: `metrics.json`.", ""]
    return atomic_write_text(out_dir / "report.md", "\n".join(lines))


def scene_graph_markdown(title: str, record: dict, max_edges: int = 20) -> list[str]:
    """A scene graph (a `scene_graph_record`) as text: its objects, then its relations as
    `label#id predicate label#id`."""
    objects, relations, predicates = record["objects"], record["relations"], record["predicate_names"]
    names = [f"{label}#{object_id}" for label, object_id in zip(objects["labels"], objects["ids"])]
    lines = [f"## {title}", "", "| object | score | bbox (x, y, w, h) | area |", "|---|---|---|---|"]
    lines += [f"| {name} | {score:.2f} | {tuple(box)} | {area} |"
              for name, score, box, area in zip(names, objects["scores"], objects["boxes"], objects["areas"])]
    edges = list(zip(relations["sources"], relations["targets"], relations["predicates"], relations["weights"]))
    described = [f"{names[s]} **{predicates[p]}** {names[t]} (weight {w:.2f})" for s, t, p, w in edges
                 if predicates[p] != "touches"]
    lines += ["", f"Relations ({len(edges)} edges incl. `touches`; first {min(max_edges, len(described))} others):", ""]
    lines += [f"- {r}" for r in described[:max_edges]] + [""]
    return lines


def write_json(path: Path, data: dict) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False, default=str) + "\n")
