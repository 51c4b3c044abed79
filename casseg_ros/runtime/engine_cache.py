"""On-disk cache for serialized TensorRT engines (pure Python; no TensorRT needed to use or test it).

An entry is identified by a key over everything that makes a serialized engine valid:
the model file's sha256, the input shape, the precision, the TensorRT version and the GPU name
(plus optional extras such as the workspace limit). A change in any of them gives another key, so the
old entry is simply not found and the engine is rebuilt (``prune`` removes superseded entries).

Layout under the root (default ``~/.cache/casseg_ros/engines``, env ``CASSEG_ENGINE_CACHE``)::

    <digest>.engine   serialized engine bytes
    <digest>.json     the key fields + sha256 and size of the .engine (written *after* the engine)

Both files are written atomically (temp file in the same directory + fsync + os.replace). An entry
is only valid when its .json exists, matches the requested key and the .engine bytes match the
recorded sha256 — so a crash at any point of ``store`` (mid-engine, between the two files) leaves at
worst an orphan temp file or an engine without metadata, which ``load`` treats as a miss and
``store``/``clean_temp`` overwrite or remove. A corrupt entry is deleted on load.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from casseg_ros.fileio import atomic_write_bytes

__all__ = ["EngineCacheKey", "EngineCache", "file_sha256", "default_cache_dir"]

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    env = os.environ.get("CASSEG_ENGINE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/casseg_ros/engines").expanduser()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineCacheKey:
    model_sha256: str
    input_shape: tuple[int, ...]  # e.g. (1, 512, 1024, 3)
    precision: str  # fp32 | fp16 | bf16
    trt_version: str
    gpu_name: str
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # e.g. (("workspace", "4294967296"),)

    @classmethod
    def create(cls, model_path: str | os.PathLike, input_shape, precision: str, trt_version: str,
               gpu_name: str, **extra) -> "EngineCacheKey":
        return cls(file_sha256(model_path), tuple(int(s) for s in input_shape), str(precision),
                   str(trt_version), str(gpu_name), tuple(sorted((k, str(v)) for k, v in extra.items())))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["extra"] = [list(kv) for kv in self.extra]
        d["format"] = CACHE_FORMAT
        return d

    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


class EngineCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def engine_path(self, key: EngineCacheKey) -> Path:
        return self.root / f"{key.digest()}.engine"

    def meta_path(self, key: EngineCacheKey) -> Path:
        return self.root / f"{key.digest()}.json"

    def load(self, key: EngineCacheKey) -> bytes | None:
        """The cached engine bytes for ``key``, or None (missing, stale or corrupt -> removed)."""
        ep, mp = self.engine_path(key), self.meta_path(key)
        if not mp.is_file() or not ep.is_file():
            return None
        try:
            meta = json.loads(mp.read_text())
            data = ep.read_bytes()
        except (OSError, ValueError):
            self._remove(key)
            return None
        if (meta.get("key") != key.to_dict() or meta.get("size") != len(data)
                or meta.get("sha256") != hashlib.sha256(data).hexdigest()):
            self._remove(key)
            return None
        return data

    def store(self, key: EngineCacheKey, data: bytes) -> Path:
        """Atomically store ``data`` for ``key``: engine first, then the metadata that validates it."""
        self.root.mkdir(parents=True, exist_ok=True)
        ep = atomic_write_bytes(self.engine_path(key), data)
        meta = {"key": key.to_dict(), "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_bytes(self.meta_path(key), json.dumps(meta, indent=1, sort_keys=True).encode())
        return ep

    def get_or_build(self, key: EngineCacheKey, build: Callable[[], bytes]) -> tuple[bytes, bool]:
        """(engine bytes, was_cached). Calls ``build()`` and stores the result on a miss."""
        data = self.load(key)
        if data is not None:
            return data, True
        data = build()
        if not data:
            raise RuntimeError("engine build returned no data")
        self.store(key, bytes(data))
        return bytes(data), False

    def entries(self) -> list[dict]:
        out = []
        if not self.root.is_dir():
            return out
        for mp in sorted(self.root.glob("*.json")):
            try:
                meta = json.loads(mp.read_text())
            except (OSError, ValueError):
                continue
            meta["digest"] = mp.stem
            out.append(meta)
        return out

    def prune(self, keep: EngineCacheKey, same_model_only: bool = False) -> list[Path]:
        """Remove entries other than ``keep`` (optionally only those of the same model hash)."""
        removed = []
        for meta in self.entries():
            if meta["digest"] == keep.digest():
                continue
            if same_model_only and meta.get("key", {}).get("model_sha256") != keep.model_sha256:
                continue
            for suffix in (".engine", ".json"):
                p = self.root / f"{meta['digest']}{suffix}"
                if p.exists():
                    p.unlink()
                    removed.append(p)
        return removed

    def clean_temp(self, older_than_s: float = 3600.0) -> list[Path]:
        """Remove temp files left by interrupted writes (older than ``older_than_s``)."""
        removed = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for p in self.root.glob(".*.tmp"):
            try:
                if now - p.stat().st_mtime >= older_than_s:
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                pass
        return removed

    def _remove(self, key: EngineCacheKey) -> None:
        for p in (self.meta_path(key), self.engine_path(key)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
