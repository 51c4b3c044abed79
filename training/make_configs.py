"""Regenerate ``training/configs/{variant}_{dataset}.yaml`` (the 5 ablation variants x 6 datasets).

    python -m training.make_configs

The paper's settings are the defaults of the Cityscapes / COCO / ADE20K / BDD100K / Mapillary
Vistas configs: Adam, lr 1e-4, global batch 16 (4 GPUs x 4), CE + 0.1 * contrastive (temperature
0.07), Swin-T backbone initialised from ImageNet weights in a local safetensors file (no downloads
happen anywhere in this project). Crop sizes and step counts the paper does not give are the
usual ones for each dataset (ADE20K 512x512 / 160k steps, BDD100K and Vistas 512x1024 like
Cityscapes; Vistas images resized to a 2048-pixel long side first, 300k steps).
The context-scenes configs are sized for a 2-core CPU (swin_nano, 96x192, batch 8).
"""
from __future__ import annotations

import os

import yaml

from casseg_ros.fileio import atomic_write_text

VARIANTS = {
    "baseline": dict(fusion=False, graph=False, contrastive=False),
    "fusion": dict(fusion=True, graph=False, contrastive=False),
    "graph": dict(fusion=False, graph=True, contrastive=False),
    "contrastive": dict(fusion=False, graph=False, contrastive=True),
    "full": dict(fusion=True, graph=True, contrastive=True),
}

PAPER_OPTIM = dict(name="adam", lr=1.0e-4, weight_decay=0.0, batch_size=16, schedule="constant", warmup_steps=0,
                   grad_clip=0.0)
LOSS = dict(contrastive_weight=0.1, temperature=0.07)
SWIN_T_WEIGHTS = "models/pretrained/swin_tiny_patch4_window7_224.safetensors"

DATASETS = {
    "cityscapes": dict(
        model=dict(backbone="swin_tiny", backbone_weights=SWIN_T_WEIGHTS, img_size=[512, 1024], drop_path_rate=0.3,
                   decoder_dim=128, output_stride=4),
        data=dict(name="cityscapes", root="datasets/cityscapes", crop_size=[512, 1024], base_size=0,
                  scale_range=[0.5, 2.0], hflip=True, photometric=True, eval_size=None, num_workers=8),
        optim=PAPER_OPTIM,
        train=dict(steps=80000, checkpoint_every=4000, eval_every=8000, log_every=50, seed=0, amp=True,
                   device="auto"),
    ),
    "coco": dict(
        model=dict(backbone="swin_tiny", backbone_weights=SWIN_T_WEIGHTS, img_size=[512, 512], drop_path_rate=0.3,
                   decoder_dim=128, output_stride=4),
        data=dict(name="coco", root="datasets/coco", coco_year=2017, crop_size=[512, 512], base_size=640,
                  scale_range=[0.5, 2.0], hflip=True, photometric=True, eval_size=None, num_workers=8),
        optim=PAPER_OPTIM,
        train=dict(steps=90000, checkpoint_every=5000, eval_every=10000, log_every=50, seed=0, amp=True,
                   device="auto"),
    ),
    "ade20k": dict(
        model=dict(backbone="swin_tiny", backbone_weights=SWIN_T_WEIGHTS, img_size=[512, 512], drop_path_rate=0.3,
                   decoder_dim=128, output_stride=4),
        data=dict(name="ade20k", root="datasets/ADEChallengeData2016", crop_size=[512, 512], base_size=0,
                  scale_range=[0.5, 2.0], hflip=True, photometric=True, eval_size=None, num_workers=8),
        optim=PAPER_OPTIM,
        train=dict(steps=160000, checkpoint_every=8000, eval_every=16000, log_every=50, seed=0, amp=True,
                   device="auto"),
    ),
    "bdd100k": dict(
        model=dict(backbone="swin_tiny", backbone_weights=SWIN_T_WEIGHTS, img_size=[512, 1024], drop_path_rate=0.3,
                   decoder_dim=128, output_stride=4),
        data=dict(name="bdd100k", root="datasets/bdd100k", crop_size=[512, 1024], base_size=0,
                  scale_range=[0.5, 2.0], hflip=True, photometric=True, eval_size=None, num_workers=8),
        optim=PAPER_OPTIM,
        train=dict(steps=80000, checkpoint_every=4000, eval_every=8000, log_every=50, seed=0, amp=True,
                   device="auto"),
    ),
    "mapillary_vistas": dict(
        model=dict(backbone="swin_tiny", backbone_weights=SWIN_T_WEIGHTS, img_size=[512, 1024], drop_path_rate=0.3,
                   decoder_dim=128, output_stride=4),
        # eval at 1536x2048 (most Vistas images are 4:3; the class map is resized back to the image)
        data=dict(name="mapillary_vistas", root="datasets/mapillary_vistas", vistas_version="v1.2",
                  crop_size=[512, 1024], base_size=2048, scale_range=[0.5, 2.0], hflip=True, photometric=True,
                  eval_size=[1536, 2048], num_workers=8),
        optim=PAPER_OPTIM,
        train=dict(steps=300000, checkpoint_every=10000, eval_every=30000, log_every=50, seed=0, amp=True,
                   device="auto"),
    ),
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
            atomic_write_text(os.path.join(here, f"{name}.yaml"),
                              f"# generated by `python -m training.make_configs` -- variant {vname!r} on {dname}\n"
                              + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))
    print(f"wrote {len(DATASETS) * len(VARIANTS)} configs to {here}")


if __name__ == "__main__":
    main()
