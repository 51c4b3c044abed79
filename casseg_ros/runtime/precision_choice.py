"""Precision ``auto``: the fastest precision whose class ids agree with fp32 on calibration frames.

A backend that can measure (OpenVINO: fp32, bf16 where the device has it, int8 with NNCF) builds
one sibling per candidate precision, runs every candidate on the same frames, and keeps the
fastest whose class-id agreement with fp32 is at least ``MIN_AGREEMENT`` on the pooled pixels of
those frames. The frames are the checkpoint's calibration frames (those int8 is calibrated on, a
bag or an image folder read with the node's decoder), so int8's agreement is measured on the
frames it was fitted to: a calibration set that does not look like the cameras' scenes makes the
figure optimistic (the 200-scene validation run of ``bench/backends.py`` is the held-out check).

Latency is the median of ``rounds`` interleaved rounds (every candidate once per round, on one
frame), so a load change on a shared machine hits all candidates alike. The result is recorded
(``record_choice``) and read back on later loads: a choice costs seconds to minutes (int8
quantisation) once per model, shape, device and runtime version.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from casseg_ros.fileio import atomic_write_bytes

from .base import Backend

__all__ = ["AGREEMENT_FRAMES", "MIN_AGREEMENT", "PrecisionTrial", "measure_precisions", "pick_precision",
           "read_choice", "record_choice"]

MIN_AGREEMENT = 0.99  # share of pixels whose class id equals fp32's (issue 20's bound for reduced precision)
AGREEMENT_FRAMES = 16  # calibration frames the agreement is measured on
TIMING_ROUNDS = 7


@dataclass
class PrecisionTrial:
    """One candidate's measurement. ``error``: why it could not run (then the rest is None)."""

    precision: str
    agreement: float | None = None  # pooled share of pixels equal to the reference's class ids
    worst_frame_agreement: float | None = None
    latency_ms: float | None = None  # median of the interleaved rounds
    error: str | None = None


def measure_precisions(build: Callable[[str], Backend], precisions: Sequence[str], frames: Sequence[np.ndarray],
                       rounds: int = TIMING_ROUNDS) -> list[PrecisionTrial]:
    """Build, load and warm up ``build(p)`` for each of ``precisions`` (the first is the reference,
    e.g. fp32), run all of them on ``frames`` (agreement with the reference) and time them in
    ``rounds`` interleaved rounds on ``frames[0]``. A candidate that fails to build or run is kept
    with its ``error``; the reference must run."""
    if not frames:
        raise ValueError("precision auto needs at least one frame to measure on")
    trials = [PrecisionTrial(p) for p in precisions]
    backends: dict[str, Backend] = {}
    try:
        for trial in trials:
            try:
                backend = build(trial.precision).load()
                backend.warmup(2, size=frames[0].shape[:2] if backend.resize_in_graph else None)
                backends[trial.precision] = backend
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot run is reported, not fatal
                if trial is trials[0]:
                    raise
                trial.error = f"{type(exc).__name__}: {exc}"
        reference = [backends[trials[0].precision].infer(f).class_ids[0] for f in frames]
        for trial in trials:
            if trial.precision not in backends:
                continue
            ids = reference if trial is trials[0] else [backends[trial.precision].infer(f).class_ids[0] for f in frames]
            equal = [float(np.mean(a == b)) for a, b in zip(ids, reference)]
            pixels = [a.size for a in reference]
            trial.agreement = float(np.average(equal, weights=pixels))
            trial.worst_frame_agreement = min(equal)
        times: dict[str, list[float]] = {p: [] for p in backends}
        for _ in range(max(1, int(rounds))):
            for precision, backend in backends.items():
                start = time.perf_counter()
                backend.infer(frames[0])
                times[precision].append(time.perf_counter() - start)
        for trial in trials:
            if trial.precision in times:
                trial.latency_ms = 1000.0 * statistics.median(times[trial.precision])
    finally:
        for backend in backends.values():
            if hasattr(backend, "close"):
                backend.close()
    return trials


def pick_precision(trials: Sequence[PrecisionTrial], min_agreement: float = MIN_AGREEMENT) -> tuple[str, str]:
    """(precision, the reason in one line): the fastest trial at ``min_agreement`` or better."""
    eligible = [t for t in trials if t.error is None and t.agreement is not None and t.agreement >= min_agreement]
    if not eligible:
        raise ValueError("no precision ran at the agreement bound (the reference itself failed?)")
    best = min(eligible, key=lambda t: t.latency_ms)
    measured = "; ".join(f"{t.precision} {t.latency_ms:.1f} ms, {100 * t.agreement:.2f} % pixels = {trials[0].precision}"
                         if t.error is None else f"{t.precision}: {t.error}" for t in trials)
    return best.precision, f"fastest at >= {100 * min_agreement:g} % agreement ({measured})"


def record_choice(path: Path, key: dict[str, Any], precision: str, reason: str,
                  trials: Sequence[PrecisionTrial]) -> None:
    """Write the choice and its measurements to ``path`` (JSON, temp file then rename)."""
    doc = {"key": key, "precision": precision, "reason": reason, "trials": [asdict(t) for t in trials],
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(doc, indent=1, sort_keys=True).encode())


def read_choice(path: Path, key: dict[str, Any]) -> tuple[str, str] | None:
    """(precision, reason) recorded at ``path`` for exactly ``key``, else None (absent, unreadable,
    or another key: the record is measured again)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != key or not isinstance(doc.get("precision"), str):
        return None
    return doc["precision"], f"{doc.get('reason', '')} [recorded {path}]"
