"""Why ONNX Runtime's int8 (QDQ) export is no faster than fp32 on this CPU: a per-operator profile.

Runs the fp32 export and its int8 QDQ export of the same model (``bench/backends.py``'s random-weight
swin_micro at 512x1024 by default, or ``--checkpoint``) in ONNX Runtime sessions as the backend
builds them (``OnnxRuntimeBackend.session_options``: ORT_ENABLE_ALL, the same threads), with ORT's
profiler on, alternating the two sessions frame by frame so machine load hits both alike. From the
profiles: time per operator type after ORT's graph optimisation (the kernels that actually ran:
QLinearConv, MatMulIntegerToFloat, DynamicQuantizeLinear, QuantizeLinear/DequantizeLinear left
unfused, ...), the share of int8 time spent in operators still float, and the number of Q/DQ
nodes that survived fusion. Writes out/bench/ort_int8_profile.json and prints the table.

    python bench/ort_int8_profile.py [--size 512 1024] [--frames 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends import _cpu_isa, _cpu_name, build_checkpoint, calibration  # noqa: E402

from casseg_ros.export.parity import make_test_pattern  # noqa: E402
from casseg_ros.export.quantize import Int8Settings, quantize_onnx  # noqa: E402
from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.runtime import create_backend  # noqa: E402
from casseg_ros.runtime.base import CLASS_EMBEDDINGS_NAME, INPUT_NAME, physical_cpu_count  # noqa: E402
from casseg_ros.runtime.onnx_backend import resolve_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# kernels that compute in integer arithmetic (the rest of an int8 graph runs in float)
INTEGER_KERNELS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "ConvInteger",
                   "QGemm", "DynamicQuantizeMatMul", "QLinearAdd", "QLinearMul", "QLinearSoftmax"}
CONVERSIONS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def profiled_session(onnx_path: Path, num_threads: int, prefix: Path) -> ort.InferenceSession:
    """A session built by the backend's own options, with ORT's profiler writing under ``prefix``."""
    backend = create_backend("onnxruntime", onnx_path, input_size=None, num_threads=num_threads)
    options = backend.session_options()
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def op_times(profile: Path, skip_runs: int) -> tuple[dict[str, float], dict[str, int], int]:
    """({op type: microseconds per run}, {op type: nodes}, runs) from an ORT profile, without the
    first ``skip_runs`` runs (warm-up)."""
    events = json.loads(profile.read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if len(runs) <= skip_runs:
        raise ValueError(f"{profile}: {len(runs)} runs, need more than {skip_runs}")
    start = runs[skip_runs]["ts"]
    kept = len(runs) - skip_runs
    total: dict[str, float] = collections.defaultdict(float)
    nodes: dict[str, set] = collections.defaultdict(set)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            op = e.get("args", {}).get("op_name", "?")
            total[op] += e["dur"]
            nodes[op].add(e["name"])
    return ({op: t / kept for op, t in total.items()}, {op: len(n) for op, n in nodes.items()}, kept)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="swin_micro")
    p.add_argument("--decoder-dim", type=int, default=128)
    p.add_argument("--config")
    p.add_argument("--checkpoint")
    p.add_argument("--size", nargs=2, type=int, default=(512, 1024), metavar=("H", "W"))
    p.add_argument("--frames", type=int, default=5, help="profiled runs per session (after 2 warm-up runs)")
    p.add_argument("--threads", type=int, default=physical_cpu_count())
    p.add_argument("--calibration", default=str(REPO / "data" / "demo.mcap"))
    p.add_argument("--calibration-frames", type=int, default=8)
    p.add_argument("--out", default="out/bench/ort_int8_profile.json")
    args = p.parse_args()
    size, warmup = tuple(args.size), 2
    report: dict = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
                    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "machine": {"cpu": _cpu_name(), "isa": _cpu_isa(), "loadavg_start": os.getloadavg()},
                    "onnxruntime": ort.__version__, "size": list(size), "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="casseg_ort_profile_") as tmp:
        work = Path(tmp)
        ckpt, report["model"] = build_checkpoint(args, work)
        fp32_onnx, vocabulary = resolve_onnx(ckpt, size, 1, cache_dir=work / "onnx")
        frames, source = calibration(args, args.calibration_frames)
        int8_onnx = quantize_onnx(fp32_onnx, work / "int8.onnx", frames, source,
                                  Int8Settings(max_frames=args.calibration_frames))
        sessions = {"fp32": profiled_session(fp32_onnx, args.threads, work / "fp32"),
                    "int8": profiled_session(int8_onnx, args.threads, work / "int8")}
        feed = {INPUT_NAME: make_test_pattern(*size)[None],
                CLASS_EMBEDDINGS_NAME: np.ascontiguousarray(vocabulary.embeddings, dtype=np.float32)}
        wall: dict[str, list[float]] = {k: [] for k in sessions}
        for i in range(warmup + args.frames):  # alternating: load hits both alike
            for name, session in sessions.items():
                t0 = time.perf_counter()
                session.run(None, feed)
                if i >= warmup:
                    wall[name].append(1e3 * (time.perf_counter() - t0))
        profiles = {name: Path(session.end_profiling()) for name, session in sessions.items()}
        table = {}
        for name, path in profiles.items():
            per_op, node_count, runs = op_times(path, warmup)
            kernel_ms = sum(per_op.values()) / 1e3
            table[name] = {
                "median_wall_ms": round(float(np.median(wall[name])), 2), "kernel_ms_per_run": round(kernel_ms, 2),
                "runs": runs,
                "ops": {op: {"ms": round(t / 1e3, 3), "share": round(t / 1e3 / kernel_ms, 4),
                             "nodes": node_count[op]} for op, t in sorted(per_op.items(), key=lambda kv: -kv[1])},
            }
        int8_ops = table["int8"]["ops"]
        table["int8"]["integer_kernel_share"] = round(sum(v["share"] for k, v in int8_ops.items()
                                                          if k in INTEGER_KERNELS), 4)
        table["int8"]["conversion_share"] = round(sum(v["share"] for k, v in int8_ops.items() if k in CONVERSIONS), 4)
        table["int8"]["unfused_qdq_nodes"] = sum(v["nodes"] for k, v in int8_ops.items() if k in CONVERSIONS)
    report.update(table)
    report["machine"]["loadavg_end"] = os.getloadavg()
    atomic_write_text(Path(args.out), json.dumps(report, indent=2))
    for name in ("fp32", "int8"):
        t = table[name]
        print(f"\n{name}: median wall {t['median_wall_ms']} ms, kernels {t['kernel_ms_per_run']} ms per run")
        for op, v in list(t["ops"].items())[:14]:
            print(f"  {op:28s} {v['ms']:9.2f} ms  {100 * v['share']:5.1f} %  ({v['nodes']} nodes)")
    print(f"\nint8: integer kernels {100 * table['int8']['integer_kernel_share']:.1f} % of kernel time, "
          f"Q/DQ conversions {100 * table['int8']['conversion_share']:.1f} % ({table['int8']['unfused_qdq_nodes']} "
          f"nodes left after fusion)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
