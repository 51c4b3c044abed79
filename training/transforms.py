"""Augmentations for semantic segmentation, driven by an explicit numpy Generator.

Every random decision for sample ``i`` in epoch ``e`` comes from ``sample_rng(seed, e, i)``, so
augmentations do not depend on DataLoader worker seeding or on where a run was resumed.
Only horizontal flips are used (a vertical flip would break the sky-above-ground context).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

IGNORE = 255


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


def resize_pair(img: np.ndarray, lab: np.ndarray, h: int, w: int):
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
    return img, lab


def train_augment(img, lab, rng: np.random.Generator, crop_size, scale_range=(0.5, 2.0), base_size=0,
                  hflip=True, photometric=True):
    """Random scale -> pad/random crop -> horizontal flip -> photometric jitter."""
    h, w = lab.shape
    base = 1.0 if not base_size else base_size / max(h, w)
    s = base * rng.uniform(*scale_range)
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    img, lab = resize_pair(img, lab, nh, nw)
    ch, cw = crop_size
    ph, pw = max(ch - nh, 0), max(cw - nw, 0)
    if ph or pw:
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        lab = cv2.copyMakeBorder(lab, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
    H, W = lab.shape
    y = int(rng.integers(0, H - ch + 1))
    x = int(rng.integers(0, W - cw + 1))
    img, lab = img[y:y + ch, x:x + cw], lab[y:y + ch, x:x + cw]
    flip = bool(hflip and rng.random() < 0.5)
    if flip:
        img, lab = img[:, ::-1], lab[:, ::-1]
    if photometric:
        f = img.astype(np.float32)
        f = f * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)          # contrast, brightness
        grey = f.mean(axis=2, keepdims=True)
        f = grey + (f - grey) * rng.uniform(0.8, 1.2)                  # saturation
        img = np.clip(f, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def to_tensor(img: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 HWC RGB -> float CHW normalised with ImageNet mean/std (given in [0,1] units)."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    m = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (t - m) / s


class TrainDataset(torch.utils.data.Dataset):
    """Wraps a raw dataset with deterministic per-(epoch, index) augmentation."""

    def __init__(self, base, data_cfg, seed: int, mean, std):
        self.base, self.cfg, self.seed, self.mean, self.std = base, data_cfg, seed, mean, std
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, lab = self.base[i]
        rng = sample_rng(self.seed, self.epoch, i)
        c = self.cfg
        img, lab = train_augment(img, lab, rng, tuple(c.crop_size), tuple(c.scale_range), c.base_size,
                                 c.hflip, c.photometric)
        return to_tensor(img, self.mean, self.std), torch.from_numpy(lab.astype(np.int64))
