"""Backends: ONNX Runtime vs PyTorch parity (baseline + full model), host resize path, batching,
vocabulary and describe(), clear errors for unavailable backends/devices, GPU paths (skipped here)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from casseg_ros.export.parity import make_test_pattern
from casseg_ros.model import LogitsPipeline
from casseg_ros.model.checkpoint import save_checkpoint
from casseg_ros.runtime import BackendUnavailable, InferenceResult, TorchBackend, available_backends, create_backend
from casseg_ros.runtime.model_export import export_model
from model_factory import tiny_model

torch.set_num_threads(1)
SIZE = (64, 128)
FULL = dict(fusion=True, graph=True)
BASELINE = dict(fusion=False, graph=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, switches in (("full", FULL), ("baseline", BASELINE)):
        model = tiny_model(num_classes=5, **switches)
        out[name] = (save_checkpoint(root / f"{name}.safetensors", model), model)
    return out


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


def _images(n=1, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    img = np.stack([make_test_pattern(*size) for _ in range(n)])
    noise = rng.integers(-20, 21, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["full", "baseline"])
def test_onnxruntime_matches_torch(checkpoints, onnx_cache, tmp_path, variant):
    path, model = checkpoints[variant]
    images = _images(2)
    tb = create_backend("torch", path, input_size=SIZE, num_threads=1)
    ob = create_backend("onnxruntime", path, input_size=SIZE, onnx_cache_dir=onnx_cache, num_threads=1)
    rt, ro = tb.infer(images), ob.infer(images)
    assert (rt.class_ids == ro.class_ids).mean() >= 0.999
    assert np.abs(rt.confidence - ro.confidence).max() <= 1e-3
    assert np.abs(rt.class_scores - ro.class_scores).max() <= 1e-3
    assert np.abs(rt.adjacency - ro.adjacency).max() <= 1e-3
    # logits: the same model through the logits export
    import onnxruntime as ort

    lp = export_model(model, tmp_path / "logits.onnx", SIZE, logits=True)
    sess = ort.InferenceSession(str(lp), providers=["CPUExecutionProvider"])
    onnx_logits = sess.run(None, {"images": images[:1], "class_embeddings": model.vocabulary.embeddings})[0]
    with torch.inference_mode():
        torch_logits = LogitsPipeline(model)(torch.from_numpy(images[:1])).numpy()
    assert onnx_logits.shape == torch_logits.shape == (1, 5, *SIZE)
    assert np.abs(onnx_logits - torch_logits).max() <= 1e-3
    assert (onnx_logits.argmax(1) == torch_logits.argmax(1)).mean() >= 0.999


@pytest.mark.slow
def test_result_contract_and_host_resize(checkpoints, onnx_cache):
    path, _ = checkpoints["full"]
    for name in ("torch", "onnxruntime"):
        be = create_backend(name, path, input_size=SIZE, onnx_cache_dir=onnx_cache, num_threads=1)
        be.load()
        be.warmup(1)
        # other size than input_size (and odd aspect): outputs come back at the original size
        images = _images(3, size=(90, 150), seed=1)
        res = be.infer(images)
        assert isinstance(res, InferenceResult) and len(res) == 3
        assert res.class_ids.shape == (3, 90, 150) and res.class_ids.dtype == np.int32
        assert res.confidence.shape == (3, 90, 150) and res.confidence.dtype == np.float32
        assert res.class_scores.shape == (3, 5) and res.class_scores.dtype == np.float32
        assert res.adjacency.shape == (3, 5, 5) and res.adjacency.dtype == np.float32
        assert 0 <= res.class_ids.min() and res.class_ids.max() < 5
        assert ((res.confidence > 0) & (res.confidence <= 1 + 1e-6)).all()
        np.testing.assert_allclose(res.class_scores.sum(1), 1.0, atol=1e-4)
        # resize path == explicit resize + native-size inference + nearest back
        import cv2

        small = np.stack([cv2.resize(im, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_LINEAR) for im in images])
        ref = be.infer(small)
        for i in range(3):
            back = cv2.resize(ref.class_ids[i], (150, 90), interpolation=cv2.INTER_NEAREST)
            assert (back == res.class_ids[i]).all()
        np.testing.assert_allclose(ref.class_scores, res.class_scores, atol=1e-6)
        # a single HWC image is accepted as a batch of one
        one = be.infer(images[0])
        assert one.class_ids.shape == (1, 90, 150)
        assert (one.class_ids[0] == res.class_ids[0]).all()
        d = be.describe()
        assert {"name", "device", "precision", "input_size"} <= set(d)
        assert d["name"] == name and d["device"] == "cpu" and d["input_size"] == list(SIZE)
        assert be.vocabulary.names == [f"class_{i}" for i in range(5)]
        assert be.vocabulary.palette.shape == (5, 3)


@pytest.mark.parametrize("size", [(48, 80), (61, 93)])
def test_in_memory_model_runs_the_checkpoint_path(checkpoints, size):
    """TorchBackend.from_model (training, ablation, benches) == the backend loaded from the file."""
    path, model = checkpoints["full"]
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    threads = torch.get_num_threads()
    for input_size in (None, (64, 96)):
        res = TorchBackend.from_model(model, input_size=input_size).infer(image)
        ref = create_backend("torch", path, input_size=input_size, num_threads=threads).infer(image)
        assert res.class_ids.shape == (1, *size) and res.confidence.shape == (1, *size)
        assert (res.class_ids == ref.class_ids).all()
        np.testing.assert_array_equal(res.confidence, ref.confidence)
        np.testing.assert_array_equal(res.class_scores, ref.class_scores)
        assert np.all((res.confidence >= 1 / 5 - 1e-5) & (res.confidence <= 1))
    # the caller's process and model are left as they were
    assert torch.get_num_threads() == threads
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.slow
def test_onnx_file_as_model_path_and_shape_check(checkpoints, tmp_path):
    path, model = checkpoints["baseline"]
    onnx_path = export_model(model, tmp_path / "b.onnx", SIZE)
    be = create_backend("onnxruntime", onnx_path, input_size=SIZE, num_threads=1)
    res = be.infer(_images(1))
    assert res.class_ids.shape == (1, *SIZE)
    assert be.vocabulary.names == model.vocabulary.names  # from the ONNX metadata
    np.testing.assert_allclose(be.vocabulary.embeddings, model.vocabulary.embeddings, atol=1e-7)
    with pytest.raises(ValueError, match=r"input shape \[1, 64, 128, 3\].*casseg-export --input-size 96 160"):
        create_backend("onnxruntime", onnx_path, input_size=(96, 160)).load()


def test_bad_inputs_are_rejected(checkpoints):
    be = create_backend("torch", checkpoints["baseline"][0], input_size=SIZE)
    with pytest.raises(ValueError, match="uint8"):
        be.infer(np.zeros((1, 64, 128, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(B,H,W,3\)"):
        be.infer(np.zeros((1, 64, 128), np.uint8))
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("caffe", "x.safetensors")
    with pytest.raises(ValueError, match="precision"):
        create_backend("torch", "x.safetensors", precision="int4")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
@pytest.mark.parametrize("name,device,expect", [
    ("tensorrt", "cuda", ["'tensorrt'", "CUDA GPU"]),
    ("tensorrt", "cpu", ["only on device 'cuda'"]),
    ("torch", "cuda", ["CUDA GPU", "torch.cuda.is_available() is False"]),
    ("onnxruntime", "cuda", ["onnxruntime-gpu", "CPUExecutionProvider"]),
])
def test_unavailable_backends_name_what_is_missing(name, device, expect):
    with pytest.raises(BackendUnavailable) as info:
        create_backend(name, "models/none.safetensors", device=device)
    for text in expect:
        assert text in str(info.value)
    avail = available_backends()
    assert avail["torch"]["cpu"] is None and avail["onnxruntime"]["cpu"] is None
    assert avail["tensorrt"]["cuda"] is not None


def test_cpu_fp16_is_refused_clearly():
    with pytest.raises(BackendUnavailable, match="fp16"):
        create_backend("torch", "x.safetensors", device="cpu", precision="fp16")
    with pytest.raises(BackendUnavailable, match="runs fp32 and int8"):
        create_backend("onnxruntime", "x.safetensors", device="cpu", precision="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_torch_cuda_autocast_close_to_fp32(checkpoints, precision):
    path, _ = checkpoints["full"]
    images = _images(1)
    ref = create_backend("torch", path, input_size=SIZE).infer(images)
    res = create_backend("torch", path, device="cuda", input_size=SIZE, precision=precision).infer(images)
    assert (ref.class_ids == res.class_ids).mean() >= 0.98


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and TensorRT (none on this machine)")
def test_tensorrt_engine_builds_caches_and_matches(checkpoints, onnx_cache, tmp_path):
    pytest.importorskip("tensorrt")
    path, _ = checkpoints["full"]
    images = _images(1)
    ref = create_backend("torch", path, input_size=SIZE).infer(images)
    opts = dict(onnx_cache_dir=onnx_cache, engine_cache_dir=tmp_path / "engines", workspace_bytes=1 << 30)
    be = create_backend("tensorrt", path, device="cuda", input_size=SIZE, precision="fp32", **opts)
    be.load()
    assert be.engine_was_cached is False
    be.warmup(2)
    res = be.infer(images)
    assert (ref.class_ids == res.class_ids).mean() >= 0.999
    be2 = create_backend("tensorrt", path, device="cuda", input_size=SIZE, precision="fp32", **opts)
    be2.load()
    assert be2.engine_was_cached is True


@pytest.mark.slow
def test_static_backend_without_input_size_uses_model_size(checkpoints, onnx_cache, tmp_path):
    path, model = checkpoints["baseline"]  # tiny config: img_size (64, 128)
    be = create_backend("onnxruntime", path, input_size=None, onnx_cache_dir=onnx_cache, num_threads=1)
    res = be.infer(_images(1, size=(80, 100)))
    assert be.describe()["input_size"] == [64, 128] and res.class_ids.shape == (1, 80, 100)
    onnx_path = export_model(model, tmp_path / "s.onnx", (96, 160))
    be = create_backend("onnxruntime", onnx_path, input_size=None, num_threads=1)
    be.load()
    assert be.input_size == (96, 160)


def test_provider_order_tensorrt_cuda_cpu():
    from casseg_ros.runtime.onnx_backend import select_providers

    allp = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = select_providers("cuda:1", "fp16", available=allp, trt_cache_dir="/tmp/x")
    assert [c[0] if isinstance(c, tuple) else c for c in chosen] == allp
    assert chosen[0][1]["trt_fp16_enable"] is True and chosen[0][1]["device_id"] == 1
    assert chosen[1] == ("CUDAExecutionProvider", {"device_id": 1})
    only_cuda = select_providers("cuda", "fp32", available=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [c[0] if isinstance(c, tuple) else c for c in only_cuda] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("cpu", available=allp) == ["CPUExecutionProvider"]
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        select_providers("cuda", available=["CPUExecutionProvider"])


def test_torch_backend_gives_the_model_canonical_strides(checkpoints):
    """img[None] has a stride-0 batch axis in numpy; torch.compile would recompile on it."""
    path, model = checkpoints["baseline"]
    be = TorchBackend.from_model(model, input_size=SIZE, num_threads=1)
    be.load()
    seen = []
    inner = be._module
    be._module = lambda x, classes: (seen.append(x.stride()), inner(x, classes))[1]
    be.infer(_images(1)[0][None])
    assert seen == [(SIZE[0] * SIZE[1] * 3, SIZE[1] * 3, 3, 1)]


@pytest.mark.slow
def test_onnxruntime_optimized_graph_cache(checkpoints, tmp_path):
    path, model = checkpoints["full"]
    onnx_path = export_model(model, tmp_path / "f.onnx", SIZE)
    images = _images(1)
    first = create_backend("onnxruntime", onnx_path, input_size=SIZE, num_threads=1, optimized_cache=True)
    r1 = first.infer(images)
    cached = list(tmp_path.glob("f.ort*-cpu-opt.onnx"))
    assert len(cached) == 1
    second = create_backend("onnxruntime", onnx_path, input_size=SIZE, num_threads=1, optimized_cache=True)
    r2 = second.infer(images)  # loads the saved optimised graph (optimisation off)
    assert (r1.class_ids == r2.class_ids).all()
    np.testing.assert_allclose(r1.confidence, r2.confidence, atol=1e-5)
