"""Latency vs accuracy over input resolution and GNN depth (the seed paper's third open check).

    python -m training.pareto --variant regions-semantic [--layers 0 1 2 4] [--sizes 32x336 48x504 64x672 80x840]

One model per GNN depth: the long-range config of ``--variant`` (``training/configs/long_range/``)
with ``model.graph_layers`` set, seed 0, trained into ``<out>/L<depth>/`` (resumable; the depth of
the config itself reuses the graph ablation's seed-0 run when it is there, the same training) plus
the baseline (no graph) of the ablation as the reference. Every model is then run at every input
size through the deployed path (``TorchBackend.from_model(model, input_size=size)``: the frame
resized to the size, the class map back to the labels' 64x672), scored on the validation split
(mIoU), and timed here in one process (``training.ablate.measure_latency``: per size, the models
interleaved, batch 1). Writes ``<results>/pareto.{json,md,png}``; the JSON ``points`` list has one
``{size, graph_layers, latency_ms, miou}`` per depth and size, ``baseline_points`` the reference.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import shlex
import sys

import torch
from matplotlib.figure import Figure

from casseg_ros.fileio import atomic_write_bytes, atomic_write_text
from casseg_ros.model.checkpoint import load_checkpoint
from casseg_ros.runtime import TorchBackend

from .ablate import measure_latency
from .datasets import build_dataset
from .evaluate import evaluate
from .graph_ablation import finished, isa_flags, variant_config
from .train import train


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def depth_run(variant: str, layers: int, out_root: str, ablation_root: str, overrides: list[str]):
    """The config of the ``layers``-deep model (trained if not finished)."""
    base = variant_config(variant, 0, ablation_root, overrides)
    if int(base.model["graph_layers"]) == layers and finished(base):
        return base
    cfg = variant_config(variant, 0, out_root, overrides + [f"model.graph_layers={layers}"])
    cfg.train.out_dir = os.path.join(out_root, f"L{layers}")
    if not finished(cfg):
        print(f"=== {variant}, {layers} graph layers: {cfg.train.steps} steps -> {cfg.train.out_dir}", flush=True)
        train(cfg, resume=True, progress=False)
    return cfg


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point beats on both latency (lower) and mIoU (higher)."""
    return [p for p in points
            if not any(q["latency_ms"] <= p["latency_ms"] and q["miou"] >= p["miou"]
                       and (q["latency_ms"], q["miou"]) != (p["latency_ms"], p["miou"]) for q in points)]


def plot(res: dict, path: str) -> None:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for layers in res["layers"]:
        pts = sorted((p for p in res["points"] if p["graph_layers"] == layers), key=lambda p: p["latency_ms"])
        ax.plot([p["latency_ms"] for p in pts], [100 * p["miou"] for p in pts], "o-", label=f"{layers} graph layers")
    base = sorted(res["baseline_points"], key=lambda p: p["latency_ms"])
    ax.plot([p["latency_ms"] for p in base], [100 * p["miou"] for p in base], "k--x", label="baseline (no graph)")
    for p in res["points"] + res["baseline_points"]:
        ax.annotate(f"{p['size'][0]}×{p['size'][1]}", (p["latency_ms"], 100 * p["miou"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    front = sorted(res["front"], key=lambda p: p["latency_ms"])
    ax.plot([p["latency_ms"] for p in front], [100 * p["miou"] for p in front], color="tab:red", alpha=0.3, lw=6,
            label="Pareto front")
    ax.set_xlabel("latency per frame (ms, batch 1, CPU)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"{res['variant']}: input size × GNN depth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())


def markdown(res: dict) -> str:
    hw = res["hardware"]
    lines = [f"# Pareto front: input size × GNN depth (`{res['variant']}`)", "",
             f"Command: `{res['command']}` ({res['date_utc']}). Models: the long-range config of `{res['variant']}` "
             f"with 0/1/2/4 graph layers, seed 0, {res['steps']} steps each, plus the baseline (no graph); mIoU on "
             f"{res['num_val']} validation scenes, each frame resized to the size and the class map back to the "
             f"labels. Latency: deployed path, batch 1, median of {res['rounds']} rounds, the models interleaved per "
             f"size; {hw['cpu_count']}-core CPU ({', '.join(hw['isa'])}), {hw['torch_threads']} thread(s), load "
             f"average {hw['load_avg_before'][0]:.1f} before / {hw['load_avg_after'][0]:.1f} after.", "",
             "| size | graph layers | latency (ms) | mIoU | on the front |", "|---|---:|---:|---:|---|"]
    front = {(tuple(p["size"]), p["graph_layers"]) for p in res["front"]}
    for p in sorted(res["points"] + res["baseline_points"],
                    key=lambda p: (p["size"][0], -1 if p["graph_layers"] is None else p["graph_layers"])):
        layers = "— (baseline)" if p["graph_layers"] is None else str(p["graph_layers"])
        on = "✓" if (tuple(p["size"]), p["graph_layers"]) in front else ""
        lines.append(f"| {p['size'][0]}×{p['size'][1]} | {layers} | {p['latency_ms']:.1f} | {100 * p['miou']:.1f} | {on} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", required=True, help="a graph variant of training/configs/long_range/")
    ap.add_argument("--layers", nargs="+", type=int, default=[0, 1, 2, 4])
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=[(32, 336), (48, 504), (64, 672), (80, 840)])
    ap.add_argument("--out", default="out/pareto")
    ap.add_argument("--ablation-out", default="out/graph_ablation", help="the graph ablation's runs (reused)")
    ap.add_argument("--results", default="training/results")
    ap.add_argument("--override", nargs="*", default=[])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-only", action="store_true", help="train the depth models, measure nothing")
    a = ap.parse_args(argv)
    command = shlex.join(["python", "-m", "training.pareto", *(sys.argv[1:] if argv is None else argv)])
    configs = {layers: depth_run(a.variant, layers, os.path.join(a.out, a.variant), a.ablation_out, a.override)
               for layers in a.layers}
    baseline = variant_config("baseline", 0, a.ablation_out, a.override)
    if not finished(baseline):
        raise SystemExit(f"the graph ablation's baseline (seed 0) is not finished under {a.ablation_out}")
    if a.train_only:
        return 0
    torch.set_num_threads(a.threads)
    models = {layers: load_checkpoint(os.path.join(c.train.out_dir, "model_final.safetensors"))
              for layers, c in configs.items()}
    models[None] = load_checkpoint(os.path.join(baseline.train.out_dir, "model_final.safetensors"))
    dataset = build_dataset(baseline.data, "val")
    load_before = os.getloadavg()
    points, baseline_points = [], []
    for size in a.sizes:
        latency = measure_latency({str(k): m for k, m in models.items()}, size, rounds=a.rounds)
        for layers, model in models.items():
            miou = evaluate(TorchBackend.from_model(model, "cpu", size), dataset, compute_map=False).miou
            point = {"size": list(size), "graph_layers": layers, "latency_ms": latency[str(layers)]["median_ms"],
                     "miou": miou}
            (baseline_points if layers is None else points).append(point)
            print(point, flush=True)
    load_after = os.getloadavg()
    res = {"command": command, "variant": a.variant, "layers": a.layers,
           "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "steps": baseline.train.steps, "num_val": len(dataset), "rounds": a.rounds,
           "hardware": {"cpu_count": os.cpu_count(), "isa": isa_flags(), "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "load_avg_before": list(load_before),
                        "load_avg_after": list(load_after)},
           "points": points, "baseline_points": baseline_points, "front": pareto_front(points + baseline_points)}
    os.makedirs(a.results, exist_ok=True)
    atomic_write_text(os.path.join(a.results, "pareto.json"), json.dumps(res, indent=1))
    atomic_write_text(os.path.join(a.results, "pareto.md"), markdown(res))
    plot(res, os.path.join(a.results, "pareto.png"))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
