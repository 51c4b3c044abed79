"""Precision auto's choice (runtime/precision_choice.py), without a runtime: stand-in backends whose
class ids differ from the reference on a known share of pixels, and made-up latencies; plus the
`precision` setting's rule, what the non-measuring backends do with `auto`, and replay's errors for
the precision and calibration settings. (OpenVINO's own measurement: test_runtime_openvino.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

from casseg_ros.model.checkpoint import save_checkpoint
from casseg_ros.parameter_rules import problem
from casseg_ros.replay.cli import build_parser as replay_parser
from casseg_ros.replay.offline.run import ReplayError, load_backend
from casseg_ros.runtime import BackendUnavailable, create_backend
from casseg_ros.runtime.base import InferenceResult
from casseg_ros.runtime.canned import CannedBackend
from casseg_ros.runtime.precision_choice import (
    PrecisionTrial,
    measure_precisions,
    pick_precision,
    read_choice,
    record_choice,
)
from model_factory import tiny_model

SIZE = (20, 50)  # 1000 pixels: agreement in steps of 0.1 %


def _canned(wrong_pixels: int) -> CannedBackend:
    ids = np.zeros((1, *SIZE), np.int32)
    ids.reshape(-1)[:wrong_pixels] = 1  # these pixels disagree with the all-zero reference
    k = 2
    return CannedBackend(InferenceResult(ids, np.ones((1, *SIZE), np.float32), np.full((1, k), 0.5, np.float32),
                                         np.zeros((1, k, k), np.float32)))


def test_agreement_is_measured_against_the_first_precision():
    wrong = {"fp32": 0, "bf16": 5, "int8": 20}  # 99.5 % and 98.0 % of the pixels equal fp32's
    frames = [np.zeros((*SIZE, 3), np.uint8)] * 3
    trials = measure_precisions(lambda p: _canned(wrong[p]), ["fp32", "bf16", "int8"], frames, rounds=3)
    by = {t.precision: t for t in trials}
    assert by["fp32"].agreement == 1.0
    assert by["bf16"].agreement == pytest.approx(0.995)
    assert by["int8"].agreement == pytest.approx(0.98) and by["int8"].worst_frame_agreement == pytest.approx(0.98)
    assert all(t.latency_ms is not None and t.latency_ms >= 0 for t in trials)


def test_a_candidate_that_fails_is_kept_with_its_error_and_the_reference_must_run():
    def build(p):
        if p == "int8":
            raise RuntimeError("quantiser exploded")
        return _canned(0)

    trials = measure_precisions(build, ["fp32", "int8"], [np.zeros((*SIZE, 3), np.uint8)], rounds=1)
    assert trials[1].error == "RuntimeError: quantiser exploded" and trials[1].agreement is None
    assert pick_precision(trials)[0] == "fp32"
    with pytest.raises(RuntimeError, match="exploded"):
        measure_precisions(build, ["int8", "fp32"], [np.zeros((*SIZE, 3), np.uint8)], rounds=1)


def test_the_fastest_precision_at_the_agreement_bound_wins():
    trials = [PrecisionTrial("fp32", 1.0, 1.0, 180.0), PrecisionTrial("bf16", 0.995, 0.99, 120.0),
              PrecisionTrial("int8", 0.985, 0.97, 90.0)]  # int8 fastest, but below 99 %
    precision, reason = pick_precision(trials)
    assert precision == "bf16"
    assert "int8 90.0 ms, 98.50 %" in reason and reason.startswith("fastest at >= 99 % agreement")
    assert pick_precision(trials, min_agreement=0.98)[0] == "int8"
    trials[1].latency_ms = 200.0  # slower than fp32: fp32 stays
    assert pick_precision(trials)[0] == "fp32"


def test_a_record_is_read_back_only_for_its_own_key(tmp_path):
    path = tmp_path / "choice.json"
    key = {"model_sha256": "ab", "device": "CPU"}
    record_choice(path, key, "int8", "fastest", [PrecisionTrial("fp32", 1.0, 1.0, 2.0)])
    assert json.loads(path.read_text())["trials"][0]["precision"] == "fp32"
    precision, reason = read_choice(path, key)
    assert precision == "int8" and "recorded" in reason
    assert read_choice(path, {**key, "model_sha256": "cd"}) is None  # another checkpoint: measure again
    path.write_text("{not json")
    assert read_choice(path, key) is None
    assert not list(tmp_path.glob("*.tmp*"))  # written through a temp file, renamed


def test_the_precision_rule():
    assert problem("precision", "auto") is None and problem("precision", "int8") is None
    assert problem("precision", "fp64") == "precision must be one of 'auto', 'fp32', 'fp16', 'bf16', 'int8', got 'fp64'"


def test_auto_on_a_backend_that_does_not_measure_runs_its_default(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", tiny_model(num_classes=3))
    backend = create_backend("torch", checkpoint, input_size=(32, 64), precision="auto")
    assert backend.precision == "fp32"
    assert backend.describe()["precision_choice"].startswith("auto: fp32 (backend torch's default")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, fp16, bf16, int8, got 'fp64'"):
        create_backend("torch", checkpoint, precision="fp64")
    with pytest.raises(BackendUnavailable, match=r"backend 'onnxruntime' on device 'cpu' runs fp32 and int8"):
        create_backend("onnxruntime", checkpoint, precision="bf16")


def test_replay_names_a_missing_calibration_and_a_bad_precision(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", tiny_model(num_classes=3))
    with pytest.raises(ReplayError, match=r"^calibration data not found: .*nowhere\.mcap$"):
        load_backend(checkpoint, "torch", "cpu", (32, 64), calibration=tmp_path / "nowhere.mcap")
    with pytest.raises(ReplayError, match="^precision must be one of 'auto', 'fp32', 'fp16', 'bf16', 'int8', got 'fp8'$"):
        load_backend(checkpoint, "torch", "cpu", (32, 64), precision="fp8")
    with pytest.raises(SystemExit):
        replay_parser().parse_args(["bag", "--precision", "fp8"])
    args = replay_parser().parse_args(["bag", "--precision", "int8", "--calibration", "data/demo.mcap"])
    assert (args.precision, str(args.calibration)) == ("int8", "data/demo.mcap")
