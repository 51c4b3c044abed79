"""OpenVINO: does a dynamic class count K cost latency? Static K (the backend default, the model
reshaped to the vocabulary's K) against dynamic K (``static_classes=False``), alternating which
runs first in each round (round-robin in a fixed order favoured whichever ran second).

    python bench/openvino_classes.py [ROUNDS=30]        (demo weights, 512x1024, 2 threads)
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from casseg_ros.export.parity import make_test_pattern  # noqa: E402
from casseg_ros.runtime import create_backend  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    img = make_test_pattern(512, 1024)[None]
    with tempfile.TemporaryDirectory(prefix="casseg_bench_ov_") as tmp:
        bs = {k: create_backend("openvino", REPO / "models" / "casseg_demo.safetensors", input_size=(512, 1024),
                                num_threads=2, onnx_cache_dir=Path(tmp) / "onnx", openvino_cache_dir=Path(tmp) / "ov",
                                static_classes=v).load() for k, v in (("static", True), ("dynamic", False))}
        for b in bs.values():
            b.warmup(3)
        ts = {k: [] for k in bs}
        for r in range(rounds):
            for k, b in (bs.items() if r % 2 else reversed(list(bs.items()))):
                t0 = time.perf_counter()
                b.infer(img)
                ts[k].append(time.perf_counter() - t0)
    for k, v in ts.items():
        print(k, "median", round(statistics.median(v) * 1e3, 1), "min", round(min(v) * 1e3, 1), "ms")


if __name__ == "__main__":
    main()
