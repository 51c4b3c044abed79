"""Ablation: train + evaluate the five variants and compare mIoU, mAP and latency.

    python -m training.ablate --preset context-scenes [--steps 400] [--out out/ablation]

Writes ``<out>/ablation.json`` and ``<out>/ablation.md``. Each variant trains into
``<out>/<variant>/`` (re-running skips finished variants and resumes unfinished ones). Latency is
measured after training, in one process, at the same input size for every variant: the variants are
timed interleaved (round-robin, order rotated every round) on the deployed path
(``TorchBackend.from_model(model).infer``: uint8 image -> class ids, confidence, scores,
adjacency), batch 1, and the median per variant is reported.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.resources
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from casseg_ros.fileio import atomic_write_text
from casseg_ros.model import ContextSegmentor
from casseg_ros.model.checkpoint import load_checkpoint
from casseg_ros.runtime import TorchBackend

from .config import load_config
from .train import train

VARIANTS = ["baseline", "fusion", "graph", "contrastive", "full"]
CONFIGS = importlib.resources.files("training") / "configs"  # found through the package, not a source path
PRESETS = {
    "context-scenes": "context_scenes",
    "cityscapes": "cityscapes",
    "coco": "coco",
    "ade20k": "ade20k",
    "bdd100k": "bdd100k",
    "mapillary-vistas": "mapillary_vistas",
}


def measure_latency(models: dict[str, ContextSegmentor], input_hw: tuple[int, int], rounds: int = 30,
                    warmup: int = 3) -> dict:
    """Interleaved, order-rotated timing of ``backend.infer`` (the deployed path: uint8 frame in,
    class ids / confidence / scores / adjacency out) per variant; ms statistics per variant."""
    h, w = input_hw
    image = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    backends = {k: TorchBackend.from_model(m, "cpu", input_hw) for k, m in models.items()}
    names = list(backends)
    times: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(warmup):
        for k in names:
            backends[k].infer(image)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            backends[k].infer(image)
            times[k].append((time.perf_counter() - t0) * 1000.0)
    out = {}
    for k, ts in times.items():
        ts_sorted = sorted(ts)
        out[k] = {"median_ms": statistics.median(ts), "p10_ms": ts_sorted[int(0.1 * (len(ts) - 1))],
                  "p90_ms": ts_sorted[int(0.9 * (len(ts) - 1))], "n": len(ts)}
    return out


def read_json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def pair_confusion(confmat, names, pair=("car", "boat")):
    """Share of the pair's ground-truth pixels predicted as the *other* class of the pair: the
    error that only context can fix in context scenes (None when the classes do not exist)."""
    if not all(p in names for p in pair):
        return None
    a, b = (names.index(p) for p in pair)
    total = sum(confmat[a]) + sum(confmat[b])
    return (confmat[a][b] + confmat[b][a]) / total if total else None


def fmt(v, scale=100.0, digits=1):
    return "—" if v is None else f"{scale * v:.{digits}f}"


def run_ablation(preset: str, out_root: str, steps: int | None, overrides: list[str], rounds: int,
                 variants: list[str] | None = None) -> dict:
    dname = PRESETS[preset]
    variants = variants or VARIANTS
    rows = {}
    t_all = time.time()
    for v in variants:
        cfg_path = str(CONFIGS / f"{v}_{dname}.yaml")
        ov = list(overrides) + [f"train.out_dir={os.path.join(out_root, v)}"]
        if steps is not None:
            ov.append(f"train.steps={steps}")
        cfg = load_config(cfg_path, ov)
        metrics_path = os.path.join(cfg.train.out_dir, "metrics.json")
        t0 = time.time()
        done = os.path.isfile(metrics_path) and read_json(metrics_path).get("step") == cfg.train.steps
        if not done:
            print(f"=== {v}: training {cfg.train.steps} steps -> {cfg.train.out_dir}", flush=True)
            train(cfg, resume=True)
        m = read_json(metrics_path)
        rows[v] = {"config": os.path.relpath(cfg_path), "out_dir": cfg.train.out_dir, "steps": m["step"],
                   "miou": m["val_miou"], "map": m["val_map"], "per_class_iou": m["per_class_iou"],
                   "train_wall_s": None if done else round(time.time() - t0, 1),
                   "model": {k: cfg.model[k] for k in ("fusion", "graph", "contrastive")}}
        ev_path = os.path.join(cfg.train.out_dir, "eval_val", "metrics.json")
        if os.path.isfile(ev_path):
            rows[v]["pair_confusion"] = pair_confusion(read_json(ev_path)["confusion_matrix"],
                                                       list(m["per_class_iou"]))
        input_hw = (cfg.data.height, cfg.data.width) if dname == "context_scenes" else tuple(cfg.data.crop_size)
        num_threads = cfg.train.num_threads
    if num_threads:
        torch.set_num_threads(num_threads)
    models = {v: load_checkpoint(os.path.join(rows[v]["out_dir"], "model_final.safetensors")) for v in variants}
    for v, m in models.items():
        rows[v]["params_m"] = round(sum(p.numel() for p in m.parameters()) / 1e6, 3)
        rows[v]["checkpoint_mb"] = round(os.path.getsize(os.path.join(rows[v]["out_dir"], "model_final.safetensors")) / 2**20, 2)
    lat = measure_latency(models, input_hw, rounds=rounds)
    for v in variants:
        rows[v]["latency"] = lat[v]
    base = rows.get("baseline")
    for v in variants:
        if base:
            rows[v]["delta_miou"] = rows[v]["miou"] - base["miou"]
            rows[v]["delta_map"] = (rows[v]["map"] - base["map"]) if (rows[v]["map"] is not None and base["map"] is not None) else None
            rows[v]["latency_ratio"] = rows[v]["latency"]["median_ms"] / base["latency"]["median_ms"]
    result = {
        "preset": preset,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m training.ablate --preset " + preset
                   + (f" --steps {steps}" if steps is not None else "")
                   + (" --override " + " ".join(overrides) if overrides else ""),
        "hardware": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                     "cuda": torch.cuda.is_available()},
        "latency_input_hw": list(input_hw),
        "latency_rounds": rounds,
        "total_wall_s": round(time.time() - t_all, 1),
        "variants": rows,
    }
    if "full" in rows and base:
        result["goal"] = {"full_minus_baseline_miou_pts": 100 * rows["full"]["delta_miou"],
                          "full_latency_ratio": rows["full"]["latency_ratio"],
                          "met": bool(100 * rows["full"]["delta_miou"] >= 5.0 and rows["full"]["latency_ratio"] <= 1.05)}
    atomic_write_text(os.path.join(out_root, "ablation.json"), json.dumps(result, indent=1))
    atomic_write_text(os.path.join(out_root, "ablation.md"), markdown(result))
    return result


def markdown(res: dict) -> str:
    rows = res["variants"]
    pair = [c for c in ("car", "boat") if any(c in r["per_class_iou"] for r in rows.values())]
    hdr = "| variant | fusion | graph | contrastive | mIoU | Δ mIoU | mAP | Δ mAP | " + \
          " | ".join(f"IoU {c}" for c in pair) + (" | car↔boat confused (%) | " if pair else "") + "latency median (ms) | × baseline |"
    lines = [f"Preset `{res['preset']}` — `{res['command']}` ({res['date_utc']}, "
             f"{res['hardware']['cpu_count']}-core CPU, torch {res['hardware']['torch']}, "
             f"{res['hardware']['torch_threads']} threads; latency: batch 1, "
             f"{res['latency_input_hw'][0]}×{res['latency_input_hw'][1]}, median of {res['latency_rounds']} interleaved runs)",
             "", hdr, "|" + "---|" * (hdr.count("|") - 1)]
    yes = lambda b: "✓" if b else "—"  # noqa: E731
    for v, r in rows.items():
        cells = [v, yes(r["model"]["fusion"]), yes(r["model"]["graph"]), yes(r["model"]["contrastive"]),
                 fmt(r["miou"]), ("—" if v == "baseline" else f"{100 * r['delta_miou']:+.1f}"),
                 fmt(r["map"]), ("—" if v == "baseline" or r.get("delta_map") is None else f"{100 * r['delta_map']:+.1f}")]
        cells += [fmt(r["per_class_iou"].get(c)) for c in pair]
        if pair:
            cells.append(fmt(r.get("pair_confusion"), digits=2))
        cells += [f"{r['latency']['median_ms']:.1f}", f"{r['latency_ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if "goal" in res:
        g = res["goal"]
        lines += ["", f"Goal (full − baseline ≥ +5 mIoU at ≤ 1.05× latency): "
                      f"{g['full_minus_baseline_miou_pts']:+.1f} mIoU at {g['full_latency_ratio']:.2f}× → "
                      f"{'met' if g['met'] else 'NOT met'}."]
    return "\n".join(lines) + "\n"


def combine(dirs: list[str], out_path: str) -> str:
    """Mean ± spread over several ablation runs (e.g. training seeds) -> markdown (+ .json)."""
    runs = [read_json(os.path.join(d, "ablation.json")) for d in dirs]
    variants = [v for v in runs[0]["variants"] if all(v in r["variants"] for r in runs)]
    out = {"runs": [{"dir": d, "command": r["command"]} for d, r in zip(dirs, runs)], "variants": {}}
    lines = [f"Mean over {len(runs)} runs (" + "; ".join(f"`{r['command']}`" for r in runs) + "); "
             "± is half the min–max range. Latency ratio: mean of the per-run ratios.", "",
             "| variant | mIoU | Δ mIoU vs baseline | mAP | Δ mAP vs baseline | latency × baseline |",
             "|---|---|---|---|---|---|"]
    for v in variants:
        rs = [r["variants"][v] for r in runs]
        agg = {}
        for key in ("miou", "delta_miou", "map", "delta_map", "latency_ratio"):
            vals = [x.get(key) for x in rs if x.get(key) is not None]
            agg[key] = (statistics.mean(vals), (max(vals) - min(vals)) / 2) if vals else None
        out["variants"][v] = {k: (None if a is None else {"mean": a[0], "half_range": a[1]}) for k, a in agg.items()}
        pm = lambda a, sign="": "—" if a is None else f"{100 * a[0]:{sign}.1f} ± {100 * a[1]:.1f}"  # noqa: E731
        lr = agg["latency_ratio"]
        lines.append(f"| {v} | {pm(agg['miou'])} | {'—' if v == 'baseline' else pm(agg['delta_miou'], '+')} | "
                     f"{pm(agg['map'])} | {'—' if v == 'baseline' else pm(agg['delta_map'], '+')} | "
                     f"{'—' if lr is None else f'{lr[0]:.2f}'} |")
    md = "\n".join(lines) + "\n"
    atomic_write_text(out_path, md)
    atomic_write_text(os.path.splitext(out_path)[0] + ".json", json.dumps(out, indent=1))
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="context-scenes", choices=sorted(PRESETS))
    ap.add_argument("--out", default="out/ablation")
    ap.add_argument("--steps", type=int, default=None, help="override train.steps of every variant")
    ap.add_argument("--variants", nargs="*", default=None, choices=VARIANTS)
    ap.add_argument("--rounds", type=int, default=50, help="interleaved latency rounds")
    ap.add_argument("--override", nargs="*", default=[], help="section.key=value applied to every variant")
    ap.add_argument("--combine", nargs="+", default=None, metavar="DIR",
                    help="only summarise finished ablation dirs (mean over seeds) into <out>/ablation_seeds.md")
    a = ap.parse_args(argv)
    if a.combine:
        print(combine(a.combine, os.path.join(a.out, "ablation_seeds.md")))
        return 0
    res = run_ablation(a.preset, a.out, a.steps, a.override, a.rounds, a.variants)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
