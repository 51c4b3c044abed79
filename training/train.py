"""Train a ContextSegmentor from a YAML config (single process, or DDP under torchrun).

    python -m training.train --config training/configs/full_cityscapes.yaml
    torchrun --nproc_per_node=4 -m training.train --config training/configs/full_cityscapes.yaml
    python -m training.train --config ... --override train.steps=200 data.num_train=500

Outputs in ``train.out_dir``: ``config.yaml``, ``vocabulary.json``, ``tb/`` (TensorBoard),
``model_step<N>.safetensors`` + ``train_state.pt`` (+ ``rng_rank<r>.pt``) every
``checkpoint_every`` steps, ``model_final.safetensors``, ``model_best.safetensors`` (with
``eval_every``) and ``metrics.json``. A run restarted with the same out_dir resumes from
``train_state.pt`` (``--no-resume`` starts over); on CPU the resumed run is bit-identical to an
uninterrupted one (data order, augmentation, dropout/drop-path and optimizer state are restored).

``data.crop_size`` etc. are per-sample; ``optim.batch_size`` is the *global* batch, split evenly
over the torchrun processes.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from casseg_ros.fileio import atomic_write_bytes

from .config import ExperimentConfig, load_config, save_config

STATE_FILE = "train_state.pt"


def atomic_torch_save(obj, path: str) -> None:
    """torch.save through the project's atomic writer: a crash never leaves a half-written state."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def setup_distributed(device_type: str) -> tuple[int, int, int]:
    world, rank, local = dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return world, rank, local


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict:
    """All global RNG states, as tensors / lists only (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = st["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data
class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler that can start part-way through an epoch (for exact resume)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.start_index = 0

    def set_start(self, start_index: int) -> None:
        self.start_index = int(start_index)

    def __iter__(self):
        idx = list(super().__iter__())
        return iter(idx[self.start_index:])

    def __len__(self):
        return self.num_samples - self.start_index


def vocabulary_cache_path(class_names: list[str], provider: str, cache_dir: str) -> str:
    import hashlib

    key = hashlib.sha1(("\n".join(class_names) + "|" + provider).encode()).hexdigest()[:12]
    return os.path.join(cache_dir, f"vocab_{provider}_{key}.npz")


def vocabulary_for(class_names: list[str], provider: str, cache_dir: str):
    """``casseg_ros.text.build_vocabulary(names, provider)``, cached as .npz in ``cache_dir``
    (computed once: every experiment on the same classes then uses bit-identical embeddings)."""
    from casseg_ros.text import Vocabulary, build_vocabulary

    path = vocabulary_cache_path(class_names, provider, cache_dir)
    if os.path.isfile(path):
        z = np.load(path, allow_pickle=False)
        if list(z["names"]) == list(class_names):
            desc = list(z["descriptions"]) if "descriptions" in z.files else None
            return Vocabulary(names=list(class_names), embeddings=z["embeddings"].astype(np.float32),
                              descriptions=desc, provider=str(z["provider"]), palette=z["palette"].astype(np.uint8))
    vocab = build_vocabulary(list(class_names), provider=provider)
    os.makedirs(cache_dir, exist_ok=True)
    extra = {"descriptions": np.asarray(vocab.descriptions)} if getattr(vocab, "descriptions", None) else {}
    buffer = io.BytesIO()
    np.savez(buffer, names=np.asarray(class_names), embeddings=np.asarray(vocab.embeddings, np.float32),
             provider=np.asarray(vocab.provider), palette=np.asarray(vocab.palette, np.uint8), **extra)
    atomic_write_bytes(path, buffer.getvalue())
    return vocab


def build_model(cfg: ExperimentConfig, vocab, seed: int):
    """Model with a seeded init (the vocabulary is built beforehand: its provider may use RNG)."""
    from casseg_ros.model import ContextSegmentor, ModelConfig

    seed_everything(seed)
    return ContextSegmentor(ModelConfig.from_dict(dict(cfg.model)), vocab)


def lr_lambda(cfg: ExperimentConfig):
    o, steps = cfg.optim, cfg.train.steps

    def f(step: int) -> float:
        w = 1.0
        if o.warmup_steps and step < o.warmup_steps:
            w = (step + 1) / o.warmup_steps
        if o.schedule == "poly":
            w *= (1 - min(step, steps - 1) / steps) ** 0.9
        elif o.schedule != "constant":
            raise ValueError(f"unknown schedule {o.schedule!r}")
        return w

    return f


# ----------------------------------------------------------------------------- main loop
def train(cfg: ExperimentConfig, resume: bool = True, progress: bool = True) -> dict:
    from casseg_ros.model import IMAGENET_MEAN, IMAGENET_STD, LossConfig, SegmentationLoss
    from casseg_ros.model.checkpoint import save_checkpoint

    from .datasets import build_dataset
    from .evaluate import evaluate_model
    from .transforms import TrainDataset

    t_cfg, o_cfg = cfg.train, cfg.optim
    want_cuda = t_cfg.device == "cuda" or (t_cfg.device == "auto" and torch.cuda.is_available())
    world, rank, local = setup_distributed("cuda" if want_cuda else "cpu")
    device = torch.device(f"cuda:{local}" if want_cuda else "cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    if t_cfg.num_threads:
        torch.set_num_threads(t_cfg.num_threads)
    if t_cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    out = t_cfg.out_dir
    is_main = rank == 0
    if is_main:
        os.makedirs(out, exist_ok=True)
        save_config(cfg, os.path.join(out, "config.yaml"))
    barrier()

    train_set = build_dataset(cfg.data, "train")
    class_names = list(train_set.class_names)
    cache_dir = t_cfg.vocab_cache or os.path.join(out, "vocab_cache")
    if is_main:  # rank 0 computes (and caches) the text embeddings, the others read the cache
        vocab = vocabulary_for(class_names, t_cfg.vocabulary_provider, cache_dir)
    barrier()
    if not is_main:
        vocab = vocabulary_for(class_names, t_cfg.vocabulary_provider, cache_dir)
    # identical init on every rank (DDP also broadcasts rank 0's weights)
    model = build_model(cfg, vocab, t_cfg.seed)
    if is_main:
        with open(os.path.join(out, "vocabulary.json"), "w") as f:
            json.dump({"names": class_names, "provider": model.vocabulary.provider}, f, indent=1)
    model.to(device)
    loss_fn = SegmentationLoss(LossConfig(contrastive_weight=cfg.loss.contrastive_weight,
                                          temperature=cfg.loss.temperature),
                               contrastive=bool(model.config.contrastive))
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o_cfg.name]
    optimizer = opt_cls(params, lr=o_cfg.lr, weight_decay=o_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    use_amp = bool(t_cfg.amp and device.type == "cuda")
    amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    if o_cfg.batch_size % world:
        raise ValueError(f"optim.batch_size={o_cfg.batch_size} is not divisible by WORLD_SIZE={world}")
    per_rank = o_cfg.batch_size // world
    ds = TrainDataset(train_set, cfg.data, t_cfg.seed, IMAGENET_MEAN, IMAGENET_STD)
    sampler = ResumableDistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=t_cfg.seed,
                                          drop_last=True)
    batches_per_epoch = len(sampler) // per_rank
    if batches_per_epoch == 0:
        raise ValueError(f"dataset of {len(ds)} samples is smaller than one global batch {o_cfg.batch_size}")

    step, epoch, batch_in_epoch, best = 0, 0, 0, -1.0
    state_path = os.path.join(out, STATE_FILE)
    if resume and os.path.isfile(state_path):
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        step, epoch, best = int(st["step"]), int(st["epoch"]), float(st["best"])
        samples_in_epoch = int(st["samples_in_epoch"])
        if samples_in_epoch % o_cfg.batch_size:
            raise ValueError("saved position is not a whole number of global batches")
        batch_in_epoch = samples_in_epoch // o_cfg.batch_size
        rng_path = os.path.join(out, f"rng_rank{rank}.pt")
        if int(st["world_size"]) == world and os.path.isfile(rng_path):
            set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=True))
        else:
            print(f"[rank {rank}] world size changed or no RNG state: reseeding (resume is not bit-exact)")
            seed_everything(t_cfg.seed * 1000 + rank + step)
        if is_main:
            print(f"resumed from {state_path} at step {step} (epoch {epoch}, batch {batch_in_epoch})")
    else:
        seed_everything(t_cfg.seed * 1000 + rank)  # per-rank streams for drop-path / sampling

    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=t_cfg.find_unused_parameters)

    writer = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(out, "tb"), purge_step=step)

    def make_loader():
        sampler.set_epoch(epoch)
        sampler.set_start(batch_in_epoch * per_rank)
        ds.set_epoch(epoch)
        return iter(DataLoader(ds, batch_size=per_rank, sampler=sampler, num_workers=cfg.data.num_workers,
                               drop_last=True, pin_memory=device.type == "cuda",
                               generator=torch.Generator().manual_seed(t_cfg.seed + epoch),
                               persistent_workers=False))

    def save_state():
        """Training state (rank 0: weights/optimizer/position; every rank: its RNG streams)."""
        barrier()
        rng = rng_state()
        atomic_torch_save(rng, os.path.join(out, f"rng_rank{rank}.pt"))
        if is_main:
            st = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                  "epoch": epoch, "samples_in_epoch": batch_in_epoch * o_cfg.batch_size, "best": best,
                  "world_size": world}
            atomic_torch_save(st, state_path)
            save_checkpoint(os.path.join(out, f"model_step{step}.safetensors"), model,
                            extra={"step": step, "experiment": cfg.name})
        barrier()

    val_set = None
    metrics: dict = {}
    if step < t_cfg.steps:
        loader = make_loader()
        pbar = None
        if is_main and progress:
            from tqdm import tqdm

            pbar = tqdm(total=t_cfg.steps, initial=step, desc=cfg.name, dynamic_ncols=True)
        model.train()
        t0, seen = time.time(), 0
        while step < t_cfg.steps:
            if batch_in_epoch >= batches_per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
                loader = make_loader()
            images, labels = next(loader)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            ctx = torch.autocast("cuda", dtype=amp_dtype) if use_amp else nullcontext()
            with ctx:
                output = ddp_model(images)
                losses = loss_fn(output, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            if o_cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, o_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            batch_in_epoch += 1
            seen += images.shape[0] * world
            if is_main:
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{losses['loss'].item():.3f}")
                if step % t_cfg.log_every == 0 or step == t_cfg.steps:
                    for k, v in losses.items():
                        writer.add_scalar(f"train/{k}", float(v.detach()), step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("train/images_per_s", seen / max(time.time() - t0, 1e-9), step)
            if t_cfg.eval_every and step % t_cfg.eval_every == 0 and step < t_cfg.steps:
                if is_main:
                    val_set = val_set or build_dataset(cfg.data, "val")
                    r = evaluate_model(model, val_set, device, cfg.data.eval_size, compute_map=False)
                    writer.add_scalar("val/miou", r.miou, step)
                    if r.miou > best:
                        best = r.miou
                        save_checkpoint(os.path.join(out, "model_best.safetensors"), model,
                                        extra={"step": step, "val_miou": r.miou, "experiment": cfg.name})
                    model.train()
                barrier()
            if t_cfg.checkpoint_every and step % t_cfg.checkpoint_every == 0:
                save_state()
        if pbar is not None:
            pbar.close()

    if is_main:
        model.eval()
        val_set = val_set or build_dataset(cfg.data, "val")
        r = evaluate_model(model, val_set, device, cfg.data.eval_size, out_dir=os.path.join(out, "eval_val"))
        metrics = {"experiment": cfg.name, "step": step, "val_miou": r.miou, "val_map": r.map,
                   "per_class_iou": r.per_class_iou}
        writer.add_scalar("val/miou", r.miou, step)
        if r.map is not None:
            writer.add_scalar("val/map", r.map, step)
        save_checkpoint(os.path.join(out, "model_final.safetensors"), model,
                        extra={"step": step, "val_miou": r.miou, "val_map": r.map, "experiment": cfg.name})
        if r.miou > best and t_cfg.eval_every:
            save_checkpoint(os.path.join(out, "model_best.safetensors"), model,
                            extra={"step": step, "val_miou": r.miou, "experiment": cfg.name})
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        writer.close()
        print(f"[{cfg.name}] step {step}: val mIoU {100 * r.miou:.2f}"
              + (f", mAP {100 * r.map:.2f}" if r.map is not None else ""))
    barrier()
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return metrics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--override", nargs="*", default=[], help="section.key=value (value parsed as YAML)")
    ap.add_argument("--no-resume", action="store_true", help="ignore an existing train_state.pt")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    cfg = load_config(a.config, a.override)
    train(cfg, resume=not a.no_resume, progress=not a.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
