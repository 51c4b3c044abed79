"""``casseg-export``: checkpoint -> static-shape ONNX (pre/post-processing in the graph) -> validated.

    casseg-export models/demo.safetensors -o out/demo.onnx --input-size 512 1024 [--image img.png]
                  [--tensorrt --precision fp16 --engine-cache DIR]

Steps: load the checkpoint; export ``model.export_module()`` (uint8 NHWC in; class ids, confidence,
class scores, adjacency out) with opset >= 17 and a static shape through ``export_onnx``
(deterministic bytes, atomic write); ``onnx.checker.check_model``; run ONNX Runtime and PyTorch on
the same image (``--image``, or a generated test pattern) and report the % of equal class pixels
and the max abs differences; fail (exit 1) when they disagree beyond ``--min-equal`` /
``--max-diff``. ``--tensorrt`` then builds (or finds in the cache) the TensorRT engine.
Exit status: 0 ok, 1 validation failed, 2 bad arguments / missing backend (message, no traceback).

The ONNX carries the vocabulary (names, palette, descriptions, embeddings) and the model config in
``metadata_props`` so the onnxruntime/tensorrt backends can run from the .onnx alone.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import INPUT_NAME, OUTPUT_NAMES, BackendUnavailable
from .engine_cache import file_sha256

EXPORT_VERSION = "1"  # bump when the exported graph or its metadata layout changes (cache key)
META_VOCAB = "casseg.vocabulary"
META_CONFIG = "casseg.model_config"
META_CHECKPOINT = "casseg.checkpoint_sha256"
META_INPUT = "casseg.input_shape"
META_KIND = "casseg.kind"


def _vocabulary_to_json(vocab) -> str:
    emb = np.ascontiguousarray(np.asarray(vocab.embeddings, dtype="<f4"))
    palette = getattr(vocab, "palette", None)
    return json.dumps({
        "names": list(vocab.names),
        "descriptions": list(vocab.descriptions) if getattr(vocab, "descriptions", None) else None,
        "provider": getattr(vocab, "provider", "unknown"),
        "palette": np.asarray(palette).astype(int).tolist() if palette is not None else None,
        "embeddings_shape": list(emb.shape),
        "embeddings_f32le_b64": base64.b64encode(emb.tobytes()).decode("ascii"),
    }, sort_keys=True, separators=(",", ":"))


def vocabulary_from_json(text: str):
    from casseg_ros.text import Vocabulary

    d = json.loads(text)
    emb = np.frombuffer(base64.b64decode(d["embeddings_f32le_b64"]), dtype="<f4").reshape(d["embeddings_shape"])
    kwargs: dict[str, Any] = dict(names=d["names"], embeddings=emb.astype(np.float32), descriptions=d.get("descriptions"),
                                  provider=d.get("provider") or "onnx")
    if d.get("palette") is not None:
        kwargs["palette"] = np.asarray(d["palette"], dtype=np.uint8)
    return Vocabulary(**kwargs)


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def export_model(model, output: str | os.PathLike, input_size: Sequence[int] = (512, 1024), batch_size: int = 1,
                 opset: int = 17, exporter: str = "auto", logits: bool = False,
                 checkpoint_sha256: str | None = None) -> Path:
    """Export a ``ContextSegmentor`` (static shape (B,H,W,3) uint8) to ``output``; returns the path.

    ``logits=True`` exports the ``LogitsPipeline`` (raw logits output) used for parity checks.
    """
    import torch

    from casseg_ros.model import LogitsPipeline

    from .onnx_export import export_onnx

    h, w = int(input_size[0]), int(input_size[1])
    module = LogitsPipeline(model) if logits else model.export_module()
    outputs = ["logits"] if logits else list(OUTPUT_NAMES)
    example = torch.zeros((int(batch_size), h, w, 3), dtype=torch.uint8)
    metadata = {
        META_VOCAB: _vocabulary_to_json(model.vocabulary),
        META_CONFIG: json.dumps(model.config.to_dict(), sort_keys=True),
        META_INPUT: json.dumps([int(batch_size), h, w, 3]),
        META_KIND: "logits" if logits else "segmentation",
    }
    if checkpoint_sha256:
        metadata[META_CHECKPOINT] = checkpoint_sha256
    return export_onnx(module, (example,), output, [INPUT_NAME], outputs, opset=opset, exporter=exporter,
                       metadata=metadata)


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, input_size=(512, 1024),
                      batch_size: int = 1, opset: int = 17, exporter: str = "auto", logits: bool = False):
    """Load ``checkpoint`` and export it; returns (onnx path, model)."""
    from casseg_ros.model.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint)
    path = export_model(model, output, input_size, batch_size, opset, exporter, logits,
                        checkpoint_sha256=file_sha256(checkpoint))
    return path, model


def make_test_pattern(h: int, w: int) -> np.ndarray:
    """Deterministic structured RGB test image (gradients, blocks, stripes) when no image is given."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * xx / max(w - 1, 1), 255 * yy / max(h - 1, 1),
                    127.5 + 127.5 * np.sin(xx / 9.0) * np.cos(yy / 13.0)], axis=-1)
    img[(yy // max(h // 4, 1) + xx // max(w // 8, 1)) % 2 == 0] *= 0.5
    img[h // 3 : h // 2, w // 5 : w // 2] = (200, 30, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def load_image(path: str | os.PathLike) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def compare_onnx_with_torch(model, onnx_path: str | os.PathLike, image_rgb: np.ndarray,
                            providers: Sequence[str] = ("CPUExecutionProvider",)) -> dict[str, float]:
    """Run the export module in PyTorch and the ONNX in ONNX Runtime on ``image_rgb`` (resized to
    the ONNX input size). Returns equal-pixel % and max abs differences."""
    import cv2
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=list(providers))
    inp = sess.get_inputs()[0]
    b, h, w, _ = inp.shape
    if image_rgb.shape[:2] != (h, w):
        image_rgb = cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    batch = np.ascontiguousarray(np.repeat(image_rgb[None], b, axis=0))
    onnx_out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {inp.name: batch})))
    with torch.inference_mode():
        ref = [t.float().numpy() if t.is_floating_point() else t.numpy()
               for t in model.export_module().eval()(torch.from_numpy(batch))]
    ref_d = dict(zip(OUTPUT_NAMES, ref))
    eq = float((onnx_out["class_ids"] == ref_d["class_ids"]).mean() * 100.0)
    return {
        "equal_pixels_percent": eq,
        "max_abs_confidence": float(np.abs(onnx_out["confidence"] - ref_d["confidence"]).max()),
        "max_abs_class_scores": float(np.abs(onnx_out["class_scores"] - ref_d["class_scores"]).max()),
        "max_abs_adjacency": float(np.abs(onnx_out["adjacency"] - ref_d["adjacency"]).max()),
    }


def sha256_bytes_of(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="casseg-export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="model checkpoint (.safetensors)")
    p.add_argument("-o", "--output", help="ONNX path (default: <checkpoint stem>-<H>x<W>.onnx next to it)")
    p.add_argument("--input-size", nargs=2, type=int, default=(512, 1024), metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"), default="auto")
    p.add_argument("--image", help="image to compare ONNX Runtime with PyTorch on (default: a test pattern)")
    p.add_argument("--min-equal", type=float, default=99.9, help="min %% of equal class pixels (default 99.9)")
    p.add_argument("--max-diff", type=float, default=1e-3, help="max abs confidence/score difference (default 1e-3)")
    p.add_argument("--tensorrt", action="store_true", help="also build the TensorRT engine (needs TensorRT + GPU)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp16", help="TensorRT precision")
    p.add_argument("--engine-cache", help="TensorRT engine cache dir (default ~/.cache/casseg_ros/engines)")
    p.add_argument("--workspace-gib", type=float, default=4.0, help="TensorRT builder workspace limit")
    p.add_argument("--json", help="also write the report as JSON to this path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except BackendUnavailable as exc:
        print(f"casseg-export: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"casseg-export: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - includes CheckpointError; keep CLI output to one line
        print(f"casseg-export: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def _main(args) -> int:
    import onnx

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    h, w = args.input_size
    if args.tensorrt:  # fail before the (slow) export when TensorRT cannot run here
        from .tensorrt_backend import tensorrt_missing

        missing = tensorrt_missing()
        if missing:
            raise BackendUnavailable(missing + " (drop --tensorrt to export ONNX only)")
    out = Path(args.output) if args.output else ckpt.with_name(f"{ckpt.stem}-{h}x{w}.onnx")
    image = load_image(args.image) if args.image else make_test_pattern(h, w)
    path, model = export_checkpoint(ckpt, out, (h, w), args.batch_size, args.opset, args.exporter)
    onnx.checker.check_model(str(path), full_check=True)
    report: dict[str, Any] = {"onnx": str(path), "sha256": sha256_bytes_of(path), "opset": args.opset,
                              "input_shape": [args.batch_size, h, w, 3],
                              "image": args.image or "generated test pattern", "checker": "ok"}
    report.update(compare_onnx_with_torch(model, path, image))
    ok = (report["equal_pixels_percent"] >= args.min_equal
          and max(report["max_abs_confidence"], report["max_abs_class_scores"],
                  report["max_abs_adjacency"]) <= args.max_diff)
    report["parity"] = "ok" if ok else "FAILED"
    if ok and args.tensorrt:
        from .tensorrt_backend import TensorRTBackend

        be = TensorRTBackend(path, device="cuda", input_size=(h, w), precision=args.precision,
                             batch_size=args.batch_size, engine_cache_dir=args.engine_cache,
                             workspace_bytes=int(args.workspace_gib * (1 << 30)))
        be.load()
        be.warmup(2)
        report["tensorrt"] = {"engine": str(be.engine_cache.engine_path(be.cache_key)),
                              "cached": be.engine_was_cached, "precision": args.precision}
    for k, v in report.items():
        print(f"{k}: {v}")
    if args.json:
        from casseg_ros.fileio import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
    if not ok:
        print(f"casseg-export: ONNX and PyTorch disagree (need >= {args.min_equal}% equal pixels and "
              f"max abs diff <= {args.max_diff})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
