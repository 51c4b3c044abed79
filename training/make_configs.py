"""Regenerate ``training/configs/{variant}_{dataset}.yaml`` (the 5 ablation variants x 6 datasets) and
``training/configs/long_range/{variant}.yaml`` (the graph ablation's 7 variants on the long-range
context scenes: the baseline and {classes, regions} x {spatial, semantic, both}).

    python -m training.make_configs

The paper's settings are the defaults of the Cityscapes / COCO / ADE20K / BDD100K / Mapillary
Vistas configs: Adam, lr 1e-4, global batch 16 (4 GPUs x 4), CE + 0.1 * contrastive (temperature
0.07), Swin-T backbone initialised from ImageNet weights in a local safetensors file (no downloads
happen anywhere in this project). Crop sizes and step counts the paper does not give are the
usual ones for each dataset (ADE20K 512x512 / 160k steps, BDD100K and Vistas 512x1024 like
Cityscapes; Vistas images resized to a 2048-pixel long side first, 300k steps).
The context-scenes configs are sized for a 2-core CPU (swin_nano, 96x192, batch 8); so are the
long-range ones (swin_nano, 64x672, output stride 8, batch 4, 300 steps, one thread: two runs share the cores).
"""
from __future__ import annotations

import os

import yaml

from casseg_ros.fileio import atomic_write_text

# The paper's ablation: its graph is the class graph with spatial edges (pinned, so these configs
# keep reproducing training/README.md's tables now that the model's default is region nodes).
CLASS_GRAPH = dict(graph_nodes="classes", graph_edges="spatial")
VARIANTS = {
    "baseline": dict(fusion=False, graph=False, contrastive=False),
    "fusion": dict(fusion=True, graph=False, contrastive=False),
    "graph": dict(fusion=False, graph=True, contrastive=False, **CLASS_GRAPH),
    "contrastive": dict(fusion=False, graph=False, contrastive=True),
    "full": dict(fusion=True, graph=True, contrastive=True, **CLASS_GRAPH),
}

PAPER_OPTIM = dict(name="adam", lr=1.0e-4, weight_decay=0.0, batch_size=16, schedule="constant", warmup_steps=0,
                   grad_clip=0.0)
LOSS = dict(contrastive_weight=0.1, temperature=0.07)
SWIN_T_WEIGHTS = "models/pretrained/swin_tiny_patch4_window7_224.safetensors"


def paper_dataset(name: str, root: str, crop: list[int], steps: int, checkpoint_every: int, eval_every: int,
                  base_size: int = 0, eval_size: list[int] | None = None, **data_extra) -> dict:
    """A reproduction setup: Swin-T from ImageNet weights built at the crop size, the paper's
    optimiser, scale 0.5-2 / crop / flip / photometric augmentation, 8 loader workers."""
    return dict(
        model=dict(backbone="swin_tiny", backbone_weights=SWIN_T_WEIGHTS, img_size=list(crop), drop_path_rate=0.3,
                   decoder_dim=128, output_stride=4),
        data=dict(name=name, root=root, **data_extra, crop_size=list(crop), base_size=base_size,
                  scale_range=[0.5, 2.0], hflip=True, photometric=True, eval_size=eval_size, num_workers=8),
        optim=PAPER_OPTIM,
        train=dict(steps=steps, checkpoint_every=checkpoint_every, eval_every=eval_every, log_every=50, seed=0,
                   amp=True, device="auto"),
    )


DATASETS = {
    "cityscapes": paper_dataset("cityscapes", "datasets/cityscapes", [512, 1024], 80000, 4000, 8000),
    "coco": paper_dataset("coco", "datasets/coco", [512, 512], 90000, 5000, 10000, base_size=640, coco_year=2017),
    "ade20k": paper_dataset("ade20k", "datasets/ADEChallengeData2016", [512, 512], 160000, 8000, 16000),
    "bdd100k": paper_dataset("bdd100k", "datasets/bdd100k", [512, 1024], 80000, 4000, 8000),
    # evaluated at 1536x2048 (most Vistas images are 4:3; the class map is resized back to the image)
    "mapillary_vistas": paper_dataset("mapillary_vistas", "datasets/mapillary_vistas", [512, 1024], 300000, 10000,
                                      30000, base_size=2048, eval_size=[1536, 2048], vistas_version="v1.2"),
    "context_scenes": dict(
        model=dict(backbone="swin_nano", img_size=[96, 192], drop_path_rate=0.0, decoder_dim=64, output_stride=4),
        data=dict(name="context_scenes", num_train=4000, num_val=200, height=96, width=192, seed=0,
                  crop_size=[96, 192], base_size=0, scale_range=[0.75, 1.5], hflip=True, photometric=True,
                  eval_size=None, num_workers=1),
        optim=dict(PAPER_OPTIM, lr=1.0e-3, batch_size=8),
        train=dict(steps=200, checkpoint_every=100, eval_every=0, log_every=10, seed=0, amp=True, device="auto",
                   num_threads=2),
    ),
}


# The graph ablation (training/graph_ablation.py): graph only, fusion and contrastive off in every
# variant, so the differences are the graph's.
GRAPH_VARIANTS = {
    "baseline": dict(graph=False),
    **{f"{nodes}-{edges}": dict(graph=True, graph_nodes=nodes, graph_edges=edges)
       for nodes in ("classes", "regions") for edges in ("spatial", "semantic", "both")},
}
LONG_RANGE = dict(
    # decoder_norm pixel: GroupNorm's image-wide statistics let the baseline read the far cue (94 % of the
    # vehicle pixels follow it; training/results/long_range_groupnorm.md), so no variant gets them
    model=dict(backbone="swin_nano", img_size=[64, 672], drop_path_rate=0.0, decoder_dim=64, output_stride=8,
               decoder_norm="pixel",
               fusion=False, contrastive=False, graph_layers=2, graph_regions=8, graph_region_iterations=3,
               graph_topk=4),
    # no random scale: a zoom-out would bring the cue into the backbone's windows (long_range_scenes.py)
    data=dict(name="context_scenes", layout="long_range", num_train=4000, num_val=100, height=64, width=672,
              seed=0, crop_size=[64, 672], base_size=0, scale_range=[1.0, 1.0], hflip=True, photometric=True,
              eval_size=None, num_workers=0),
    optim=dict(PAPER_OPTIM, lr=1.0e-3, batch_size=4),
    train=dict(steps=300, checkpoint_every=100, eval_every=0, log_every=20, seed=0, amp=True, device="auto",
               num_threads=1),
)


# Names training (training/configs/names/): the demo model (`full` on context scenes) trained from the
# start with each class scored against a name drawn per step from the curated pool, every name embedded
# as the mean over PROMPT_TEMPLATES; the control is the same run on the trained names only.
PROMPT_TEMPLATES = ["a photo of a {name}.", "a picture of the {name}.", "an image of {name}.",
                    "a rendering of a {name}.", "{name}"]
NAME_POOL = "training/paraphrases/context_scenes_curated.yaml"
# The graph of the demo model: region nodes with spatial edges, the graph ablation's variant with the
# tightest significant gain (training/results/graph_ablation.md: +13.2 [+7.7, +18.7] mIoU).
NAMES_MODEL = dict(graph_nodes="regions", graph_edges="spatial", graph_regions=8, graph_region_iterations=3)
NAMES_TRAIN = dict(steps=1600, checkpoint_every=200, num_threads=1, prompt_templates=PROMPT_TEMPLATES)


def write_config(path: str, cfg: dict, what: str) -> None:
    atomic_write_text(path, f"# generated by `python -m training.make_configs` -- {what}\n"
                      + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))


def main() -> None:
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    os.makedirs(here, exist_ok=True)
    for dname, d in DATASETS.items():
        for vname, switches in VARIANTS.items():
            name = f"{vname}_{dname}"
            cfg = {
                "name": name,
                "model": dict(d["model"], **switches),
                "data": d["data"],
                "optim": d["optim"],
                "loss": LOSS,
                "train": dict(d["train"], out_dir=f"out/{name}"),
            }
            write_config(os.path.join(here, f"{name}.yaml"), cfg, f"variant {vname!r} on {dname}")
    long_range = os.path.join(here, "long_range")
    os.makedirs(long_range, exist_ok=True)
    for vname, switches in GRAPH_VARIANTS.items():
        cfg = {"name": f"long_range_{vname}", "model": dict(LONG_RANGE["model"], **switches),
               "data": LONG_RANGE["data"], "optim": LONG_RANGE["optim"], "loss": LOSS,
               "train": dict(LONG_RANGE["train"], out_dir=f"out/long_range/{vname}")}
        write_config(os.path.join(long_range, f"{vname}.yaml"), cfg, f"graph variant {vname!r} on long-range context scenes")
    names = os.path.join(here, "names")
    os.makedirs(names, exist_ok=True)
    scenes = DATASETS["context_scenes"]
    for vname, pool in (("control", {}), ("names", {"paraphrases": NAME_POOL})):
        cfg = {"name": f"names_{vname}", "model": {**scenes["model"], **VARIANTS["full"], **NAMES_MODEL},
               "data": scenes["data"], "optim": scenes["optim"], "loss": LOSS,
               "train": dict(scenes["train"], **NAMES_TRAIN, **pool, out_dir=f"out/names/{vname}")}
        write_config(os.path.join(names, f"{vname}.yaml"), cfg,
                     "names training: " + ("trained names only (the control)" if not pool else "names drawn per step"))
    print(f"wrote {len(DATASETS) * len(VARIANTS)} configs to {here}, {len(GRAPH_VARIANTS)} to {long_range} and 2 to {names}")


if __name__ == "__main__":
    main()
