"""``casseg-export``: checkpoint -> static-shape ONNX (pre/post-processing in the graph) -> validated.

    casseg-export models/demo.safetensors -o out/demo.onnx --input-size 512 1024 [--image img.png]
                  [--resize-in-graph]
                  [--int8 --calibration data/demo.mcap [--calibration-frames 32]]
                  [--tensorrt --precision fp16 --engine-cache DIR]

Steps: load the checkpoint; export ``model.export_module()`` (uint8 NHWC in; class ids, confidence,
class scores, adjacency out) with opset >= 17 and a static shape through ``export_onnx``
(deterministic bytes, atomic write); ``onnx.checker.check_model``; run ONNX Runtime and PyTorch on
the same image (``--image``, or a generated test pattern) and report the % of equal class pixels
and the max abs differences; fail (exit 1) when they disagree beyond ``--min-equal`` /
``--max-diff``. ``--tensorrt`` then builds (or finds in the cache) the TensorRT engine.
``--resize-in-graph``: the graph takes images of any size (dynamic height and width) and resizes
them to ``--input-size`` itself; the outputs come at the image's size (run it with the backends'
``resize_in_graph=True``). Its parity check runs at the image's own size (the generated pattern is
1.5x the model size); ``--int8`` calibrates on the frames at their own size.
Exit status: 0 ok, 1 validation failed, 2 bad arguments / missing backend (message, no traceback).

The graph and its metadata come from ``casseg_ros.runtime.model_export``, the parity check from
``casseg_ros.export.parity`` (both sides through the backends, the path the node uses). The CLI sits
above the runtime layer because ``--calibration`` reads camera frames from a rosbag2 with the node's
decoder (``casseg_ros.ros.calibration_frames``); the runtime package itself stays ROS-free.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import onnx

from casseg_ros.ros.calibration_frames import BagError, calibration_frames
from casseg_ros.export.parity import compare_onnx, compare_onnx_with_torch, load_image, make_test_pattern
from casseg_ros.export.quantize import Int8Settings, quantize_onnx
from casseg_ros.fileio import atomic_write_bytes
from casseg_ros.parameter_rules import checked_input_size, input_size_argument, upgrade_input_size_syntax
from casseg_ros.runtime.base import BackendUnavailable
from casseg_ros.runtime.engine_cache import file_sha256
from casseg_ros.runtime.model_export import META_CALIBRATION, export_checkpoint, onnx_metadata
from casseg_ros.runtime.tensorrt_backend import TensorRTBackend, tensorrt_missing

DEFAULT_OUT = Path("out/export")  # relative to the working directory


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="casseg-export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="model checkpoint (.safetensors)")
    p.add_argument("-o", "--output", help="ONNX path (default: out/export/<checkpoint stem>-<H>x<W>.onnx, like "
                                          "the other tools' out/ folders: never beside the checkpoint, which may be "
                                          "the repository's models/ or an installed share/ folder)")
    input_size_argument(p, help="height and width the graph runs at (default 512 1024)")
    p.add_argument("--resize-in-graph", action="store_true",
                   help="images of any size in, resized to --input-size inside the graph; outputs at the image size")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"), default="auto")
    p.add_argument("--image", help="image to compare ONNX Runtime with PyTorch on (default: a test pattern)")
    p.add_argument("--min-equal", type=float, default=99.9, help="min %% of equal class pixels (default 99.9)")
    p.add_argument("--max-diff", type=float, default=1e-3, help="max abs confidence/score difference (default 1e-3)")
    p.add_argument("--int8", action="store_true", help="also write a static int8 (QDQ) model, <output stem>-int8.onnx")
    p.add_argument("--calibration", help="--int8 calibration frames: a bag (camera topic) or a folder of images")
    p.add_argument("--calibration-topic", help="image topic of the calibration bag (default: its only camera topic)")
    p.add_argument("--calibration-frames", type=int, default=32, help="at most this many calibration frames (32)")
    p.add_argument("--int8-min-equal", type=float, default=95.0,
                   help="min %% of class pixels of the int8 model equal to fp32 on --image (default 95)")
    p.add_argument("--tensorrt", action="store_true", help="also build the TensorRT engine (needs TensorRT + GPU)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp16",
                   help="TensorRT precision of the fp32 graph's engine (with --int8 the engine is int8)")
    p.add_argument("--engine-cache", help="TensorRT engine cache dir (default ~/.cache/casseg_ros/engines)")
    p.add_argument("--workspace-gib", type=float, default=4.0, help="TensorRT builder workspace limit")
    p.add_argument("--json", help="also write the report as JSON to this path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(upgrade_input_size_syntax(sys.argv[1:] if argv is None else argv, parser.prog))
    args.input_size = checked_input_size(parser, args.input_size or (512, 1024), native_allowed=False)
    try:
        return _main(args)
    except BackendUnavailable as exc:
        print(f"casseg-export: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, BagError) as exc:
        print(f"casseg-export: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - includes CheckpointError; keep CLI output to one line
        print(f"casseg-export: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def _main(args) -> int:
    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    h, w = args.input_size
    if args.tensorrt:  # fail before the (slow) export when TensorRT cannot run here
        missing = tensorrt_missing()
        if missing:
            raise BackendUnavailable(missing + " (drop --tensorrt to export ONNX only)")
    if args.int8 and not args.calibration:
        raise ValueError("--int8 needs --calibration (a bag or a folder of images)")
    rig = args.resize_in_graph
    out = Path(args.output) if args.output else DEFAULT_OUT / f"{ckpt.stem}-{h}x{w}{'-rig' if rig else ''}.onnx"
    # a resize-in-graph export is checked at a size other than the model's, so that its resize runs
    image = load_image(args.image) if args.image else make_test_pattern(*((h + h // 2, w + w // 2) if rig else (h, w)))
    if args.int8:  # open the calibration data before the (slow) export: a bad bag fails fast
        frames, source = calibration_frames(args.calibration, args.calibration_topic)
    path, model = export_checkpoint(ckpt, out, (h, w), args.batch_size, args.opset, args.exporter,
                                    resize_in_graph=rig)
    onnx.checker.check_model(str(path), full_check=True)
    report: dict[str, Any] = {"onnx": str(path), "sha256": file_sha256(path), "opset": args.opset,
                              "input_shape": [args.batch_size, -1, -1, 3] if rig else [args.batch_size, h, w, 3],
                              **({"model_size": [h, w]} if rig else {}),
                              "image": args.image or "generated test pattern", "checker": "ok"}
    report.update(compare_onnx_with_torch(model, path, image))
    ok = (report["equal_pixels_percent"] >= args.min_equal
          and max(report["max_abs_confidence"], report["max_abs_class_scores"],
                  report["max_abs_adjacency"]) <= args.max_diff)
    report["parity"] = "ok" if ok else "FAILED"
    engine_onnx, engine_precision = path, args.precision
    if ok and args.int8:
        int8_path = quantize_onnx(path, out.with_name(f"{out.stem}-int8.onnx"), frames, source,
                                  Int8Settings(max_frames=args.calibration_frames))
        equal = compare_onnx(path, int8_path, image)
        report["int8"] = {"onnx": str(int8_path), "sha256": file_sha256(int8_path),
                          "calibration": json.loads(onnx_metadata(int8_path)[META_CALIBRATION]),
                          "equal_pixels_percent_vs_fp32": equal,
                          "parity": "ok" if equal >= args.int8_min_equal else "FAILED"}
        ok = equal >= args.int8_min_equal
        engine_onnx, engine_precision = int8_path, "int8"
    if ok and args.tensorrt:
        be = TensorRTBackend(engine_onnx, device="cuda", input_size=(h, w), precision=engine_precision,
                             batch_size=args.batch_size, engine_cache_dir=args.engine_cache,
                             workspace_bytes=int(args.workspace_gib * (1 << 30)), resize_in_graph=rig)
        be.load()
        be.warmup(2)
        report["tensorrt"] = {"engine": str(be.engine_cache.engine_path(be.cache_key)),
                              "cached": be.engine_was_cached, "precision": engine_precision}
    for k, v in report.items():
        print(f"{k}: {v}")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
    if report["parity"] != "ok":
        print(f"casseg-export: ONNX and PyTorch disagree (need >= {args.min_equal}% equal pixels and "
              f"max abs diff <= {args.max_diff})", file=sys.stderr)
        return 1
    if not ok:
        print(f"casseg-export: the int8 model agrees with fp32 on {report['int8']['equal_pixels_percent_vs_fp32']:.2f}"
              f"% of the pixels (need >= {args.int8_min_equal}%)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
