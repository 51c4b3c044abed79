"""Training configuration: dataclasses loaded from YAML.

Top-level keys: ``model`` (fields of :class:`casseg_ros.model.ModelConfig`, passed through),
``data``, ``optim``, ``loss``, ``train``, ``eval``. Unknown keys are an error, so typos fail loudly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from casseg_ros.fileio import atomic_write_text


@dataclass
class DataConfig:
    name: str = "context_scenes"        # cityscapes | coco | ade20k | bdd100k | mapillary_vistas | context_scenes
    root: str = ""                     # dataset root (every dataset but context_scenes)
    coco_year: int = 2017
    vistas_version: str = "v1.2"       # mapillary_vistas: v1.2 (66 labels) | v2.0 (124 labels)
    # context_scenes only
    layout: str = "standard"           # standard | long_range (the cue beyond a Swin window: long_range_scenes.py)
    num_train: int = 2000
    num_val: int = 200
    height: int = 128
    width: int = 256
    seed: int = 0
    # augmentation / batching
    crop_size: tuple[int, int] = (128, 256)   # (H, W) training crop
    base_size: int = 0                 # resize the long side to this before scaling (0 = keep)
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True                 # horizontal only: a vertical flip would put sky under road
    photometric: bool = True
    eval_size: tuple[int, int] | None = None   # (H, W) network input at eval; None = native size
    num_workers: int = 2


@dataclass
class OptimConfig:
    name: str = "adam"                 # adam | adamw
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 16               # global batch (split over the torchrun processes)
    schedule: str = "constant"         # constant | poly
    warmup_steps: int = 0
    grad_clip: float = 0.0


@dataclass
class LossConfigYAML:
    contrastive_weight: float = 0.1    # lambda
    temperature: float = 0.07


@dataclass
class TrainConfig:
    steps: int = 80_000
    checkpoint_every: int = 2000
    log_every: int = 20
    eval_every: int = 0                # 0 = only at the end
    out_dir: str = "out/train"
    seed: int = 0
    amp: bool = True                   # only ever used on CUDA
    device: str = "auto"               # auto | cpu | cuda
    num_threads: int = 0               # torch CPU threads (0 = leave)
    deterministic: bool = False
    find_unused_parameters: bool = True
    vocabulary_provider: str = "local"
    vocab_cache: str = "out/vocab_cache"  # text embeddings are computed once per class list + provider
    paraphrases: str = ""              # YAML {class: [other names]}: each step scores every class against one
                                       # of its names (the trained one included), drawn per step; "" = off
    trained_name_share: float | None = None  # with paraphrases: how often the trained name is drawn (the rest
                                       # uniform over the paraphrases); None = uniform over all of a class's names
    prompt_templates: tuple[str, ...] = ()  # "{name}" templates: every name (trained or drawn) embedded as
                                       # the mean over them (prompt ensembling); () = the one default template
    init_checkpoint: str = ""          # start from these weights (a fine-tune) instead of the seeded init


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfigYAML = field(default_factory=LossConfigYAML)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, values: dict | None):
    values = dict(values or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    for k, v in list(values.items()):
        if isinstance(v, list):
            values[k] = tuple(v)
    return cls(**values)


def config_from_dict(d: dict) -> ExperimentConfig:
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(ExperimentConfig)}
    if unknown:
        raise ValueError(f"unknown top-level config keys: {sorted(unknown)}")
    return ExperimentConfig(
        name=d.get("name", "experiment"),
        model=dict(d.get("model") or {}),
        data=_build(DataConfig, d.get("data")),
        optim=_build(OptimConfig, d.get("optim")),
        loss=_build(LossConfigYAML, d.get("loss")),
        train=_build(TrainConfig, d.get("train")),
    )


def _set_dotted(d: dict, key: str, value: str) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = yaml.safe_load(value)


def load_config(path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config; ``overrides`` are ``section.key=value`` strings (value parsed as YAML)."""
    d = yaml.safe_load(Path(path).read_text()) or {}
    for ov in overrides or []:
        if "=" not in ov:
            raise ValueError(f"override must be key=value: {ov!r}")
        k, v = ov.split("=", 1)
        _set_dotted(d, k, v)
    return config_from_dict(d)


def save_config(cfg: ExperimentConfig, path: str) -> None:
    def plain(x):
        if isinstance(x, tuple):
            return [plain(i) for i in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    atomic_write_text(path, yaml.safe_dump(plain(cfg.to_dict()), sort_keys=False))
