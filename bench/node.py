"""End-to-end benchmark of the casseg_ros node over real DDS (camera, node, consumer: 3 processes).

Writes out/bench/node.json:
- e2e_over_forward: median (camera stamp -> mask received in this process) ÷ median model
  forward (the node's own backend.infer timing), with the camera slower than the model, so the
  ratio is the node's whole overhead: DDS both ways, decoding, post-processing, publishing.
  Goal <= 1.10.
- p99_over_model: with a 30 Hz camera and a model slower than 30 Hz, p99 latency ÷ median
  forward. Latest-frame-wins bounds it by (forward + one camera period + overhead) / forward.
  Goal <= 2.0.
- max_backlog: in that run, the most frames still buffered in the node behind the frame the
  worker started on (the node's `max_backlog` diagnostic, measured in the buffer at each take; a
  FIFO queue would grow by one per frame the model cannot keep up with). Goal 0. Frames the
  model could not keep up with are dropped instead: `dropped_in_node` in the details.
- host_overhead_ms: median per-frame node time excluding the forward pass (decode, mask,
  confidence, overlay, scene graph, markers, all publishing) at 512x1024 with every output
  subscribed — the node's `host_overhead_p50_ms` diagnostic in the 30 Hz run. Goal <= 10.
  host_overhead_cpu_ms: the same frames' host work as CPU time of the worker thread (wall time
  on a shared, loaded machine also counts time other processes held the core).

The model is a randomly initialised swin_nano ContextSegmentor (19 classes) unless --model is
given; on a CPU it is slower than 30 Hz at 512x1024, which is the regime the slow-model goals are
about. Usage:
    python bench/node.py [--model PATH] [--device cpu] [--seconds 20] [--out out/bench/node.json]
Run it with the loopback profile (the script sets FASTDDS_DEFAULT_PROFILES_FILE and a random
ROS_DOMAIN_ID for its children and itself if they are not set).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CAMERA = REPO / "test" / "ros_helpers" / "camera.py"
HEIGHT, WIDTH = 512, 1024


def _ros_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_loopback.xml"))
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 232)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


ENV = _ros_env()
os.environ.update({k: ENV[k] for k in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DOMAIN_ID")})

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

sys.path.insert(0, str(REPO))
from casseg_msgs.msg import SceneGraph  # noqa: E402
from casseg_ros.fileio import atomic_write_text  # noqa: E402


def make_random_checkpoint(folder: Path) -> Path:
    import torch

    from casseg_ros.model import ContextSegmentor, ModelConfig
    from casseg_ros.model.checkpoint import save_checkpoint
    from casseg_ros.text import Vocabulary

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    names = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
             "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
             "motorcycle", "bicycle"]
    emb = rng.standard_normal((len(names), 384)).astype(np.float32)
    vocab = Vocabulary(names=names, embeddings=emb / np.linalg.norm(emb, axis=1, keepdims=True))
    model = ContextSegmentor(ModelConfig(backbone="swin_nano", decoder_dim=64, fusion_heads=2,
                                         img_size=(HEIGHT, WIDTH), drop_path_rate=0.0), vocab).eval()
    return save_checkpoint(folder / "bench_swin_nano.safetensors", model)


class Consumer:
    """This process: receives every output, timestamps the masks on arrival, keeps diagnostics."""

    def __init__(self, node_fqn: str):
        self.node = rclpy.create_node("bench_consumer")
        self.lock = threading.Lock()
        self.latency_s: list[float] = []
        self.diagnostics: list[dict[str, str]] = []
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, f"{node_fqn}/mask", self._on_mask, qos)
        # Subscribed so the node does all its work (overlay and markers are skipped without subscribers).
        self.node.create_subscription(Image, f"{node_fqn}/overlay", lambda m: None, qos)
        self.node.create_subscription(SceneGraph, f"{node_fqn}/scene_graph", lambda m: None, qos)
        self.node.create_subscription(MarkerArray, f"{node_fqn}/scene_graph/markers", lambda m: None, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics(node_fqn), 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_mask(self, msg: Image) -> None:
        received_ns = time.time_ns()  # same host clock as the camera's stamps
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.latency_s.append((received_ns - stamp_ns) / 1e9)

    def _on_diagnostics(self, fqn: str):
        def handle(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.startswith(fqn + ":"):
                    with self.lock:
                        self.diagnostics.append({kv.key: kv.value for kv in status.values})
        return handle

    def reset(self) -> None:
        with self.lock:
            self.latency_s.clear()

    def last_diagnostics(self) -> dict[str, str]:
        with self.lock:
            return dict(self.diagnostics[-1]) if self.diagnostics else {}

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()


def run_phase(args, checkpoint: Path, rate_hz: float, seconds: float, name: str) -> dict:
    """Fresh node + camera at `rate_hz` for `seconds`; returns latencies and the node's final stats."""
    ns = f"/bench_{name}_{os.getpid()}"
    fqn = f"{ns}/casseg_ros"
    camera_topic = f"{ns}/camera/image_raw"
    logs = tempfile.TemporaryDirectory(prefix="bench_node_")
    node_log = open(Path(logs.name) / "node.log", "w")
    node = subprocess.Popen(
        [sys.executable, "-m", "casseg_ros.ros.segment_node", "--ros-args", "-r", f"__ns:={ns}",
         "-r", f"image:={camera_topic}", "-p", f"model_path:={checkpoint}", "-p", f"device:={args.device}",
         "-p", f"backend:={args.backend}", "-p", f"input_height:={HEIGHT}", "-p", f"input_width:={WIDTH}",
         "-p", "min_instance_area:=64"],
        env=ENV, cwd=REPO, stdout=node_log, stderr=subprocess.STDOUT)
    consumer = Consumer(fqn)
    try:
        deadline = time.monotonic() + 300
        while "active: listening" not in (Path(logs.name) / "node.log").read_text():
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("node did not start:\n" + (Path(logs.name) / "node.log").read_text())
            time.sleep(0.2)
        warmup = min(3.0, seconds / 4)
        camera = subprocess.Popen(
            [sys.executable, str(CAMERA), "--topic", camera_topic, "--width", str(WIDTH), "--height", str(HEIGHT),
             "--rate", str(rate_hz), "--duration", str(seconds + warmup), "--reliability", "best_effort"],
            env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        time.sleep(warmup + 1.0)  # camera start-up, DDS matching, first frames (allocations)
        consumer.reset()
        camera.wait(timeout=seconds + 120)
        time.sleep(2.5)  # last masks and a diagnostics message that includes them
        with consumer.lock:
            latency = list(consumer.latency_s)
        diag = consumer.last_diagnostics()
    finally:
        consumer.close()
        node.terminate()
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
        node_log.close()
        logs.cleanup()
    if len(latency) < 5 or not diag:
        raise RuntimeError(f"phase {name}: only {len(latency)} masks received, diagnostics {bool(diag)}")
    return {"latency_s": latency, "diagnostics": diag, "camera_rate_hz": rate_hz,
            "camera_seconds": seconds + warmup}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint; default: a random swin_nano model")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per phase")
    parser.add_argument("--out", default=str(REPO / "out" / "bench" / "node.json"))
    args = parser.parse_args()

    rclpy.init()
    with tempfile.TemporaryDirectory(prefix="bench_model_") as tmp:
        checkpoint = Path(args.model) if args.model else make_random_checkpoint(Path(tmp))
        # Slow-model regime first: a 30 Hz camera; also tells us the forward time.
        saturated = run_phase(args, checkpoint, 30.0, args.seconds, "camera30hz")
        forward_ms = float(saturated["diagnostics"]["forward_p50_ms"])
        # Unsaturated: frames arrive at most every 2.5 forward passes, so none waits for the worker.
        idle_rate = min(30.0, 1000.0 / (2.5 * forward_ms))
        unsaturated = run_phase(args, checkpoint, idle_rate, max(args.seconds, 12 * 2.5 * forward_ms / 1000), "idle")
    rclpy.shutdown()

    sat_diag, idle_diag = saturated["diagnostics"], unsaturated["diagnostics"]
    idle_forward_ms = float(idle_diag["forward_p50_ms"])
    sat_latency_ms = np.asarray(saturated["latency_s"]) * 1e3
    idle_latency_ms = np.asarray(unsaturated["latency_s"]) * 1e3
    result = {
        "e2e_over_forward": float(np.median(idle_latency_ms) / idle_forward_ms),
        "p99_over_model": float(np.percentile(sat_latency_ms, 99) / forward_ms),
        "max_backlog": int(sat_diag["max_backlog"]),
        "host_overhead_ms": float(sat_diag["host_overhead_p50_ms"]),
        # Same frames, CPU time of the worker thread: what the host work costs without the time
        # other processes on a shared machine held the core.
        "host_overhead_cpu_ms": float(sat_diag["host_cpu_p50_ms"]),
        "goals": {"e2e_over_forward": "<= 1.10", "p99_over_model": "<= 2.0", "max_backlog": "== 0",
                  "host_overhead_ms": "<= 10"},
        "details": {
            "image_size": [HEIGHT, WIDTH],
            "model": str(args.model or "random swin_nano (decoder_dim 64, 19 classes)"),
            "backend": sat_diag.get("backend"), "device": sat_diag.get("device"),
            "saturated": {
                "camera_rate_hz": 30.0, "masks": int(sat_latency_ms.size),
                "forward_p50_ms": forward_ms,
                "latency_p50_ms": float(np.median(sat_latency_ms)),
                "latency_p99_ms": float(np.percentile(sat_latency_ms, 99)),
                "host_overhead_mean_ms": float(sat_diag["host_overhead_mean_ms"]),
                "host_overhead_p99_ms": float(sat_diag["host_overhead_p99_ms"]),
                "forward_p99_ms": float(sat_diag["forward_p99_ms"]),
                # Whole run (the node's own rates are over its last 5 s, which end after the camera).
                "received_rate_hz": int(sat_diag["frames_received"]) / saturated["camera_seconds"],
                "processed_rate_hz": int(sat_diag["frames_processed"]) / saturated["camera_seconds"],
                "frames_received": int(sat_diag["frames_received"]),
                "dropped_in_node": int(sat_diag["dropped_in_node"]),
                "lost_in_transport": int(sat_diag["lost_in_transport"]),
            },
            "unsaturated": {
                "camera_rate_hz": unsaturated["camera_rate_hz"], "masks": int(idle_latency_ms.size),
                "forward_p50_ms": idle_forward_ms,
                "latency_p50_ms": float(np.median(idle_latency_ms)),
                "host_overhead_p50_ms": float(idle_diag["host_overhead_p50_ms"]),
                "dropped_in_node": int(idle_diag["dropped_in_node"]),
            },
            "host": {"platform": platform.platform(), "cpus": os.cpu_count(),
                     "load_avg_1m": os.getloadavg()[0]},
        },
    }
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("e2e_over_forward", "p99_over_model", "max_backlog",
                                            "host_overhead_ms", "host_overhead_cpu_ms")}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
