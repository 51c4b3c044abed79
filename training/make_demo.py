"""Publish a context-scenes model as the demo weights + model card.

    python -m training.make_demo [--ablation out/ablation/ablation.json] [--out models]
    python -m training.make_demo --run out/names/names [--vocabulary-eval training/results/vocabulary_eval.json]

Picks the variant with the highest validation mIoU in the ablation (or takes the finished training
run ``--run``: its ``model_final.safetensors``, ``config.yaml`` and ``metrics.json``, its latency
measured here), re-saves it with ``casseg_ros.model.checkpoint.save_checkpoint`` (safetensors +
config + vocabulary metadata) as ``<out>/casseg_demo.safetensors`` (refuses > 20 MB) and writes
``<out>/MODEL_CARD.md``; ``--vocabulary-eval`` adds what other class names give (the JSON of
``training.vocabulary_eval`` for these weights).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from casseg_ros.fileio import atomic_write_text
from casseg_ros.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from casseg_ros.runtime.engine_cache import file_sha256

from .ablate import measure_latency
from .config import load_config

MAX_MB = 20.0


def run_as_ablation(run_dir: str) -> tuple[dict, dict, str]:
    """A finished training run in the shape of an ablation result with one variant (latency measured now)."""
    metrics = json.loads(Path(run_dir, "metrics.json").read_text())
    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    model = load_checkpoint(os.path.join(run_dir, "model_final.safetensors"))
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    size = (cfg.data.height, cfg.data.width)
    latency = measure_latency({cfg.name: model}, size, rounds=50)[cfg.name]
    row = {"out_dir": run_dir, "config": os.path.relpath(os.path.join(run_dir, "config.yaml")),
           "miou": metrics["val_miou"], "map": metrics["val_map"], "steps": metrics["step"],
           "per_class_iou": metrics["per_class_iou"], "latency": latency,
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)}
    res = {"hardware": {"torch_threads": torch.get_num_threads()}, "latency_input_hw": list(size), "variants": {cfg.name: row}}
    return res, res["variants"], cfg.name


def vocabulary_paragraph(path: str) -> str:
    """What other class names give, from a ``training.vocabulary_eval`` JSON of these weights."""
    report = json.loads(Path(path).read_text())
    rows = report["settings"]
    synonyms = ", ".join(rows["synonyms"]["names"])
    text = (f"**Other class names (run-time vocabularies).** The classes can be swapped without new weights "
            f"(`Backend.set_vocabulary`, `casseg-vocab bake`). With one synonym per class never seen in training "
            f"({synonyms}) the validation mIoU is {rows['synonyms']['miou']:.1f} against {rows['trained']['miou']:.1f} "
            f"with the trained names: `synonym_miou_drop` = {report['synonym_miou_drop']:.1f} points (goal ≤ 2); "
            f"the first synonym set, with the ambiguous 'pavement' for sidewalk: drop "
            f"{report['synonym_miou_drop_legacy']:.1f}. A merged \"vehicle\" for car + boat reaches "
            f"{rows['merged']['per_class_iou']['vehicle'] or 0:.1f} IoU.")
    if report.get("prompt_templates"):
        text += (f" New names are embedded as these weights' were: the mean over the prompt templates "
                 f"{report['prompt_templates']} (the checkpoint's `prompt_templates`); embedded with the one default "
                 f"template instead, the synonyms give {rows['synonyms_one_template']['miou']:.1f}.")
    if report.get("control"):
        c = report["control"]
        text += (f" The control (the same training on the trained names only, `{c['checkpoint']}`): trained names "
                 f"{c['trained_miou']:.1f}, synonyms {c['synonyms_miou']:.1f}; these weights' trained names "
                 f"{report['trained_minus_control']:+.1f} points against it (goal: within 1).")
    return text + f" Table and command: `{path.replace('.json', '.md')}`."


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ablation", default="out/ablation/ablation.json")
    ap.add_argument("--out", default="models")
    ap.add_argument("--variant", default=None, help="publish this variant instead of the best one")
    ap.add_argument("--note", default="", help="extra paragraph for the card (e.g. why this variant)")
    ap.add_argument("--run", default=None, help="publish this finished training run instead of an ablation's")
    ap.add_argument("--vocabulary-eval", default=None, help="training.vocabulary_eval JSON of these weights")
    ap.add_argument("--config", default=None, help="with --run: the committed config it was trained from (for the card)")
    a = ap.parse_args(argv)
    if a.run:
        res, rows, name = run_as_ablation(a.run)
        if a.config:
            rows[name]["config"] = a.config
        source = f"training.train --config {rows[name]['config']}"
    else:
        res = json.loads(Path(a.ablation).read_text())
        rows = res["variants"]
        name = a.variant or max(rows, key=lambda v: rows[v]["miou"])
        source = "training.ablate --preset context-scenes"
    row = rows[name]
    src = os.path.join(row["out_dir"], "model_final.safetensors")
    model = load_checkpoint(src)
    cfg = load_config(os.path.join(row["out_dir"], "config.yaml"))
    dst = os.path.join(a.out, "casseg_demo.safetensors")
    extra = {"source": source, "variant": name, "val_miou": row["miou"],
             "val_map": row["map"], "steps": row["steps"], "input_size": [cfg.data.height, cfg.data.width]}
    trained_with = read_checkpoint(src)[1].get("extra") or {}
    extra.update({k: trained_with[k] for k in ("prompt_templates", "name_pool") if k in trained_with})
    save_checkpoint(dst, model, extra=extra)
    size_mb = os.path.getsize(dst) / 2**20
    if size_mb > MAX_MB:
        os.remove(dst)
        raise SystemExit(f"{dst} would be {size_mb:.1f} MB > {MAX_MB} MB")
    sha = file_sha256(dst)
    base = rows.get("baseline")
    pc = row["per_class_iou"]
    iou_lines = "\n".join(f"| {k} | {'—' if v is None else f'{100 * v:.1f}'} |" for k, v in pc.items())
    mc = model.config
    loss_text = (f"CE + {cfg.loss.contrastive_weight:g}·contrastive (τ = {cfg.loss.temperature:g})" if mc.contrastive
                 else "cross-entropy only")
    graph_text = f" ({mc.graph_nodes} nodes, {mc.graph_edges} edges, {mc.graph_layers} layers)" if mc.graph else ""
    if a.run:
        pool = trained_with.get("name_pool")
        what = (f"The finished training run `{a.run}` (`{row['config']}`)"
                + (f", trained from the start with each class scored against a name drawn per step from `{pool}`, "
                   f"every name embedded as the mean over the prompt templates {trained_with.get('prompt_templates')}"
                   if pool else ""))
        commands = (f"python -m training.train --config {row['config']} --no-progress   # -> {a.run}/\n"
                    f"python -m training.make_demo --run {a.run}"
                    + (f" --config {a.config}" if a.config else "")
                    + (f" --vocabulary-eval {a.vocabulary_eval}" if a.vocabulary_eval else "")
                    + "   # -> models/casseg_demo.safetensors + this card")
    else:
        why = (f"chosen with `--variant {name}`" if a.variant else "the variant with the highest validation mIoU")
        others = ", ".join(f"{v} {100 * r['miou']:.1f}" for v, r in rows.items())
        what = (f"The `{name}` variant ({why}; ablation mIoU: {others}) of the context-scenes ablation "
                f"(`training/configs/{name}_context_scenes.yaml`)")
        commands = ("python -m training.ablate --preset context-scenes     # trains + evaluates the 5 variants -> out/ablation/\n"
                    f"python -m training.make_demo{f' --variant {name}' if a.variant else ''}"
                    "   # -> models/casseg_demo.safetensors + this card")
    card = f"""# casseg_demo.safetensors — model card

**What it is.** {what}:
ContextSegmentor with a `{mc.backbone}` Swin backbone (random init, no pretraining), decoder width {mc.decoder_dim},
output stride {mc.output_stride}, fusion={mc.fusion}, graph={mc.graph}{graph_text}, contrastive loss={mc.contrastive};
{row['params_m']} M parameters, {size_mb:.1f} MB safetensors (sha256 `{sha[:16]}…`). Weights, model config and
the 9-class vocabulary (names, `local` all-MiniLM-L6-v2 text embeddings, palette) are in the one file:
`casseg_ros.model.checkpoint.load_checkpoint("models/casseg_demo.safetensors")`.

**Classes.** {", ".join(model.class_names)}.

**Data.** `training.datasets.context_scenes.ContextScenes` — procedural street/harbour scenes, {cfg.data.height}×{cfg.data.width},
train seed {cfg.data.seed} ({cfg.data.num_train} scenes available, {row['steps']} steps × batch {cfg.optim.batch_size} =
{row['steps'] * cfg.optim.batch_size} samples seen), validation = {cfg.data.num_val} scenes from a disjoint seed stream.
Cars and boats are drawn with the identical appearance model (same blob, same shadow); only the scene
(road vs water) tells them apart.

**Training.** Adam, lr {cfg.optim.lr:g}, constant schedule, batch {cfg.optim.batch_size}, {loss_text},
random scale {tuple(cfg.data.scale_range)}, crop, horizontal flip, photometric jitter;
CPU, {res['hardware']['torch_threads']} threads, shared 2-core machine.

**Exact commands.**

```bash
{commands}
python -m training.evaluate --checkpoint models/casseg_demo.safetensors \\
    --config {row.get("config", f"training/configs/{name}_context_scenes.yaml")} --out out/demo_eval
```

**Metrics** (validation, {cfg.data.num_val} scenes, native {cfg.data.height}×{cfg.data.width}):
mIoU **{100 * row['miou']:.1f}**, instance mAP (COCOeval segm over connected components of car/boat/person)
**{100 * row['map']:.1f}**{f", baseline mIoU {100 * base['miou']:.1f}" if base and name != "baseline" else ""};
CPU latency {row['latency']['median_ms']:.1f} ms median (batch 1, {res['latency_input_hw'][0]}×{res['latency_input_hw'][1]}, uint8 → class map).

| class | IoU (%) |
|---|---:|
{iou_lines}

{a.note + chr(10) + chr(10) if a.note else ""}{vocabulary_paragraph(a.vocabulary_eval) + chr(10) + chr(10) if a.vocabulary_eval else ""}**Limits.** Trained only on synthetic scenes: it is a demo of the pipeline (node, exports, scene graph) and of
the context effect, **not** a model for real camera images. Tiny backbone, few hundred steps; small classes
(people are a few dozen pixels) are poorly segmented. Run it at {cfg.data.height}×{cfg.data.width} (or the same aspect) for the numbers
above. For real data train `training/configs/full_cityscapes.yaml` (see `training/README.md`).
"""
    atomic_write_text(os.path.join(a.out, "MODEL_CARD.md"), card)
    print(f"wrote {dst} ({size_mb:.2f} MB, variant {name}, mIoU {100 * row['miou']:.1f}) and MODEL_CARD.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
