"""Train a ContextSegmentor from a YAML config (single process, or DDP under torchrun).

    python -m training.train --config training/configs/full_cityscapes.yaml
    torchrun --nproc_per_node=4 -m training.train --config training/configs/full_cityscapes.yaml
    python -m training.train --config ... --override train.steps=200 data.num_train=500

Outputs in ``train.out_dir``: ``config.yaml``, ``vocabulary.json``, ``tb/`` (TensorBoard),
``model_step<N>.safetensors`` + ``train_state.pt`` (+ ``rng_rank<r>.pt``) every
``checkpoint_every`` steps, ``model_final.safetensors``, ``model_best.safetensors`` (with
``eval_every``) and ``metrics.json``; every file but TensorBoard's event log (an append-only
stream) is written atomically through ``casseg_ros.fileio``. A run restarted with the same
out_dir resumes from ``train_state.pt`` (``--no-resume`` starts over); on CPU the resumed run is
bit-identical to an uninterrupted one (data order, augmentation, dropout/drop-path and optimizer
state are restored).

``data.crop_size`` etc. are per-sample; ``optim.batch_size`` is the *global* batch, split evenly
over the torchrun processes.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from casseg_ros.fileio import atomic_write_bytes, atomic_write_text
from casseg_ros.model import IMAGENET_MEAN, IMAGENET_STD, ContextSegmentor, LossConfig, ModelConfig, SegmentationLoss
from casseg_ros.model.checkpoint import load_checkpoint, save_checkpoint
from casseg_ros.text import Vocabulary, VocabularyError, build_vocabulary

from .config import ExperimentConfig, load_config, save_config
from .datasets import build_dataset
from .evaluate import EvalResult, evaluate_model
from .transforms import TrainDataset

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


# ----------------------------------------------------------------------------- model
def vocabulary_cache_path(class_names: list[str], provider: str, cache_dir: str, templates=()) -> str:
    text = "\n".join(class_names) + "|" + provider + ("|" + "\n".join(templates) if templates else "")
    key = hashlib.sha1(text.encode()).hexdigest()[:12]
    return os.path.join(cache_dir, f"vocab_{provider}_{key}.safetensors")


def vocabulary_for(class_names: list[str], provider: str, cache_dir: str, templates=()) -> Vocabulary:
    """``casseg_ros.text.build_vocabulary(names, provider, templates=...)``, cached as a vocabulary
    file in ``cache_dir`` (computed once: every experiment on the same classes then uses
    bit-identical embeddings)."""
    path = vocabulary_cache_path(class_names, provider, cache_dir, templates)
    if os.path.isfile(path):
        try:
            cached = Vocabulary.load(path)
        except VocabularyError as exc:
            print(f"ignoring unreadable vocabulary cache: {exc}")
        else:
            if cached.names == list(class_names):
                return cached
    vocab = build_vocabulary(list(class_names), provider=provider, templates=list(templates) or None)
    vocab.save(path)
    return vocab


class ParaphraseSampler:
    """Class-name paraphrases for training (``train.paraphrases``): at every step each class is
    scored against one of its names — the trained name or a paraphrase — drawn with a per-step seed
    (a resume draws the same names), so the text projection learns a region of the language space
    per class instead of nine points. The class ids and labels do not change. ``templates``: embed
    the other names the way the vocabulary's were (``train.prompt_templates``). ``trained_share``:
    the chance of the trained name (``train.trained_name_share``; None = uniform over all names):
    drawn once in six, the trained names lost 1.4 mIoU against training on them alone."""

    def __init__(self, vocab: Vocabulary, paraphrase_file: str, seed: int, templates=(),
                 trained_share: float | None = None) -> None:
        if trained_share is not None and not 0.0 <= trained_share <= 1.0:
            raise ValueError(f"trained_name_share must be in [0, 1] or unset, got {trained_share}")
        table = yaml.safe_load(Path(paraphrase_file).read_text()) or {}
        unknown = sorted(set(table) - set(vocab.names))
        if unknown:
            raise ValueError(f"{paraphrase_file}: paraphrases for classes not in the vocabulary: {unknown}")
        self.names = [[name, *[str(p) for p in table.get(name, [])]] for name in vocab.names]
        # embedded once, with the vocabulary's provider and prompts (one build_vocabulary call: names unique)
        extra = [n for options in self.names for n in options[1:]]
        bank = dict(zip(vocab.names, vocab.embeddings))
        if extra:
            embedded = build_vocabulary(extra, vocab.provider, templates=list(templates) or None)
            bank.update(zip(extra, embedded.embeddings))
        self.options = [torch.from_numpy(np.stack([bank[n] for n in options])) for options in self.names]
        self.seed = int(seed)
        self.trained_share = trained_share

    def _pick(self, rng: np.random.Generator, count: int) -> int:
        """Index into a class's names (0 = the trained one)."""
        if self.trained_share is None or count == 1:
            return int(rng.integers(count))
        return 0 if rng.random() < self.trained_share else 1 + int(rng.integers(count - 1))

    def sample(self, step: int, device: torch.device) -> torch.Tensor:
        """(K,E) text embeddings for ``step``."""
        rng = np.random.default_rng([self.seed, int(step)])
        picks = [options[self._pick(rng, len(options))] for options in self.options]
        return torch.stack(picks).to(device)


def build_model(cfg: ExperimentConfig, vocab: Vocabulary, seed: int) -> ContextSegmentor:
    """Model with a seeded init (the vocabulary is built beforehand: its provider may use RNG)."""
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


# ----------------------------------------------------------------------------- run steps
@dataclass
class Placement:
    """Where this process trains: its rank among ``world`` processes and its device."""

    world: int
    rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Optimisation:
    loss_fn: SegmentationLoss
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: no autocast


@dataclass
class Position:
    """How far training got: what a resume restores."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float = -1.0


@dataclass
class Batches:
    dataset: TrainDataset
    sampler: ResumableDistributedSampler
    per_rank: int
    per_epoch: int


def place_process(cfg: ExperimentConfig) -> Placement:
    t_cfg = cfg.train
    want_cuda = t_cfg.device == "cuda" or (t_cfg.device == "auto" and torch.cuda.is_available())
    world, rank, local = setup_distributed("cuda" if want_cuda else "cpu")
    device = torch.device(f"cuda:{local}" if want_cuda else "cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    if t_cfg.num_threads:
        torch.set_num_threads(t_cfg.num_threads)
    if t_cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return Placement(world, rank, device)


def shared_vocabulary(class_names: list[str], cfg: ExperimentConfig, place: Placement) -> Vocabulary:
    """Rank 0 computes (and caches) the text embeddings, the others then read the cache."""
    t_cfg = cfg.train
    cache_dir = t_cfg.vocab_cache or os.path.join(t_cfg.out_dir, "vocab_cache")
    vocab = (vocabulary_for(class_names, t_cfg.vocabulary_provider, cache_dir, t_cfg.prompt_templates)
             if place.is_main else None)
    barrier()
    if vocab is None:
        vocab = vocabulary_for(class_names, t_cfg.vocabulary_provider, cache_dir, t_cfg.prompt_templates)
    return vocab


def build_optimisation(cfg: ExperimentConfig, model: ContextSegmentor, device: torch.device) -> Optimisation:
    o_cfg = cfg.optim
    loss_fn = SegmentationLoss(LossConfig(contrastive_weight=cfg.loss.contrastive_weight,
                                          temperature=cfg.loss.temperature),
                               contrastive=bool(model.config.contrastive))
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o_cfg.name]
    optimizer = opt_cls(params, lr=o_cfg.lr, weight_decay=o_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    use_amp = bool(cfg.train.amp and device.type == "cuda")
    amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return Optimisation(loss_fn, params, optimizer, scheduler, scaler, amp_dtype if use_amp else None)


def build_batches(cfg: ExperimentConfig, train_set, place: Placement) -> Batches:
    global_batch = cfg.optim.batch_size
    if global_batch % place.world:
        raise ValueError(f"optim.batch_size={global_batch} is not divisible by WORLD_SIZE={place.world}")
    per_rank = global_batch // place.world
    ds = TrainDataset(train_set, cfg.data, cfg.train.seed, IMAGENET_MEAN, IMAGENET_STD)
    sampler = ResumableDistributedSampler(ds, num_replicas=place.world, rank=place.rank, shuffle=True,
                                          seed=cfg.train.seed, drop_last=True)
    per_epoch = len(sampler) // per_rank
    if per_epoch == 0:
        raise ValueError(f"dataset of {len(ds)} samples is smaller than one global batch {global_batch}")
    return Batches(ds, sampler, per_rank, per_epoch)


def restore_position(cfg: ExperimentConfig, place: Placement, model: ContextSegmentor, opt: Optimisation,
                     resume: bool) -> Position:
    """The saved training state when resuming (RNG streams included), else a fresh start."""
    seed = cfg.train.seed
    state_path = os.path.join(cfg.train.out_dir, STATE_FILE)
    if not (resume and os.path.isfile(state_path)):
        seed_everything(seed * 1000 + place.rank)  # per-rank streams for drop-path / sampling
        return Position()
    st = torch.load(state_path, map_location="cpu", weights_only=True)
    model.load_state_dict(st["model"])
    opt.optimizer.load_state_dict(st["optimizer"])
    opt.scheduler.load_state_dict(st["scheduler"])
    opt.scaler.load_state_dict(st["scaler"])
    samples_in_epoch = int(st["samples_in_epoch"])
    if samples_in_epoch % cfg.optim.batch_size:
        raise ValueError("saved position is not a whole number of global batches")
    pos = Position(int(st["step"]), int(st["epoch"]), samples_in_epoch // cfg.optim.batch_size, float(st["best"]))
    rng_path = os.path.join(cfg.train.out_dir, f"rng_rank{place.rank}.pt")
    if int(st["world_size"]) == place.world and os.path.isfile(rng_path):
        set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=True))
    else:
        print(f"[rank {place.rank}] world size changed or no RNG state: reseeding (resume is not bit-exact)")
        seed_everything(seed * 1000 + place.rank + pos.step)
    if place.is_main:
        print(f"resumed from {state_path} at step {pos.step} (epoch {pos.epoch}, batch {pos.batch_in_epoch})")
    return pos


def checkpoint_extra(cfg: ExperimentConfig, **values) -> dict:
    """A checkpoint's extra metadata: ``values``, the experiment, the prompt templates its
    vocabulary was embedded with (new names must be embedded the same way) and the name pool."""
    extra = {**values, "experiment": cfg.name}
    if cfg.train.prompt_templates:
        extra["prompt_templates"] = list(cfg.train.prompt_templates)
    if cfg.train.paraphrases:
        extra["name_pool"] = cfg.train.paraphrases
    return extra


def save_position(cfg: ExperimentConfig, place: Placement, model: ContextSegmentor, opt: Optimisation,
                  pos: Position) -> None:
    """Training state (rank 0: weights/optimizer/position + a checkpoint; every rank: its RNG streams)."""
    out = cfg.train.out_dir
    barrier()
    atomic_torch_save(rng_state(), os.path.join(out, f"rng_rank{place.rank}.pt"))
    if place.is_main:
        st = {"model": model.state_dict(), "optimizer": opt.optimizer.state_dict(),
              "scheduler": opt.scheduler.state_dict(), "scaler": opt.scaler.state_dict(), "step": pos.step,
              "epoch": pos.epoch, "samples_in_epoch": pos.batch_in_epoch * cfg.optim.batch_size, "best": pos.best,
              "world_size": place.world}
        atomic_torch_save(st, os.path.join(out, STATE_FILE))
        save_checkpoint(os.path.join(out, f"model_step{pos.step}.safetensors"), model,
                        extra=checkpoint_extra(cfg, step=pos.step))
    barrier()


def epoch_batches(cfg: ExperimentConfig, batches: Batches, pos: Position, device: torch.device) -> Iterator:
    """The batches of ``pos.epoch`` from ``pos.batch_in_epoch`` on (a resume starts mid-epoch)."""
    batches.sampler.set_epoch(pos.epoch)
    batches.sampler.set_start(pos.batch_in_epoch * batches.per_rank)
    batches.dataset.set_epoch(pos.epoch)
    return iter(DataLoader(batches.dataset, batch_size=batches.per_rank, sampler=batches.sampler,
                           num_workers=cfg.data.num_workers, drop_last=True, pin_memory=device.type == "cuda",
                           generator=torch.Generator().manual_seed(cfg.train.seed + pos.epoch),
                           persistent_workers=False))


def train_step(net: torch.nn.Module, opt: Optimisation, images: torch.Tensor, labels: torch.Tensor,
               grad_clip: float, class_embeddings: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One optimiser step on one batch; returns the losses. ``class_embeddings``: (K,E) text
    embeddings to score against this step (paraphrase training); None = the model's vocabulary."""
    autocast = torch.autocast("cuda", dtype=opt.amp_dtype) if opt.amp_dtype is not None else nullcontext()
    with autocast:
        losses = opt.loss_fn(net(images, class_embeddings=class_embeddings), labels)
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(losses["loss"]).backward()
    if grad_clip:
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_(opt.params, grad_clip)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    return losses


def log_step(writer: SummaryWriter, losses: dict[str, torch.Tensor], opt: Optimisation, step: int,
             images_per_s: float) -> None:
    for k, v in losses.items():
        writer.add_scalar(f"train/{k}", float(v.detach()), step)
    writer.add_scalar("train/lr", opt.scheduler.get_last_lr()[0], step)
    writer.add_scalar("train/images_per_s", images_per_s, step)


def validate(cfg: ExperimentConfig, model: ContextSegmentor, val_set, device: torch.device, writer: SummaryWriter,
             pos: Position) -> None:
    """Periodic validation (rank 0): log mIoU, keep the best weights."""
    r = evaluate_model(model, val_set, device, cfg.data.eval_size, compute_map=False)
    writer.add_scalar("val/miou", r.miou, pos.step)
    if r.miou > pos.best:
        pos.best = r.miou
        save_checkpoint(os.path.join(cfg.train.out_dir, "model_best.safetensors"), model,
                        extra=checkpoint_extra(cfg, step=pos.step, val_miou=r.miou))
    model.train()


def finish(cfg: ExperimentConfig, model: ContextSegmentor, val_set, device: torch.device, writer: SummaryWriter,
           pos: Position) -> dict:
    """Final evaluation (rank 0): report, final (and best) checkpoint, metrics.json."""
    out = cfg.train.out_dir
    model.eval()
    r: EvalResult = evaluate_model(model, val_set, device, cfg.data.eval_size, out_dir=os.path.join(out, "eval_val"))
    metrics = {"experiment": cfg.name, "step": pos.step, "val_miou": r.miou, "val_map": r.map,
               "per_class_iou": r.per_class_iou}
    writer.add_scalar("val/miou", r.miou, pos.step)
    if r.map is not None:
        writer.add_scalar("val/map", r.map, pos.step)
    save_checkpoint(os.path.join(out, "model_final.safetensors"), model,
                    extra=checkpoint_extra(cfg, step=pos.step, val_miou=r.miou, val_map=r.map))
    if r.miou > pos.best and cfg.train.eval_every:
        save_checkpoint(os.path.join(out, "model_best.safetensors"), model,
                        extra=checkpoint_extra(cfg, step=pos.step, val_miou=r.miou))
    atomic_write_text(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=1))
    print(f"[{cfg.name}] step {pos.step}: val mIoU {100 * r.miou:.2f}"
          + (f", mAP {100 * r.map:.2f}" if r.map is not None else ""))
    return metrics


# ----------------------------------------------------------------------------- main loop
def train(cfg: ExperimentConfig, resume: bool = True, progress: bool = True) -> dict:
    t_cfg = cfg.train
    place = place_process(cfg)
    out = t_cfg.out_dir
    if place.is_main:
        save_config(cfg, os.path.join(out, "config.yaml"))
    barrier()
    train_set = build_dataset(cfg.data, "train")
    vocab = shared_vocabulary(list(train_set.class_names), cfg, place)
    model = build_model(cfg, vocab, t_cfg.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    if t_cfg.init_checkpoint:  # a fine-tune: the architecture and classes must be the config's
        model.load_state_dict(load_checkpoint(t_cfg.init_checkpoint).state_dict())
    paraphrases = (ParaphraseSampler(vocab, t_cfg.paraphrases, t_cfg.seed, t_cfg.prompt_templates,
                                     t_cfg.trained_name_share) if t_cfg.paraphrases else None)
    if place.is_main:
        atomic_write_text(os.path.join(out, "vocabulary.json"),
                          json.dumps({"names": vocab.names, "provider": vocab.provider}, indent=1))
    model.to(place.device)
    opt = build_optimisation(cfg, model, place.device)
    batches = build_batches(cfg, train_set, place)
    pos = restore_position(cfg, place, model, opt, resume)
    net = model
    if place.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[place.device.index] if place.device.type == "cuda" else None,
            find_unused_parameters=t_cfg.find_unused_parameters)
    writer = SummaryWriter(os.path.join(out, "tb"), purge_step=pos.step) if place.is_main else None
    pbar = tqdm(total=t_cfg.steps, initial=pos.step, desc=cfg.name, dynamic_ncols=True,
                disable=not (place.is_main and progress))
    val_set = None
    if pos.step < t_cfg.steps:
        loader = epoch_batches(cfg, batches, pos, place.device)
        model.train()
        t0, seen = time.time(), 0
        while pos.step < t_cfg.steps:
            if pos.batch_in_epoch >= batches.per_epoch:
                pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0
                loader = epoch_batches(cfg, batches, pos, place.device)
            images, labels = next(loader)
            classes = paraphrases.sample(pos.step, place.device) if paraphrases is not None else None
            losses = train_step(net, opt, images.to(place.device, non_blocking=True),
                                labels.to(place.device, non_blocking=True), cfg.optim.grad_clip, classes)
            pos.step += 1
            pos.batch_in_epoch += 1
            seen += images.shape[0] * place.world
            if place.is_main:
                pbar.update(1)
                pbar.set_postfix(loss=f"{losses['loss'].item():.3f}")
                if pos.step % t_cfg.log_every == 0 or pos.step == t_cfg.steps:
                    log_step(writer, losses, opt, pos.step, seen / max(time.time() - t0, 1e-9))
            if t_cfg.eval_every and pos.step % t_cfg.eval_every == 0 and pos.step < t_cfg.steps:
                if place.is_main:
                    val_set = val_set or build_dataset(cfg.data, "val")
                    validate(cfg, model, val_set, place.device, writer, pos)
                barrier()
            if t_cfg.checkpoint_every and pos.step % t_cfg.checkpoint_every == 0:
                save_position(cfg, place, model, opt, pos)
    pbar.close()
    metrics: dict = {}
    if place.is_main:
        metrics = finish(cfg, model, val_set or build_dataset(cfg.data, "val"), place.device, writer, pos)
        writer.close()
    barrier()
    if place.world > 1 and dist.is_initialized():
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
