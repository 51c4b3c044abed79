"""TensorRT engine cache (pure Python): key, invalidation, atomic writes, crash mid-write, corruption."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from casseg_ros.fileio import atomic_write_bytes
from casseg_ros.runtime.engine_cache import EngineCache, EngineCacheKey, default_cache_dir, file_sha256

REPO = Path(__file__).resolve().parent.parent


def _key(model: Path, **over) -> EngineCacheKey:
    args = dict(input_shape=(1, 512, 1024, 3), precision="fp16", trt_version="10.9.0", gpu_name="NVIDIA H100")
    args.update(over)
    return EngineCacheKey.create(model, args["input_shape"], args["precision"], args["trt_version"],
                                 args["gpu_name"], workspace=4 << 30)


@pytest.fixture
def model_file(tmp_path) -> Path:
    p = tmp_path / "m.onnx"
    p.write_bytes(b"onnx-bytes-v1")
    return p


def test_default_dir_and_env_override(monkeypatch, tmp_path):
    monkeypatch.delenv("CASSEG_ENGINE_CACHE", raising=False)
    assert default_cache_dir() == Path("~/.cache/casseg_ros/engines").expanduser()
    monkeypatch.setenv("CASSEG_ENGINE_CACHE", str(tmp_path / "c"))
    assert EngineCache().root == tmp_path / "c"
    assert EngineCache(tmp_path / "x").root == tmp_path / "x"


def test_key_is_stable_and_sensitive_to_every_field(model_file, tmp_path):
    base = _key(model_file)
    assert base.digest() == _key(model_file).digest()  # deterministic
    assert base.model_sha256 == file_sha256(model_file)
    variants = [
        _key(model_file, input_shape=(1, 256, 512, 3)),
        _key(model_file, precision="fp32"),
        _key(model_file, trt_version="10.10.0"),
        _key(model_file, gpu_name="NVIDIA GeForce RTX 4090"),
        EngineCacheKey.create(model_file, (1, 512, 1024, 3), "fp16", "10.9.0", "NVIDIA H100", workspace=1 << 30),
    ]
    other_model = tmp_path / "m2.onnx"
    other_model.write_bytes(b"onnx-bytes-v2")
    variants.append(_key(other_model))
    digests = {v.digest() for v in variants} | {base.digest()}
    assert len(digests) == len(variants) + 1


def test_store_load_roundtrip_and_invalidation(model_file, tmp_path):
    cache = EngineCache(tmp_path / "engines")
    key = _key(model_file)
    assert cache.load(key) is None
    built = []

    def build():
        built.append(1)
        return b"ENGINE" * 1000

    data, cached = cache.get_or_build(key, build)
    assert (data, cached, len(built)) == (b"ENGINE" * 1000, False, 1)
    data, cached = cache.get_or_build(key, build)
    assert cached and len(built) == 1  # hit: no rebuild
    meta = json.loads(cache.meta_path(key).read_text())
    assert meta["key"]["gpu_name"] == "NVIDIA H100" and meta["size"] == 6000

    # any change of model bytes / shape / precision / TRT version / GPU -> miss -> rebuild
    model_file.write_bytes(b"onnx-bytes-retrained")
    for k in (_key(model_file), _key(model_file, gpu_name="Orin"), _key(model_file, trt_version="11.0"),
              _key(model_file, precision="bf16"), _key(model_file, input_shape=(1, 64, 128, 3))):
        _, cached = cache.get_or_build(k, build)
        assert not cached
    assert len(built) == 6
    # prune keeps only the current entry
    current = _key(model_file, input_shape=(1, 64, 128, 3))
    cache.prune(current)
    assert [e["digest"] for e in cache.entries()] == [current.digest()]


def test_corrupt_or_mismatched_entry_is_a_miss_and_removed(model_file, tmp_path):
    cache = EngineCache(tmp_path)
    key = _key(model_file)
    cache.store(key, b"A" * 100)
    cache.engine_path(key).write_bytes(b"A" * 50 + b"B" * 50)  # bit rot / foreign write, same size
    assert cache.load(key) is None
    assert not cache.engine_path(key).exists() and not cache.meta_path(key).exists()

    cache.store(key, b"A" * 100)
    cache.meta_path(key).write_text("{not json")
    assert cache.load(key) is None

    cache.store(key, b"A" * 100)
    cache.meta_path(key).unlink()  # engine without metadata (crash between the two writes)
    assert cache.load(key) is None
    data, cached = cache.get_or_build(key, lambda: b"C" * 10)
    assert (data, cached) == (b"C" * 10, False) and cache.load(key) == b"C" * 10


def test_atomic_write_exception_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.engine"
    atomic_write_bytes(target, b"old")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new-but-never-complete")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.engine"]


_CRASH_CHILD = r"""
import os, signal, sys
sys.path.insert(0, {repo!r})
from casseg_ros.runtime.engine_cache import EngineCache, EngineCacheKey
cache = EngineCache({root!r})
key = EngineCacheKey("abc", (1, 64, 128, 3), "fp16", "10.9.0", "GPU")
mode = sys.argv[1]
real_replace = os.replace
if mode == "mid-engine":
    # die with half the engine written to the temp file: before os.replace
    def crash(src, dst):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace = crash
elif mode == "between-files":
    # the engine lands, the process dies before its metadata is renamed into place
    def crash(src, dst):
        if str(dst).endswith(".json"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)
    os.replace = crash
cache.store(key, b"E" * (1 << 20))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mid-engine", "between-files"])
def test_crash_mid_write_leaves_no_corrupt_entry(tmp_path, mode):
    root = tmp_path / "engines"
    script = tmp_path / "child.py"
    script.write_text(_CRASH_CHILD.format(repo=str(REPO), root=str(root)))
    proc = subprocess.run([sys.executable, str(script), mode], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    cache = EngineCache(root)
    key = EngineCacheKey("abc", (1, 64, 128, 3), "fp16", "10.9.0", "GPU")
    assert cache.load(key) is None  # never a half engine or an unvalidated one
    assert cache.entries() == []
    leftovers = sorted(p.name for p in root.iterdir())
    assert all(n.startswith(".") and n.endswith(".tmp") or n.endswith(".engine") for n in leftovers), leftovers
    # stale temp files are cleaned, and the next store produces a valid entry
    cache.clean_temp(older_than_s=0)
    assert not list(root.glob(".*.tmp"))
    data, cached = cache.get_or_build(key, lambda: b"good")
    assert (data, cached) == (b"good", False) and cache.load(key) == b"good"
