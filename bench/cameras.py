"""Several cameras: one 4-camera node vs four 1-camera nodes, same model and CPU budget.

    python bench/cameras.py [--model PATH] [--cameras 4] [--rate 10] [--seconds 30] [--out out/bench/cameras.json]

Both set-ups get the same cameras (camera processes at --rate Hz, 256x128 rgb8, the demo
recording's size) and the same cores: the one node may use every core of this process's affinity
mask, each of the N single-camera nodes is pinned (taskset) to its share of them, so the total CPU
budget is equal. Every node runs the same backend (torch, the model's native input size). This
process subscribes to every mask and measures, per camera, the processed rate and the camera
stamp -> mask received latency.

Keys of out/bench/cameras.json (goals from the issue):
- throughput_ratio: masks/s of the one node ÷ masks/s of the N nodes (goal >= 1.2)
- rss_ratio: RSS of the one node's process ÷ the N nodes' RSS summed (goal <= 0.4)
- fairness: slowest camera's mask rate ÷ fastest's, one node (goal >= 0.8)
- vocab_swap_s: ~/set_vocabulary round trip (text embedding with the checkpoint's provider + swap),
  measured on the one node while the cameras stream; vocab_swap_max_gap_s: the longest gap between
  two masks of one camera around the swap
- per set-up: per-camera rate and p50/p99 latency, aggregate rate, RSS, load average
Processes are started, made ready and stopped with casseg_ros.processes.children / readiness on loopback
DDS in a private domain.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's casseg_ros, also without an install

from casseg_msgs.srv import SetVocabulary  # noqa: E402
from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.processes.children import ChildProcesses, loopback_env, node_command, random_domain_id  # noqa: E402
from casseg_ros.processes.readiness import GraphWatcher, wait_for  # noqa: E402
from casseg_ros.replay.live.session import start_node  # noqa: E402
from casseg_ros.resources import DEMO_MODEL, resolve_data_path  # noqa: E402

CAMERA = REPO / "test" / "ros_helpers" / "camera.py"
HEIGHT, WIDTH = 128, 256
SWAP_NAMES = ["sky", "building", "vegetation", "street", "sidewalk", "ocean", "pedestrian", "automobile", "boat"]


class MaskClock:
    """Receive time and stamp of every mask on the given topics (this process's own rclpy node)."""

    def __init__(self, topics: dict[str, str]):
        self.node = rclpy.create_node("bench_cameras_consumer")
        self.lock = threading.Lock()
        self.seen: dict[str, list[tuple[int, int]]] = {camera: [] for camera in topics}  # (receive ns, stamp ns)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=20, reliability=ReliabilityPolicy.RELIABLE)
        for camera, topic in topics.items():
            self.node.create_subscription(Image, topic, lambda msg, c=camera: self._on_mask(c, msg), qos)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_mask(self, camera: str, msg: Image) -> None:
        now = time.time_ns()
        with self.lock:
            self.seen[camera].append((now, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec))

    def stats(self, start_ns: int, end_ns: int) -> dict[str, dict[str, float]]:
        out = {}
        with self.lock:
            for camera, events in self.seen.items():
                inside = [(r, s) for r, s in events if start_ns <= r <= end_ns]
                latency = np.array([(r - s) / 1e6 for r, s in inside]) if inside else np.zeros(0)
                out[camera] = {"masks": len(inside), "rate_hz": len(inside) / ((end_ns - start_ns) / 1e9),
                               "latency_p50_ms": float(np.percentile(latency, 50)) if latency.size else None,
                               "latency_p99_ms": float(np.percentile(latency, 99)) if latency.size else None}
        return out

    def max_gap_s(self, start_ns: int, end_ns: int) -> float:
        with self.lock:
            gaps = []
            for events in self.seen.values():
                times = sorted(r for r, _ in events if start_ns <= r <= end_ns)
                gaps += list(np.diff(times) / 1e9)
        return float(max(gaps)) if gaps else float("nan")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def run_setup(args, domain: int, cameras: list[str], nodes: list[tuple[str, list[str], list[int]]],
              swap: bool, logs: Path) -> dict:
    """`nodes`: (node name, its cameras, the cores it may use). Starts nodes, then cameras, measures."""
    env = loopback_env(domain, {"PYTHONPATH": str(REPO)})  # children import this checkout
    with ChildProcesses(logs, env, cwd=REPO) as children, GraphWatcher(domain, env, name="bench_cameras_graph") as graph:
        node_procs = {}
        for name, node_cameras, cores in nodes:
            argv = node_command(args.model, "/unused", node_name=name, params={
                "cameras": node_cameras, "max_batch": len(node_cameras), "qos_reliability": "reliable"})
            node_procs[name] = start_node(children, graph, ["taskset", "-c", ",".join(map(str, cores)), *argv],
                                          f"/{name}", timeout=180, name=name)
        topics = {camera: f"/{name}/{camera}/mask" for name, node_cameras, _ in nodes for camera in node_cameras}
        clock = MaskClock(topics)
        try:
            for camera in cameras:
                children.start(f"camera_{camera}", [sys.executable, str(CAMERA), "--topic", f"/{camera}/image",
                                                    "--duration", str(args.seconds + 5), "--rate", str(args.rate),
                                                    "--wait-subscribers", "90",
                                                    "--height", str(HEIGHT), "--width", str(WIDTH)])
            wait_for(lambda: all(clock.seen[c] for c in cameras), 120, "a mask from every camera",
                     lambda: children.check_alive(*children.children))
            start = time.time_ns()
            swap_result = None
            if swap:  # half-way through: the vocabulary service while every camera streams
                time.sleep(args.seconds / 2)
                swap_result = swap_vocabulary(clock.node, f"/{nodes[0][0]}/set_vocabulary")
            time.sleep(max(0.0, args.seconds - (time.time_ns() - start) / 1e9))
            end = time.time_ns()
            rss = {name: tree_rss(proc.pid) for name, proc in node_procs.items()}
            per_camera = clock.stats(start, end)
            result = {"per_camera": per_camera, "masks_per_s": sum(c["rate_hz"] for c in per_camera.values()),
                      "rss_bytes": sum(rss.values()), "rss_per_node": rss, "load_average": os.getloadavg()}
            if swap_result is not None:
                t0, t1, response = swap_result
                result.update(vocab_swap_s=(t1 - t0) / 1e9, vocab_swap_ok=response.success,
                              vocab_swap_message=response.message,
                              vocab_swap_max_gap_s=clock.max_gap_s(t0 - 2 * 10**9, t1 + 2 * 10**9))
            return result
        finally:
            clock.close()


def swap_vocabulary(node, service: str) -> tuple[int, int, SetVocabulary.Response]:
    client = node.create_client(SetVocabulary, service)
    if not client.wait_for_service(timeout_sec=30):
        raise RuntimeError(f"{service} not available")
    request = SetVocabulary.Request(class_names=SWAP_NAMES)
    t0 = time.time_ns()
    future = client.call_async(request)
    wait_for(future.done, 120, f"{service} to answer")
    return t0, time.time_ns(), future.result()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help=f"checkpoint (default: the installed {DEMO_MODEL})")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=Path("out/bench/cameras.json"))
    args = p.parse_args(argv)
    args.model = str(resolve_data_path(args.model or DEMO_MODEL, "model"))
    cores = sorted(os.sched_getaffinity(0))
    cameras = [f"cam{i}" for i in range(args.cameras)]
    logs = args.out.parent / "cameras_logs"
    # This process's consumer joins the children's private domain, on the loopback profile.
    domain = random_domain_id()
    os.environ.update(loopback_env(domain))
    rclpy.init()
    try:
        one = run_setup(args, domain, cameras, [("casseg_all", cameras, cores)], swap=True,
                        logs=logs / "one_node")
        separate = run_setup(args, domain, cameras,
                             [(f"casseg_{c}", [c], [cores[i % len(cores)]]) for i, c in enumerate(cameras)],
                             swap=False, logs=logs / "separate_nodes")
    finally:
        rclpy.try_shutdown()
    rates = [c["rate_hz"] for c in one["per_camera"].values()]
    result = {
        "throughput_ratio": one["masks_per_s"] / separate["masks_per_s"] if separate["masks_per_s"] else None,
        "rss_ratio": one["rss_bytes"] / separate["rss_bytes"],
        "fairness": min(rates) / max(rates) if max(rates) else None,
        "vocab_swap_s": one.get("vocab_swap_s"),
        "vocab_swap_max_gap_s": one.get("vocab_swap_max_gap_s"),
        "goals": {"throughput_ratio": ">= 1.2", "rss_ratio": "<= 0.4", "fairness": ">= 0.8"},
        "one_node": one, "separate_nodes": separate,
        "setup": {"cameras": args.cameras, "rate_hz": args.rate, "seconds": args.seconds, "frame": [HEIGHT, WIDTH],
                  "model": args.model, "cores": cores},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("throughput_ratio", "rss_ratio", "fairness", "vocab_swap_s",
                                             "vocab_swap_max_gap_s")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
