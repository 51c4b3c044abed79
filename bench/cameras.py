"""Several cameras: one N-camera node vs N 1-camera nodes at saturation, latency beside one camera alone, swaps apart.

    python bench/cameras.py [--model PATH] [--cameras 4] [--saturation-rate 30] [--rate 10] [--seconds 20]
                            [--rounds 2] [--swaps 3] [--out out/bench/cameras.json]

Both set-ups run the product: `casseg_ros` node processes (casseg_ros.processes.children), the same
backend (torch, the model's native input size), fed by camera processes (test/ros_helpers/camera.py,
256x128 rgb8, the demo recording's size) on loopback DDS in a private domain. They are started once
and stay up; the one not measured idles (no frames reach it). The one node (`/one/casseg`, cameras
cam0..camN-1, max_batch N) may use every core of this process's affinity mask; each of the N
single-camera nodes (`/sep/casseg_camI`) is pinned (taskset) to its share of them: the same CPU
budget. For each phase new camera processes publish into one set-up's namespace; after a warm-up
(every camera's masks arrive, then 2 s) this process counts every mask for --seconds: its receive
time, and the camera's stamp -> mask received latency.

Phases, alternated within each of --rounds (so a slow spell of the shared machine hits both sides):
1. saturation: N cameras at --saturation-rate Hz (N x rate frames/s offered, more than the machine
   serves) into the one node, then into the N nodes: masks/s;
2. latency: N cameras at --rate Hz into the one node, and one camera alone at --rate Hz into the
   same node: per-camera latency p50/p99;
3. then, outside every window above, the vocabulary swap: N cameras at --rate Hz into the one node
   and --swaps `~/set_vocabulary` requests (alternating two class lists, a few seconds apart); for
   each, the longest gap between two masks of any camera while the request was in flight (the gap
   around its start and its end included).

Keys of out/bench/cameras.json (goals from issue 22):
- throughput_ratio: masks/s of the one node / masks/s of the N nodes at saturation (goal >= 1.3), all
  rounds pooled; per round in saturation.rounds
- latency_p50_ratio: the worst camera's latency p50 with N cameras at --rate in the one node / the
  p50 of one camera alone (goal <= 1.2); latency.{cameras,alone}: per camera p50/p99, rates
- vocab_swap_max_gap_periods: the longest such gap of any camera and swap, in that camera's frame
  periods (its median mask interval before the first request; goal <= 2); vocab_swap_max_gap_s,
  vocab_swap_s (request -> answer), the answers, and vocab_swap_max_gap_camera_periods (in 1/--rate);
  no_swap_max_gap_periods: the same statistic over windows of the swaps' median length every 0.1 s
  through the same phase, 1 s or more from any request: p50/p95/max, what a swap's figure is up against
- rss_ratio: RSS of the one node / the N nodes' RSS summed; fairness: slowest camera's mask rate /
  fastest's, one node at saturation
- machine: CPU, ISA (AVX-512/AMX flags), cores; load averages at each phase's end
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
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's casseg_ros, also without an install

from casseg_msgs.srv import SetVocabulary  # noqa: E402
from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.processes.children import ChildProcesses, loopback_env, node_command, random_domain_id  # noqa: E402
from casseg_ros.processes.readiness import GraphWatcher, wait_for  # noqa: E402
from casseg_ros.resources import DEMO_MODEL, resolve_data_path  # noqa: E402

CAMERA = REPO / "test" / "ros_helpers" / "camera.py"
HEIGHT, WIDTH = 128, 256
SWAP_NAMES = (["sky", "building", "vegetation", "street", "sidewalk", "ocean", "pedestrian", "automobile", "boat"],
              ["sky", "building", "tree", "road", "pavement", "water", "person", "car", "ship"])
ONE, SEP = "/one", "/sep"  # the set-ups' namespaces
WARM_UP_S = 2.0


DIAGNOSTIC_KEYS = ("frames_processed", "dropped_in_node", "lost_in_transport", "forward_p50_ms", "host_overhead_p50_ms",
                   "host_cpu_p50_ms", "latency_p50_ms", "batch_size_mean", "batch_forward_p50_ms")


class MaskClock:
    """Receive time and stamp of every mask on the given topics (this process's own rclpy node), and
    the newest /diagnostics status of every node and camera."""

    def __init__(self, topics: dict[str, str]):
        self.node = rclpy.create_node("bench_cameras_consumer")
        self.lock = threading.Lock()
        self.seen: dict[str, list[tuple[int, int]]] = {key: [] for key in topics}  # (receive ns, stamp ns)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=20, reliability=ReliabilityPolicy.RELIABLE)
        for key, topic in topics.items():
            self.node.create_subscription(Image, topic, lambda msg, k=key: self._on_mask(k, msg), qos)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_mask(self, key: str, msg: Image) -> None:
        now = time.time_ns()
        with self.lock:
            self.seen[key].append((now, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                self.diagnostics[status.name] = {k: values[k] for k in DIAGNOSTIC_KEYS if k in values}

    def diagnostics_of(self, prefix: str) -> dict[str, dict[str, str]]:
        """The newest status of every node under `prefix` (rolling windows: mostly the phase just run)."""
        with self.lock:
            return {name: dict(values) for name, values in self.diagnostics.items() if name.startswith(prefix)}

    def count_since(self, key: str, since_ns: int) -> int:
        with self.lock:
            return sum(r >= since_ns for r, _ in self.seen[key])

    def receive_times(self, key: str, start_ns: int, end_ns: int) -> list[int]:
        with self.lock:
            return sorted(r for r, _ in self.seen[key] if start_ns <= r <= end_ns)

    def stats(self, keys: list[str], start_ns: int, end_ns: int) -> dict[str, dict[str, float | None]]:
        out = {}
        with self.lock:
            for key in keys:
                inside = [(r, s) for r, s in self.seen[key] if start_ns <= r <= end_ns]
                latency = np.array([(r - s) / 1e6 for r, s in inside]) if inside else np.zeros(0)
                out[key] = {"masks": len(inside), "rate_hz": len(inside) / ((end_ns - start_ns) / 1e9),
                            "latency_p50_ms": float(np.percentile(latency, 50)) if latency.size else None,
                            "latency_p99_ms": float(np.percentile(latency, 99)) if latency.size else None}
        return out

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def longest_gap_s(times_ns: list[int], start_ns: int, end_ns: int) -> float:
    """The longest gap between consecutive masks over [start, end], the gaps across its ends included."""
    before = [t for t in times_ns if t < start_ns][-1:]
    after = [t for t in times_ns if t > end_ns][:1]
    around = before + [t for t in times_ns if start_ns <= t <= end_ns] + after
    if len(around) < 2:
        return float("inf")
    return float(np.diff(around).max() / 1e9)


class Bench:
    def __init__(self, args, children: ChildProcesses, clock: MaskClock, cameras: list[str]):
        self.args, self.children, self.clock, self.cameras = args, children, clock, cameras
        self.phases: list[dict] = []  # per phase run: its load average, the nodes' newest statuses at its end

    def stream(self, ns: str, cameras: list[str], rate: float, phase: str, seconds: float,
               during=None) -> tuple[int, int, object]:
        """Cameras at `rate` into `ns`; after the warm-up, `seconds` of measurement (`during(start_ns)`
        runs in it, its result returned). Returns (start ns, end ns, that result)."""
        names = [f"camera_{c}" for c in cameras]
        began = time.time_ns()
        for camera, name in zip(cameras, names):
            self.children.start(name, [sys.executable, str(CAMERA), "--topic", f"{ns}/{camera}/image",
                                       "--duration", str(seconds + 120), "--rate", str(rate),
                                       "--wait-subscribers", "90", "--height", str(HEIGHT), "--width", str(WIDTH)])
        try:
            keys = [f"{ns}/{c}" for c in cameras]
            wait_for(lambda: all(self.clock.count_since(k, began) for k in keys), 120,
                     f"a mask from every camera of {phase}", lambda: self.children.check_alive())
            time.sleep(WARM_UP_S)
            start = time.time_ns()
            result = during(start) if during is not None else None
            time.sleep(max(0.0, seconds - (time.time_ns() - start) / 1e9))
            end = time.time_ns()
        finally:
            for name in names:
                self.children.stop(name)
        load = os.getloadavg()
        time.sleep(1.2)  # the nodes' 1 Hz /diagnostics after the last frame
        self.phases.append({"phase": phase, "load_average": load, "diagnostics": self.clock.diagnostics_of(ns + "/")})
        print(f"  {phase}: load {load[0]:.2f}", flush=True)
        return start, end, result

    def saturation(self, setup: str) -> dict:
        ns = ONE if setup == "one_node" else SEP
        start, end, _ = self.stream(ns, self.cameras, self.args.saturation_rate, f"saturation {setup}",
                                    self.args.seconds)
        per_camera = self.clock.stats([f"{ns}/{c}" for c in self.cameras], start, end)
        return {"per_camera": per_camera, "masks_per_s": sum(c["rate_hz"] for c in per_camera.values()),
                "load_average": os.getloadavg()}

    def latency(self, alone: bool) -> dict:
        cameras = self.cameras[:1] if alone else self.cameras
        start, end, _ = self.stream(ONE, cameras, self.args.rate, "latency alone" if alone else "latency cameras",
                                    self.args.seconds)
        gaps = []  # every gap between two masks of a camera, in its frame periods (median mask interval)
        for camera in cameras:
            intervals = np.diff(self.clock.receive_times(f"{ONE}/{camera}", start, end)) / 1e9
            if intervals.size > 2:
                gaps += list(intervals / np.median(intervals))
        return {"per_camera": self.clock.stats([f"{ONE}/{c}" for c in cameras], start, end),
                "gap_periods": {"p99": float(np.percentile(gaps, 99)), "max": float(max(gaps))} if gaps else None,
                "load_average": os.getloadavg()}

    def no_swap_baseline(self, start: int, end: int, calls: list, period: dict[str, float]) -> dict:
        """What the swap's figure is up against: the same statistic (longest gap of any camera over a
        window, the gaps across its ends included, in frame periods) over windows of the swaps'
        median duration every 0.1 s through the same phase, each at least 1 s from any request."""
        duration = int(np.median([t1 - t0 for t0, t1, _ in calls]))
        times = {c: self.clock.receive_times(f"{ONE}/{c}", start, end) for c in self.cameras}
        maxima = []
        for t0 in range(start + 10**9, end - duration - 10**9, 100_000_000):
            if any(t0 < c1 + 10**9 and t0 + duration > c0 - 10**9 for c0, c1, _ in calls):
                continue
            maxima.append(max(longest_gap_s(times[c], t0, t0 + duration) / period[c] for c in self.cameras))
        if not maxima:
            return {}
        return {"windows": len(maxima), "window_s": duration / 1e9, "p50": float(np.percentile(maxima, 50)),
                "p95": float(np.percentile(maxima, 95)), "max": float(max(maxima))}

    def swaps(self, node) -> dict:
        client = node.create_client(SetVocabulary, f"{ONE}/casseg/set_vocabulary")
        if not client.wait_for_service(timeout_sec=30):
            raise RuntimeError(f"{ONE}/casseg/set_vocabulary not available")
        spacing = self.args.seconds / (self.args.swaps + 1)

        def during(start_ns: int) -> list[tuple[int, int, SetVocabulary.Response]]:
            done = []
            for i in range(self.args.swaps):
                time.sleep(max(0.0, start_ns / 1e9 + spacing * (i + 1) - time.time_ns() / 1e9))
                t0 = time.time_ns()
                future = client.call_async(SetVocabulary.Request(class_names=SWAP_NAMES[i % 2]))
                wait_for(future.done, 120, "set_vocabulary to answer")
                done.append((t0, time.time_ns(), future.result()))
            return done

        start, end, calls = self.stream(ONE, self.cameras, self.args.rate, "vocabulary swaps",
                                        self.args.seconds + 2, during)
        first = calls[0][0]
        swaps, gaps_periods, gaps_camera_periods, gaps_s = [], [], [], []
        period = {}
        for camera in self.cameras:
            before = self.clock.receive_times(f"{ONE}/{camera}", start, first)
            period[camera] = float(np.median(np.diff(before)) / 1e9) if len(before) > 2 else 1.0 / self.args.rate
        for t0, t1, response in calls:
            per_camera = {}
            for camera in self.cameras:
                gap = longest_gap_s(self.clock.receive_times(f"{ONE}/{camera}", start, end), t0, t1)
                per_camera[camera] = {"max_gap_s": gap, "max_gap_periods": gap / period[camera]}
                gaps_s.append(gap)
                gaps_periods.append(gap / period[camera])
                gaps_camera_periods.append(gap * self.args.rate)
            swaps.append({"swap_s": (t1 - t0) / 1e9, "ok": response.success, "message": response.message,
                          "per_camera": per_camera})
        return {"swaps": swaps, "mask_period_s": period, "max_gap_s": max(gaps_s), "max_gap_periods": max(gaps_periods),
                "max_gap_camera_periods": max(gaps_camera_periods),
                "no_swap_windows_max_gap_periods": self.no_swap_baseline(start, end, calls, period),
                "load_average": os.getloadavg()}


def start_nodes(args, children: ChildProcesses, graph: GraphWatcher, cameras: list[str], cores: list[int]) -> dict:
    """The one node and the N single-camera nodes (not with --swap-only), started together; returns
    name -> process."""
    nodes = [(ONE, "casseg", cameras, cores)] + [(SEP, f"casseg_{c}", [c], [cores[i % len(cores)]])
                                                 for i, c in enumerate(cameras) if not args.swap_only]
    procs = {}
    for ns, name, node_cameras, node_cores in nodes:
        argv = node_command(args.model, "/unused", node_name=name, namespace=ns, params={
            "cameras": node_cameras, "max_batch": len(node_cameras), "qos_reliability": "reliable"})
        procs[f"{ns}/{name}"] = children.start(f"node_{ns.strip('/')}_{name}",
                                               ["taskset", "-c", ",".join(map(str, node_cores)), *argv])
    for fqn, proc in procs.items():
        graph.wait_for_lifecycle_state(fqn, "active", 300, alive=proc.check_alive)
    return procs


def machine() -> dict:
    flags: list[str] = []
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512", "amx")))
    except OSError:
        pass
    return {"cpu": name, "isa": flags, "cores": sorted(os.sched_getaffinity(0))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help=f"checkpoint (default: the installed {DEMO_MODEL})")
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--saturation-rate", type=float, default=30.0, help="Hz per camera in the saturation phase")
    p.add_argument("--rate", type=float, default=10.0, help="Hz per camera in the latency and swap phases")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per phase")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--swaps", type=int, default=3)
    p.add_argument("--swap-only", action="store_true",
                   help="only the one node and the swap phase (writes the vocab_swap keys alone)")
    p.add_argument("--out", type=Path, default=Path("out/bench/cameras.json"))
    args = p.parse_args(argv)
    args.model = str(resolve_data_path(args.model or DEMO_MODEL, "model"))
    cores = sorted(os.sched_getaffinity(0))
    cameras = [f"cam{i}" for i in range(args.cameras)]
    logs = args.out.parent / "cameras_logs"
    # This process's consumer joins the children's private domain, on the loopback profile.
    domain = random_domain_id()
    env = loopback_env(domain, {"PYTHONPATH": str(REPO)})  # children import this checkout
    os.environ.update(loopback_env(domain))
    rclpy.init()
    try:
        with ChildProcesses(logs, env, cwd=REPO) as children, \
                GraphWatcher(domain, env, name="bench_cameras_graph") as graph:
            t0 = time.perf_counter()
            procs = start_nodes(args, children, graph, cameras, cores)
            print(f"{len(procs)} nodes active in {time.perf_counter() - t0:.0f} s", flush=True)
            nodes = [(ONE, "casseg", c) for c in cameras] + [(SEP, f"casseg_{c}", c) for c in cameras]
            topics = {f"{ns}/{c}": f"{ns}/{node}/{c}/mask" for ns, node, c in nodes}
            clock = MaskClock(topics)
            bench = Bench(args, children, clock, cameras)
            try:
                rounds = []
                for r in range(0 if args.swap_only else args.rounds):
                    order = ("one_node", "separate_nodes") if r % 2 == 0 else ("separate_nodes", "one_node")
                    sat = {setup: bench.saturation(setup) for setup in order}
                    lat_order = (True, False) if r % 2 == 0 else (False, True)
                    lat = {("alone" if alone else "cameras"): bench.latency(alone) for alone in lat_order}
                    rounds.append({"saturation": sat, "latency": lat})
                rss = {fqn: tree_rss(proc.pid) for fqn, proc in procs.items()}
                swap = bench.swaps(clock.node)
            finally:
                clock.close()
    finally:
        rclpy.try_shutdown()
    if args.swap_only:
        result = {key: value for key, value in report_swap(swap).items()} | {
            "vocabulary_swap": swap, "phases": bench.phases, "machine": machine(),
            "setup": {"cameras": args.cameras, "rate_hz": args.rate, "seconds": args.seconds, "swaps": args.swaps,
                      "model": args.model}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2))
        print(json.dumps(report_swap(swap), indent=2))
        return 0
    result = report(args, rounds, swap, rss, bench.phases, cameras)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("throughput_ratio", "latency_p50_ratio", "vocab_swap_max_gap_periods",
                                             "vocab_swap_max_gap_s", "no_swap_max_gap_periods", "vocab_swap_s",
                                             "rss_ratio", "fairness")},
                     indent=2))
    return 0


def _pooled(rounds: list[dict], phase: str, part: str) -> dict[str, dict]:
    """Per camera over every round: masks, rate, and the mean of the rounds' p50/p99."""
    out: dict[str, dict] = {}
    for rnd in rounds:
        for camera, stats in rnd[phase][part]["per_camera"].items():
            out.setdefault(camera, []).append(stats)
    return {camera: {"rate_hz": float(np.mean([s["rate_hz"] for s in runs])),
                     "latency_p50_ms": float(np.mean([s["latency_p50_ms"] for s in runs])),
                     "latency_p99_ms": float(np.mean([s["latency_p99_ms"] for s in runs]))}
            for camera, runs in out.items()}


def report_swap(swap: dict) -> dict:
    return {
        "vocab_swap_max_gap_periods": swap["max_gap_periods"],
        "vocab_swap_max_gap_camera_periods": swap["max_gap_camera_periods"],
        "vocab_swap_max_gap_s": swap["max_gap_s"],
        # the same statistic over windows of the same length without a swap (p50/p95/max)
        "no_swap_max_gap_periods": swap["no_swap_windows_max_gap_periods"],
        "vocab_swap_s": max(s["swap_s"] for s in swap["swaps"]),
        "vocab_swap_ok": all(s["ok"] for s in swap["swaps"]),
    }


def report(args, rounds: list[dict], swap: dict, rss: dict[str, int], phases: list[dict], cameras: list[str]) -> dict:
    one = float(np.mean([r["saturation"]["one_node"]["masks_per_s"] for r in rounds]))
    sep = float(np.mean([r["saturation"]["separate_nodes"]["masks_per_s"] for r in rounds]))
    sat_one = _pooled(rounds, "saturation", "one_node")
    rates = [c["rate_hz"] for c in sat_one.values()]
    lat_cameras, lat_alone = _pooled(rounds, "latency", "cameras"), _pooled(rounds, "latency", "alone")
    alone_p50 = next(iter(lat_alone.values()))["latency_p50_ms"]
    rss_one = sum(v for k, v in rss.items() if k.startswith(ONE + "/"))
    rss_sep = sum(v for k, v in rss.items() if k.startswith(SEP + "/"))
    return {
        "throughput_ratio": one / sep if sep else None,
        "latency_p50_ratio": max(c["latency_p50_ms"] for c in lat_cameras.values()) / alone_p50,
        **report_swap(swap),
        "rss_ratio": rss_one / rss_sep if rss_sep else None,
        "fairness": min(rates) / max(rates) if max(rates) else None,
        "goals": {"throughput_ratio": ">= 1.3", "latency_p50_ratio": "<= 1.2", "vocab_swap_max_gap_periods": "<= 2",
                  "rss_ratio": "<= 0.4", "fairness": ">= 0.8"},
        "saturation": {"offered_hz": args.saturation_rate * len(cameras), "one_node_masks_per_s": one,
                       "separate_nodes_masks_per_s": sep, "one_node_per_camera": sat_one,
                       "separate_nodes_per_camera": _pooled(rounds, "saturation", "separate_nodes"),
                       "rounds": [{setup: r["saturation"][setup]["masks_per_s"] for setup in r["saturation"]}
                                  | {"ratio": r["saturation"]["one_node"]["masks_per_s"]
                                     / r["saturation"]["separate_nodes"]["masks_per_s"]} for r in rounds]},
        "latency": {"rate_hz": args.rate, "cameras": lat_cameras, "alone": lat_alone,
                    # without a swap: the gaps between two masks of a camera, in its frame periods
                    "cameras_gap_periods": [r["latency"]["cameras"]["gap_periods"] for r in rounds]},
        "vocabulary_swap": swap,
        "rss_bytes": rss,
        "phases": phases,
        "rounds": rounds,
        "machine": machine(),
        "setup": {"cameras": args.cameras, "saturation_rate_hz": args.saturation_rate, "rate_hz": args.rate,
                  "seconds": args.seconds, "rounds": args.rounds, "swaps": args.swaps, "frame": [HEIGHT, WIDTH],
                  "model": args.model},
    }


if __name__ == "__main__":
    sys.exit(main())
