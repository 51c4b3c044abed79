"""OpenVINO backend: fp32 / bf16 / int8 against torch on the demo weights, the vocabulary swap, the
compiled-model cache, `backend: auto`, clear errors (openvino missing, a device not there), the
openvino_device rule, and OpenVINO's telemetry kept off.

Every test skips where openvino is not installed (an optional dependency), except those that make
it missing on purpose. The precision a test holds is the one OpenVINO reports it ran
(`INFERENCE_PRECISION_HINT` read back): bf16 runs only on CPUs that have it."""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time

from casseg_ros.export.parity import make_test_pattern
from casseg_ros.model.checkpoint import bake_vocabulary, save_checkpoint
from casseg_ros.parameter_rules import problem
from casseg_ros.replay.cli import build_parser as replay_parser
from casseg_ros.ros.calibration_frames import calibration_frames
from casseg_ros.ros.cameras import Camera
from casseg_ros.ros.diagnostics import node_diagnostics
from casseg_ros.ros.node_stats import BatchStats
from casseg_ros.runtime import BackendUnavailable, available_backends, choice, choose_backend, create_backend
from casseg_ros.runtime.base import VocabularyUnsupported
from casseg_ros.runtime.openvino_backend import import_openvino
from casseg_ros.text import Vocabulary
from model_factory import random_vocabulary, tiny_model
from ros_helpers.harness import node_and_probe, start_camera
from training.datasets import ContextScenes

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = REPO / "models" / "casseg_demo.safetensors"
DEMO_BAG = REPO / "data" / "demo.mcap"
DEMO_SIZE = (96, 192)  # the demo weights' own input size
SIZE = (64, 128)
HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="openvino is not installed (optional)")
# In a pytest process of its own (pytest.ini says why): with these tests in the suite's process, a
# later CPU training test and the DDP test crashed it.
pytestmark = pytest.mark.own_process


def _agreement(a, b) -> float:
    return float((a.class_ids == b.class_ids).mean() * 100)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """ONNX export cache and OpenVINO cache of this module (never the user's ~/.cache)."""
    root = tmp_path_factory.mktemp("openvino")
    return {"onnx_cache_dir": root / "onnx", "openvino_cache_dir": root / "openvino"}


@pytest.fixture(scope="module")
def scenes() -> np.ndarray:
    val = ContextScenes(8, *DEMO_SIZE, seed=1_000_003)  # the validation stream of training/datasets
    return np.stack([val[i][0] for i in range(len(val))])


@pytest.fixture(scope="module")
def reference(scenes):
    return create_backend("torch", DEMO_WEIGHTS, input_size=None, num_threads=1).infer(scenes)


def _openvino(model=DEMO_WEIGHTS, caches=None, **opts):
    return create_backend("openvino", model, input_size=opts.pop("input_size", None), num_threads=1,
                          **(caches or {}), **opts).load()


@pytest.mark.slow
@needs_openvino
def test_fp32_matches_torch_on_the_demo_weights(caches, scenes, reference):
    backend = _openvino(caches=caches)
    result = backend.infer(scenes)
    assert backend.describe()["precision"] == "fp32" == backend.inference_precision
    assert _agreement(result, reference) >= 99.9
    # OpenVINO's CPU kernels for attention and element-wise chains ("snippets") differ from torch
    # by up to ~1e-3 in f32 (SNIPPETS_MODE=DISABLE: ~4e-7, but ~9 % slower at 512x1024)
    assert np.abs(result.confidence - reference.confidence).max() <= 2e-3
    assert np.abs(result.class_scores - reference.class_scores).max() <= 2e-3
    assert np.abs(result.adjacency - reference.adjacency).max() <= 2e-3
    assert backend.last_runtime_s is not None and 0 < backend.last_runtime_s
    # host resize path: an image of another size comes back at its size
    other = backend.infer(make_test_pattern(120, 240))
    assert other.class_ids.shape == (1, 120, 240) and other.class_ids.dtype == np.int32


@pytest.mark.slow
@needs_openvino
def test_bf16_where_the_cpu_has_it(caches, scenes, reference):
    try:
        backend = _openvino(caches=caches, precision="bf16")
    except BackendUnavailable as exc:  # a CPU without AVX512-BF16 / AMX: refused, saying why
        assert "bf16" in str(exc) and "OPTIMIZATION_CAPABILITIES" in str(exc)
        pytest.skip(f"bf16 not here: {exc}")
    ran = backend.compiled_model.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # read back
    assert backend.describe()["precision"] == {"bf16": "bf16", "f32": "fp32"}[ran]  # what ran, not what was asked
    assert _agreement(backend.infer(scenes), reference) >= 99.0


@needs_openvino
@pytest.mark.slow
def test_int8_nncf_agrees_and_is_cached(caches, scenes, reference):
    calibration = functools.partial(calibration_frames, DEMO_BAG)
    backend = _openvino(caches=caches, precision="int8", calibration=calibration,
                        calibration_source=f"{DEMO_BAG}", calibration_frames=8)
    assert backend.describe()["precision"] == "int8"
    assert _agreement(backend.infer(scenes), reference) >= 99.0
    xml = backend.cache_dir / "int8" / "model.xml"
    assert xml.is_file() and "FakeQuantize" in xml.read_text()  # really quantised
    assert not list(backend.cache_dir.glob(".*.tmp"))  # temp folder renamed into place
    # a second load takes the saved int8 model: no calibration (the callable would fail), no compile
    again = _openvino(caches=caches, precision="int8", calibration=lambda: 1 / 0,
                      calibration_source=f"{DEMO_BAG}", calibration_frames=8)
    assert again.cache_dir == backend.cache_dir and again.loaded_from_cache
    with pytest.raises(ValueError, match="pass calibration="):
        _openvino(caches=caches, precision="int8", calibration_source="elsewhere")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors", tiny_model(num_classes=5))


def _images(n=2, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    base = make_test_pattern(*size).astype(int)
    return np.stack([np.clip(base + rng.integers(-25, 26, base.shape), 0, 255).astype(np.uint8) for _ in range(n)])


@pytest.mark.slow
@needs_openvino
@pytest.mark.parametrize("static_classes", [True, False], ids=["static_K", "dynamic_K"])
def test_permuting_the_class_embeddings_permutes_the_ids(tiny_checkpoint, caches, tmp_path, static_classes):
    backend = _openvino(tiny_checkpoint, caches, input_size=SIZE, static_classes=static_classes)
    images = _images()
    before = backend.infer(images)
    old = backend.vocabulary
    order = [3, 0, 4, 1, 2]  # new class i is old class order[i]
    permuted = Vocabulary(names=[old.names[i] for i in order], embeddings=old.embeddings[order],
                          provider=old.provider)
    backend.set_vocabulary(permuted)
    after = backend.infer(images)
    assert backend.vocabulary is permuted
    np.testing.assert_array_equal(np.asarray(order)[after.class_ids], before.class_ids)
    np.testing.assert_allclose(after.class_scores, before.class_scores[:, order], atol=1e-5)
    # another class count: the same model, no re-export (static K: compiled again for K=3), and
    # the masks of a checkpoint baked with those classes
    three = random_vocabulary(3, seed=7)
    backend.set_vocabulary(three)
    baked = bake_vocabulary(tiny_checkpoint, three, tmp_path / "baked.safetensors")
    got = backend.infer(images)
    want = _openvino(baked, {**caches, "openvino_cache_dir": tmp_path}, input_size=SIZE).infer(images)
    assert got.class_scores.shape == (2, 3) and got.adjacency.shape == (2, 3, 3)
    assert _agreement(got, want) >= 99.9
    # refused: the old vocabulary keeps working
    with pytest.raises(VocabularyUnsupported, match="dimension 64.*384"):
        backend.set_vocabulary(random_vocabulary(3, dim=64))
    assert backend.vocabulary is three
    np.testing.assert_array_equal(backend.infer(images).class_ids, got.class_ids)


def _files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
@needs_openvino
def test_the_compiled_model_cache_is_reused_and_keyed_by_the_checkpoint(tmp_path):
    opts = {"onnx_cache_dir": tmp_path / "onnx", "openvino_cache_dir": tmp_path / "openvino"}
    first_ckpt = save_checkpoint(tmp_path / "a.safetensors", tiny_model(num_classes=5, seed=0))
    first = _openvino(first_ckpt, opts, input_size=SIZE)
    assert not first.loaded_from_cache
    files = _files(tmp_path / "openvino")
    assert any(name.endswith(".blob") for name in files) and any(name.endswith("entry.json") for name in files)
    second = _openvino(first_ckpt, opts, input_size=SIZE)
    assert second.loaded_from_cache  # imported, not compiled
    assert _files(tmp_path / "openvino") == files  # nothing written again
    np.testing.assert_array_equal(first.infer(_images()).class_ids, second.infer(_images()).class_ids)
    key = json.loads((second.cache_dir / "entry.json").read_text())
    assert key["precision"] == "fp32" and key["device"] == "CPU" and key["input_shape"] == [1, *SIZE, 3]
    assert key["openvino"] == import_openvino().__version__  # the cache's key holds its version
    changed = save_checkpoint(tmp_path / "a.safetensors", tiny_model(num_classes=5, seed=1))  # same path, new weights
    third = _openvino(changed, opts, input_size=SIZE)
    assert not third.loaded_from_cache and third.cache_dir != first.cache_dir
    assert len([p for p in (tmp_path / "openvino").iterdir() if p.is_dir()]) == 2


def _no_gpu_tools(monkeypatch, *, openvino=True, onnxruntime=True, tensorrt=False, cuda=False):
    monkeypatch.setattr(choice, "openvino_missing", lambda: None if openvino else "openvino missing")
    monkeypatch.setattr(choice, "tensorrt_missing", lambda: None if tensorrt else "tensorrt missing")
    monkeypatch.setattr(choice, "onnxruntime_providers",
                        lambda: (["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else
                                 ["CPUExecutionProvider"]) if onnxruntime else None)
    monkeypatch.setattr(choice.torch.cuda, "is_available", lambda: cuda)


def test_auto_chooses_as_documented(monkeypatch):
    _no_gpu_tools(monkeypatch)
    assert choose_backend("cpu", machine="x86_64")[0] == "openvino"
    name, reason = choose_backend("cpu", machine="aarch64")
    assert name == "onnxruntime" and "not an x86 CPU (aarch64)" in reason
    _no_gpu_tools(monkeypatch, openvino=False)
    name, reason = choose_backend("cpu", machine="x86_64")
    assert name == "onnxruntime" and "openvino missing" in reason
    _no_gpu_tools(monkeypatch, openvino=False, onnxruntime=False)
    assert choose_backend("cpu", machine="x86_64")[0] == "torch"
    _no_gpu_tools(monkeypatch, tensorrt=True, cuda=True)
    assert choose_backend("cuda", machine="x86_64") == ("tensorrt", "device cuda: CUDA and TensorRT are present")
    _no_gpu_tools(monkeypatch, cuda=True)
    assert choose_backend("cuda:1", machine="x86_64")[0] == "onnxruntime"
    _no_gpu_tools(monkeypatch, onnxruntime=False, cuda=True)
    assert choose_backend("cuda", machine="x86_64")[0] == "torch"


def test_auto_builds_the_chosen_backend_and_says_why(monkeypatch, tiny_checkpoint, tmp_path):
    _no_gpu_tools(monkeypatch, openvino=False)
    backend = create_backend("auto", tiny_checkpoint, input_size=SIZE, onnx_cache_dir=tmp_path, num_threads=1)
    assert backend.name == "onnxruntime"
    assert backend.describe()["backend_choice"].startswith("auto: onnxruntime (device cpu: OpenVINO not used")
    assert "backend_choice" not in create_backend("torch", tiny_checkpoint, input_size=SIZE).describe()


def test_missing_openvino_is_a_clear_error(monkeypatch, tiny_checkpoint):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(BackendUnavailable, match=r"needs the Python package 'openvino' .*pip install openvino"):
        create_backend("openvino", tiny_checkpoint, input_size=SIZE)
    assert "pip install openvino" in available_backends()["openvino"]["cpu"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    with pytest.raises(BackendUnavailable, match=r"int8.*needs the Python package 'nncf'"):
        create_backend("openvino", tiny_checkpoint, input_size=SIZE, precision="int8")


@needs_openvino
def test_a_device_that_is_not_there_is_named(tiny_checkpoint, caches):
    available = import_openvino().Core().available_devices
    absent = next(d for d in ("NPU", "GPU") if not any(a.startswith(d) for a in available))
    with pytest.raises(BackendUnavailable, match=rf"device '{absent}' is not available here; OpenVINO .* sees "
                                                 rf"{', '.join(available)}"):
        _openvino(tiny_checkpoint, caches, input_size=SIZE, openvino_device=absent)
    with pytest.raises(BackendUnavailable, match="not on device 'cuda'"):
        create_backend("openvino", tiny_checkpoint, device="cuda", input_size=SIZE)
    with pytest.raises(BackendUnavailable, match=r"backend 'openvino' runs precision auto, fp32, bf16, int8 \(asked for fp16\)"):
        create_backend("openvino", tiny_checkpoint, input_size=SIZE, precision="fp16")


def test_the_openvino_device_rule():
    assert problem("openvino_device", "CPU") is None and problem("openvino_device", "AUTO") is None
    assert problem("openvino_device", "TPU") == "openvino_device must be one of 'CPU', 'GPU', 'NPU', 'AUTO', got 'TPU'"
    assert problem("backend", "openvino") is None and problem("backend", "auto") is None
    if HAVE_OPENVINO:  # the backend holds the same rule
        with pytest.raises(ValueError, match="openvino_device must be one of"):
            create_backend("openvino", DEMO_WEIGHTS, openvino_device="cpu0")
    args = replay_parser().parse_args(["bag", "--backend", "openvino", "--openvino-device", "AUTO"])
    assert (args.backend, args.openvino_device) == ("openvino", "AUTO")
    with pytest.raises(SystemExit):
        replay_parser().parse_args(["bag", "--openvino-device", "TPU"])


@needs_openvino
@pytest.mark.slow  # ~10 s: a fresh interpreter imports torch, openvino and nncf
def test_openvino_and_nncf_send_no_telemetry(tmp_path, tiny_checkpoint):
    """openvino-telemetry writes a client id into ~/intel at `import openvino` / `import nncf` and
    NNCF sends usage events, unless it declines consent: our import keeps it declined."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "NNCF_DEV", "TF_BUILD", "JENKINS_URL")}
    code = ("import os, sys\n"
            "from casseg_ros.runtime import create_backend\n"
            "from casseg_ros.runtime.openvino_backend import import_openvino\n"
            f"b = create_backend('openvino', {str(tiny_checkpoint)!r}, input_size=(64, 128), num_threads=1,\n"
            f"                   onnx_cache_dir={str(tmp_path / 'onnx')!r}, openvino_cache_dir={str(tmp_path / 'ov')!r})\n"
            "b.load(); import_openvino('nncf')\n"
            "print('CI' in os.environ, 'nncf' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(env, HOME=str(home)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["False", "True"]  # CI restored after the import
    assert [p.relative_to(home).as_posix() for p in home.rglob("*")] == []


@needs_openvino
def test_the_node_diagnostics_report_backend_device_and_precision(tiny_checkpoint, caches, monkeypatch):
    """What the node publishes on /diagnostics for backend auto choosing openvino: the backend
    that runs, its OpenVINO device, the precision read back and the reason it was chosen."""
    _no_gpu_tools(monkeypatch)
    monkeypatch.setattr(choice.platform, "machine", lambda: "x86_64")
    backend = create_backend("auto", tiny_checkpoint, input_size=SIZE, num_threads=1, **caches).load()
    status = node_diagnostics("/casseg_ros", "active", backend.describe(), [Camera("")], BatchStats(), 5,
                              Time()).status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert values["backend"] == "openvino" and values["device"] == "cpu" and values["openvino_device"] == "CPU"
    assert values["precision"] == backend.inference_precision == "fp32"
    assert values["backend_choice"] == "auto: openvino (device cpu on x86_64: OpenVINO is installed)"


@needs_openvino
@pytest.mark.ros
@pytest.mark.slow  # node and camera processes
def test_the_node_runs_backend_auto_on_openvino(ros_env, tiny_checkpoint, tmp_path):
    """The real node with `backend: auto` and `precision: auto` (calibration: a folder of images) on
    this x86 machine with OpenVINO installed: it logs both choices and why, segments the camera's
    frames, and /diagnostics names the backend and the precision in use."""
    ns = ros_env.namespace
    camera_topic = f"{ns}/camera/image_raw"
    env = dict(ros_env.env, CASSEG_OPENVINO_CACHE=str(tmp_path / "openvino"), CASSEG_ONNX_CACHE=str(tmp_path / "onnx"))
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i, image in enumerate(_images(3, seed=5)):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    with node_and_probe(env, ns, camera_topic, dict(
            model_path=str(tiny_checkpoint), backend="auto", openvino_device="CPU", input_height=SIZE[0],
            input_width=SIZE[1], qos_reliability="reliable", precision="auto",
            calibration=str(folder))) as (node, probe):
        probe.wait_for_state("active", 120.0, alive=node.check_alive)
        camera = start_camera(env, camera_topic, "--encodings", "rgb8", "--frames-per-encoding", "10")
        assert camera.wait(90) == 0, camera.output()
        assert probe.wait_until(lambda: probe.get("mask"), 30.0), node.output()
        assert probe.wait_until(lambda: probe.get("diagnostics"), 5.0)
        diagnostics = probe.get("diagnostics")[-1]
        assert "backend auto: openvino (device cpu on x86_64: OpenVINO is installed)" in node.output()
        assert "precision auto: " in node.output() and "fastest at >= 99 % agreement" in node.output()
    assert diagnostics["backend"] == "openvino" and diagnostics["openvino_device"] == "CPU"
    assert diagnostics["backend_choice"].startswith("auto: openvino")
    chosen = diagnostics["precision_choice"].split()[1]  # "auto: <precision> (...)"
    assert chosen in ("fp32", "bf16", "int8") and diagnostics["precision"] == chosen


@pytest.mark.slow
@needs_openvino
def test_resize_in_graph_runs_any_image_size(caches, scenes):
    """The resize-in-graph export (dynamic height and width): outputs at each image's own size,
    as torch's same graph gives them."""
    images = np.stack([cv2.resize(s, (240, 120), interpolation=cv2.INTER_LINEAR) for s in scenes[:4]])
    backend = _openvino(caches=caches, resize_in_graph=True)
    reference = create_backend("torch", DEMO_WEIGHTS, input_size=None, num_threads=1, resize_in_graph=True)
    assert backend.input_size == DEMO_SIZE and backend.describe()["resize_in_graph"]
    result = backend.infer(images)
    assert result.class_ids.shape == (4, 120, 240)
    assert _agreement(result, reference.infer(images)) >= 99.9
    assert backend.infer(scenes[:1]).class_ids.shape == (1, *DEMO_SIZE)  # another size, the same compiled model


@pytest.mark.slow
@needs_openvino
def test_precision_auto_measures_once_records_and_reuses(tiny_checkpoint, tmp_path):
    caches = {"onnx_cache_dir": tmp_path / "onnx", "openvino_cache_dir": tmp_path / "openvino"}
    frames = list(_images(4, seed=3))
    calls = []

    def calibration():
        calls.append(1)
        return iter(frames), "four test patterns"

    first = _openvino(tiny_checkpoint, caches, input_size=SIZE, precision="auto", calibration=calibration,
                      calibration_source="patterns")
    assert len(calls) == 1  # read once, shared by the candidates (int8 calibrates on the same frames)
    records = list((tmp_path / "openvino" / "precision").glob("*.json"))
    assert len(records) == 1
    doc = json.loads(records[0].read_text())
    trials = {t["precision"]: t for t in doc["trials"]}
    assert trials["fp32"]["agreement"] == 1.0 and "int8" in trials
    eligible = {p: t["latency_ms"] for p, t in trials.items() if t["error"] is None and t["agreement"] >= 0.99}
    assert doc["precision"] == first.precision == min(eligible, key=eligible.get)
    assert first.describe()["precision_choice"].startswith(f"auto: {first.precision} (fastest at >= 99 % agreement")

    def must_not_run():
        raise AssertionError("a recorded choice must not read the calibration frames again")

    again = _openvino(tiny_checkpoint, caches, input_size=SIZE, precision="auto", calibration=must_not_run,
                      calibration_source="patterns")
    assert again.precision == first.precision and "[recorded " in again.describe()["precision_choice"]
    images = np.stack(frames)
    assert np.array_equal(again.infer(images).class_ids, first.infer(images).class_ids)
    # another checkpoint is another key: measured again
    other = save_checkpoint(tmp_path / "other.safetensors", tiny_model(num_classes=5, seed=7))
    _openvino(other, caches, input_size=SIZE, precision="auto", calibration=calibration, calibration_source="patterns")
    assert len(calls) == 2 and len(list((tmp_path / "openvino" / "precision").glob("*.json"))) == 2


@needs_openvino
def test_precision_auto_without_calibration_frames_runs_fp32(tiny_checkpoint, caches):
    backend = _openvino(tiny_checkpoint, caches, input_size=SIZE, precision="auto")
    assert backend.precision == "fp32" and backend.describe()["inference_precision"] == "fp32"
    assert "no calibration frames" in backend.describe()["precision_choice"]
