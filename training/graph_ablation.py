"""The graph ablation the seed paper asks for, on the long-range context scenes.

    python -m training.graph_ablation --seeds 0 1 2                    # train + check every run (n workers: run it n times)
    python -m training.graph_ablation --seeds 0 1 2 --report           # table, CIs, latency
    python -m training.graph_ablation --groupnorm-evidence RUN_DIR...  # what GroupNorm carries

Variants (``training/configs/long_range/<variant>.yaml``, written by ``training.make_configs``): the
baseline (no graph) and {classes, regions} x {spatial, semantic, both}; fusion and the contrastive
loss are off everywhere, so the differences are the graph's. Runs are paired by seed: the seed
sets the initialisation, the data order and the augmentation, the same for every variant.

Each run trains into ``<out>/<variant>/seed<k>/`` (``training.train``: resumes from its last
checkpoint, and a finished run, ``metrics.json`` at its last step, is never retrained), then gets
its **cue-swap check** (``cue_swap``), saved atomically as ``context.json`` beside it. Runs go
seed-major (every variant of seed 0 first). Any number of background workers share the list: a
worker takes the next run nobody holds, holding it by a ``worker.pid`` file created exclusively in
the run's directory (a holder that is no longer alive is taken over), so a worker can be added or
restarted at any time.

``--report`` reads the finished runs and writes ``<results>/graph_ablation.{json,md}``: per variant
the seeds, the mIoU per seed, the 95 % t-interval of the mean paired difference to the baseline,
the car/boat confusion and the cue-swap flip rate, and the latency ratio, measured here, in this
one process, interleaved on the deployed path (``training.ablate.measure_latency``).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.resources
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from casseg_ros.fileio import atomic_write_text
from casseg_ros.model.checkpoint import load_checkpoint
from casseg_ros.runtime import Backend, TorchBackend

from .ablate import measure_latency, pair_confusion
from .config import ExperimentConfig, load_config
from .datasets import build_dataset
from .make_configs import GRAPH_VARIANTS
from .train import train

CONFIGS = importlib.resources.files("training") / "configs" / "long_range"
PAIR = ("car", "boat")


def variant_config(variant: str, seed: int, out_root: str, overrides: list[str]) -> ExperimentConfig:
    out_dir = os.path.join(out_root, variant, f"seed{seed}")
    return load_config(str(CONFIGS / f"{variant}.yaml"),
                       list(overrides) + [f"train.seed={seed}", f"train.out_dir={out_dir}"])


def finished(cfg: ExperimentConfig) -> bool:
    path = os.path.join(cfg.train.out_dir, "metrics.json")
    return os.path.isfile(path) and json.loads(Path(path).read_text()).get("step") == cfg.train.steps


def cue_swap(backend: Backend, dataset, count: int) -> dict:
    """Render each of the first ``count`` validation scenes as a street and as a harbour scene (the
    same pixels everywhere but the far cue zone) and compare the vehicle pixels' predictions.

    ``flip_rate``: share of vehicle pixels whose predicted class differs between the two renderings
    -- 0 for a model that cannot see the cue (its input around them is identical), 1 for one that
    follows it everywhere. ``pair_accuracy``: share predicted as the right one of the pair (car in
    the street rendering, boat in the harbour one); ``pair_confusion``: share predicted as the wrong
    one of the pair (a blind model that always says "car" scores 0.5 / 0.5).
    """
    names = list(dataset.class_names)
    car, boat = (names.index(n) for n in PAIR)
    pixels = flipped = right = wrong = 0
    for i in range(min(count, len(dataset))):
        street, harbour = dataset.generate(i, scene="street"), dataset.generate(i, scene="harbour")
        vehicle = street.label == car
        if not vehicle.any():
            continue
        pred = backend.infer(np.stack([street.image, harbour.image])).class_ids
        on_street, on_water = pred[0][vehicle], pred[1][vehicle]
        pixels += int(vehicle.sum())
        flipped += int((on_street != on_water).sum())
        right += int((on_street == car).sum() + (on_water == boat).sum())
        wrong += int((on_street == boat).sum() + (on_water == car).sum())
    return {"scenes": min(count, len(dataset)), "vehicle_pixels": pixels, "flip_rate": flipped / max(pixels, 1),
            "pair_accuracy": right / max(2 * pixels, 1), "pair_confusion": wrong / max(2 * pixels, 1)}


class NormStatisticsReplay:
    """Forward hooks on every GroupNorm of ``model``: ``record`` keeps each one's per-sample,
    per-group mean and variance, ``replay`` normalises the next input with the kept ones instead of
    its own. Shows what the image-wide statistics carry: run one image recording, another replaying."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
        self.saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mode = "record"
        self.handles = [m.register_forward_hook(self.hook) for m in self.norms]

    def hook(self, module: torch.nn.GroupNorm, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        x = inputs[0]
        groups = x.reshape(x.shape[0], module.num_groups, -1)
        if self.mode == "record":
            self.saved[id(module)] = (groups.mean(-1, keepdim=True), groups.var(-1, unbiased=False, keepdim=True))
            return None
        mean, var = self.saved[id(module)]
        y = ((groups - mean) / torch.sqrt(var + module.eps)).reshape_as(x)
        return y * module.weight.view(1, -1, 1, 1) + module.bias.view(1, -1, 1, 1)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def groupnorm_check(model, dataset, count: int) -> dict:
    """Cue-swap flip rate of ``model`` as it is, and with the harbour rendering normalised by the
    street rendering's GroupNorm statistics: if the flips vanish, the statistics carried the cue."""
    car = list(dataset.class_names).index(PAIR[0])
    replay = NormStatisticsReplay(model)
    pixels = own = replayed = 0
    try:
        with torch.inference_mode():
            for i in range(min(count, len(dataset))):
                street, harbour = dataset.generate(i, scene="street"), dataset.generate(i, scene="harbour")
                vehicle = street.label == car
                if not vehicle.any():
                    continue
                predict = lambda s: model(model.normalize_uint8(torch.from_numpy(s.image)[None])).logits.argmax(1)[0].numpy()  # noqa: E731
                replay.mode = "record"
                on_water = predict(harbour)
                on_street = predict(street)  # recorded last: its statistics are replayed
                replay.mode = "replay"
                on_water_replayed = predict(harbour)
                pixels += int(vehicle.sum())
                own += int((on_street[vehicle] != on_water[vehicle]).sum())
                replayed += int((on_street[vehicle] != on_water_replayed[vehicle]).sum())
    finally:
        replay.close()
    return {"group_norms": len(replay.norms), "vehicle_pixels": pixels, "flip_rate": own / max(pixels, 1),
            "flip_rate_with_street_statistics": replayed / max(pixels, 1)}


def groupnorm_evidence(run_dirs: list[str], results: str, count: int, command: str) -> dict:
    """``<results>/long_range_groupnorm.{json,md}``: GroupNorm-decoder runs' cue swap, with and
    without their own statistics."""
    rows = []
    for run in run_dirs:
        cfg = load_config(os.path.join(run, "config.yaml"))
        model = load_checkpoint(os.path.join(run, "model_final.safetensors"))
        metrics = json.loads(Path(run, "metrics.json").read_text())
        rows.append({"run": run, "decoder_norm": model.config.decoder_norm, "graph": model.config.graph,
                     "miou": metrics["val_miou"], "per_class_iou": metrics["per_class_iou"],
                     "cue_swap": cue_swap(TorchBackend.from_model(model, "cpu"), build_dataset(cfg.data, "val"), count),
                     **groupnorm_check(model, build_dataset(cfg.data, "val"), count)})
    res = {"command": command, "runs": rows}
    lines = ["# The GroupNorm decoder reads the far cue", "", f"Command: `{command}`", "",
             "Runs of the long-range benchmark with the decoder's GroupNorm (the default `decoder_norm: group`), "
             "otherwise the graph ablation's settings. Cue swap: each validation scene rendered as street and as "
             "harbour (identical pixels except the far cue zone); flip rate = share of vehicle pixels whose "
             "prediction changes. Replayed: the harbour rendering normalised with the street rendering's GroupNorm "
             "statistics (every other computation its own).", "",
             "| run | graph | mIoU | IoU car / boat | flip rate | pair accuracy | flip rate, street statistics replayed |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        iou = r["per_class_iou"]
        lines.append(f"| `{r['run']}` | {'on' if r['graph'] else 'off'} | {100 * r['miou']:.1f} | "
                     f"{100 * (iou.get('car') or 0):.1f} / {100 * (iou.get('boat') or 0):.1f} | "
                     f"{100 * r['flip_rate']:.1f} % | {100 * r['cue_swap']['pair_accuracy']:.1f} % | "
                     f"{100 * r['flip_rate_with_street_statistics']:.1f} % |")
    lines += ["", "A flip rate that drops to (near) 0 with the street rendering's statistics means the model "
              "read the cue through them: GroupNorm's mean and variance span the whole image, so a model without "
              "any context module still has an image-wide channel. A run whose flips remain with the replayed "
              "statistics reads the cue through another path as well (a class graph's nodes are pooled over the "
              "whole image). The graph ablation therefore uses `decoder_norm: pixel` (LayerNorm over each pixel's "
              "channels) in every variant.", ""]
    os.makedirs(results, exist_ok=True)
    atomic_write_text(os.path.join(results, "long_range_groupnorm.json"), json.dumps(res, indent=1))
    atomic_write_text(os.path.join(results, "long_range_groupnorm.md"), "\n".join(lines))
    return res


def hold(run_dir: str) -> bool:
    """Hold ``run_dir`` for this process (``worker.pid``, created exclusively); False if another
    live process holds it. A hold by a dead process is taken over."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "worker.pid")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(Path(path).read_text() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and Path(f"/proc/{holder}").exists():
                return False
            if holder == os.getpid():
                return True
            os.remove(path)  # its holder is gone
            continue
        with os.fdopen(fd, "w") as handle:  # a lock, not data: exclusive creation is the atomic step
            handle.write(str(os.getpid()))
        return True
    return False


def release(run_dir: str) -> None:
    path = os.path.join(run_dir, "worker.pid")
    if os.path.isfile(path) and Path(path).read_text() == str(os.getpid()):
        os.remove(path)


def run_one(variant: str, seed: int, out_root: str, overrides: list[str], swap_scenes: int) -> dict:
    """Train (or resume) one run and give it its cue-swap check; both are skipped when done."""
    cfg = variant_config(variant, seed, out_root, overrides)
    if not finished(cfg):
        print(f"=== {variant} seed {seed}: {cfg.train.steps} steps -> {cfg.train.out_dir}", flush=True)
        t0 = time.time()
        train(cfg, resume=True, progress=False)
        atomic_write_text(os.path.join(cfg.train.out_dir, "train_wall.json"),
                          json.dumps({"train_wall_s": round(time.time() - t0, 1)}))
    context_path = os.path.join(cfg.train.out_dir, "context.json")
    if not os.path.isfile(context_path):
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        model = load_checkpoint(os.path.join(cfg.train.out_dir, "model_final.safetensors"))
        check = cue_swap(TorchBackend.from_model(model, "cpu"), build_dataset(cfg.data, "val"), swap_scenes)
        atomic_write_text(context_path, json.dumps(check, indent=1))
    return json.loads(Path(context_path).read_text())


def schedule(seeds: list[int], variants: list[str]) -> list[tuple[int, str]]:
    """Seed-major: all variants of the first seed, then the next, so paired results come early."""
    return [(s, v) for s in seeds for v in variants]


def paired_ci95(deltas: list[float]) -> list[float] | None:
    """95 % t-interval of the mean of paired differences (None with fewer than 2 pairs)."""
    if len(deltas) < 2:
        return None
    mean, sem = statistics.mean(deltas), statistics.stdev(deltas) / len(deltas) ** 0.5
    half = float(stats.t.ppf(0.975, len(deltas) - 1)) * sem
    return [mean - half, mean + half]


def collect(out_root: str, seeds: list[int], variants: list[str], overrides: list[str]) -> dict:
    """Per variant, the finished runs' numbers (only seeds that every variant has finished count)."""
    rows: dict[str, dict] = {}
    for v in variants:
        rows[v] = {}
        for s in seeds:
            cfg = variant_config(v, s, out_root, overrides)
            context = os.path.join(cfg.train.out_dir, "context.json")
            if finished(cfg) and os.path.isfile(context):
                metrics = json.loads(Path(cfg.train.out_dir, "metrics.json").read_text())
                confusion = json.loads(Path(cfg.train.out_dir, "eval_val", "metrics.json").read_text())["confusion_matrix"]
                rows[v][s] = {"miou": metrics["val_miou"], "map": metrics["val_map"],
                              "per_class_iou": metrics["per_class_iou"],
                              "pair_confusion_val": pair_confusion(confusion, list(metrics["per_class_iou"]), PAIR),
                              "cue_swap": json.loads(Path(context).read_text()), "out_dir": cfg.train.out_dir}
    paired = [s for s in seeds if all(s in rows[v] for v in variants)]
    return {v: {s: rows[v][s] for s in paired} for v in variants}


def report(out_root: str, results: str, seeds: list[int], overrides: list[str], rounds: int, threads: int,
           command: str) -> dict:
    variants = list(GRAPH_VARIANTS)
    runs = collect(out_root, seeds, variants, overrides)
    paired = sorted(runs["baseline"])
    if not paired:
        raise SystemExit(f"no seed has finished every variant under {out_root}")
    torch.set_num_threads(threads)
    cfg = variant_config("baseline", paired[0], out_root, overrides)
    models = {v: load_checkpoint(os.path.join(runs[v][paired[0]]["out_dir"], "model_final.safetensors"))
              for v in variants}
    size = (cfg.data.height, cfg.data.width)
    load_before = os.getloadavg()
    latency = measure_latency(models, size, rounds=rounds)
    load_after = os.getloadavg()
    base = runs["baseline"]
    table = []
    for v in variants:
        miou = [runs[v][s]["miou"] for s in paired]
        deltas = [runs[v][s]["miou"] - base[s]["miou"] for s in paired]
        ci = None if v == "baseline" else paired_ci95(deltas)
        row = {"name": v, "model": GRAPH_VARIANTS[v], "seeds": paired, "miou": miou,
               "miou_mean": statistics.mean(miou),
               "delta_vs_baseline": None if v == "baseline" else deltas,
               "delta_vs_baseline_mean": None if v == "baseline" else statistics.mean(deltas),
               "delta_vs_baseline_ci95": ci,
               "significant": None if ci is None else bool(ci[0] > 0 or ci[1] < 0),
               "map": [runs[v][s]["map"] for s in paired],
               "iou_car": [runs[v][s]["per_class_iou"].get("car") for s in paired],
               "iou_boat": [runs[v][s]["per_class_iou"].get("boat") for s in paired],
               "pair_confusion_val": [runs[v][s]["pair_confusion_val"] for s in paired],
               "cue_swap": [runs[v][s]["cue_swap"] for s in paired],
               "latency_ms": latency[v]["median_ms"],
               "latency_ratio": latency[v]["median_ms"] / latency["baseline"]["median_ms"]}
        table.append(row)
    winners = [r for r in table if r["significant"] and r["delta_vs_baseline_mean"] > 0]
    result = {
        "command": command,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "benchmark": {"layout": cfg.data.layout, "size": list(size), "num_val": cfg.data.num_val,
                      "steps": cfg.train.steps, "batch_size": cfg.optim.batch_size, "backbone": cfg.model["backbone"]},
        "hardware": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                     "isa": isa_flags(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                     "load_avg_before": list(load_before), "load_avg_after": list(load_after)},
        "latency": {"input_hw": list(size), "rounds": rounds, "batch": 1, "models_of_seed": paired[0],
                    "path": "TorchBackend.from_model(model).infer, interleaved, order rotated every round",
                    "per_variant": latency},
        "variants": table,
        "winners": [r["name"] for r in winners],
    }
    os.makedirs(results, exist_ok=True)
    atomic_write_text(os.path.join(results, "graph_ablation.json"), json.dumps(result, indent=1))
    atomic_write_text(os.path.join(results, "graph_ablation.md"), markdown(result))
    return result


def isa_flags() -> list[str]:
    """The CPU's vector extensions that matter for these timings (avx2 / avx512* / amx*)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted({f for f in flags.split(":", 1)[1].split() if f == "avx2" or f.startswith(("avx512", "amx"))})


def markdown(res: dict) -> str:
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    b, hw, lat = res["benchmark"], res["hardware"], res["latency"]
    lines = [
        "# Graph ablation on the long-range context scenes", "",
        f"Command: `{res['command']}` ({res['date_utc']}). Benchmark: `{b['layout']}` context scenes "
        f"{b['size'][0]}×{b['size'][1]}, {b['num_val']} validation scenes, `{b['backbone']}`, {b['steps']} steps × "
        f"batch {b['batch_size']} per run, fusion and contrastive off. Seeds {res['variants'][0]['seeds']} (paired: the "
        "seed sets init, data order and augmentation). Δ = variant − baseline mIoU per seed; 95 % CI = t-interval "
        "of the mean paired Δ.", "",
        f"Latency: {lat['path']}, batch 1, {lat['input_hw'][0]}×{lat['input_hw'][1]}, median of {lat['rounds']} rounds, "
        f"models of seed {lat['models_of_seed']}; {hw['cpu_count']}-core CPU ({', '.join(hw['isa']) or 'isa unknown'}), "
        f"{hw['torch_threads']} thread(s), load average {hw['load_avg_before'][0]:.1f} before / "
        f"{hw['load_avg_after'][0]:.1f} after.", "",
        "| variant | mIoU per seed | mean | Δ mean | Δ 95 % CI | IoU car / boat | car↔boat confused (val) | "
        "cue-swap flip rate | latency (ms) | × baseline |",
        "|---|---|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in res["variants"]:
        ci = r["delta_vs_baseline_ci95"]
        cells = [r["name"], " / ".join(pct(m) for m in r["miou"]), pct(r["miou_mean"]),
                 "—" if r["delta_vs_baseline_mean"] is None else f"{100 * r['delta_vs_baseline_mean']:+.1f}",
                 "—" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" + (" *" if r["significant"] else ""),
                 f"{pct(statistics.mean(x for x in r['iou_car'] if x is not None))} / "
                 f"{pct(statistics.mean(x for x in r['iou_boat'] if x is not None))}",
                 f"{100 * statistics.mean(r['pair_confusion_val']):.1f} %",
                 f"{100 * statistics.mean(c['flip_rate'] for c in r['cue_swap']):.1f} %",
                 f"{r['latency_ms']:.1f}", f"{r['latency_ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "\\* the CI excludes 0. Car↔boat confused: share of car and boat ground-truth pixels predicted as "
              "the other one of the pair (validation split, mean over seeds). Cue-swap flip rate: each validation "
              "scene rendered as street and as harbour (identical pixels except the far cue zone); share of vehicle "
              "pixels whose prediction changes — 0 % means the model cannot see the cue.", ""]
    if res["winners"]:
        lines.append("Variants whose paired Δ is significantly above 0: " + ", ".join(f"`{w}`" for w in res["winners"]) + ".")
    else:
        lines.append("No variant's paired Δ is significantly above 0.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(GRAPH_VARIANTS), choices=list(GRAPH_VARIANTS))
    ap.add_argument("--out", default="out/graph_ablation")
    ap.add_argument("--results", default="training/results", help="where --report writes graph_ablation.{json,md}")
    ap.add_argument("--override", nargs="*", default=[], help="section.key=value applied to every run")
    ap.add_argument("--swap-scenes", type=int, default=50, help="validation scenes of the cue-swap check")
    ap.add_argument("--report", action="store_true", help="only summarise the finished runs (+ latency)")
    ap.add_argument("--rounds", type=int, default=30, help="interleaved latency rounds (--report)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the latency (--report)")
    ap.add_argument("--groupnorm-evidence", nargs="+", default=None, metavar="RUN_DIR",
                    help="only check finished GroupNorm-decoder runs -> <results>/long_range_groupnorm.{json,md}")
    a = ap.parse_args(argv)
    command = shlex.join(["python", "-m", "training.graph_ablation", *(sys.argv[1:] if argv is None else argv)])
    if a.groupnorm_evidence:
        torch.set_num_threads(a.threads)
        groupnorm_evidence(a.groupnorm_evidence, a.results, a.swap_scenes, command)
        print(Path(a.results, "long_range_groupnorm.md").read_text())
        return 0
    if a.report:
        res = report(a.out, a.results, a.seeds, a.override, a.rounds, a.threads, command)
        print(markdown(res))
        return 0
    for seed, variant in schedule(a.seeds, a.variants):
        run_dir = variant_config(variant, seed, a.out, a.override).train.out_dir
        if not hold(run_dir):
            continue
        try:
            check = run_one(variant, seed, a.out, a.override, a.swap_scenes)
        finally:
            release(run_dir)
        print(f"--- {variant} seed {seed}: cue-swap flip rate {100 * check['flip_rate']:.1f} %, "
              f"pair accuracy {100 * check['pair_accuracy']:.1f} %", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
