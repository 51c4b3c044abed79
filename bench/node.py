"""End-to-end benchmark of the casseg_ros node over real DDS (camera, node, consumer: 3 processes).

Writes out/bench/node.json:
- e2e_over_forward: median (camera stamp -> mask received in this process) ÷ median model
  forward (the node's own backend.infer timing), with the camera slower than the model, so the
  ratio is the node's whole overhead: DDS both ways, decoding, post-processing, publishing.
  Goal <= 1.10.
- p99_over_model: with a 30 Hz camera and a model slower than 30 Hz, p99 latency ÷ median
  forward. Latest-frame-wins bounds it by (forward + one camera period + overhead) / forward.
  Goal <= 2.0.
- latency_slope_ms_per_s: in that run, the least-squares slope of the camera-stamp -> mask-received
  age (ms) against the receive time (s). A queue anywhere between camera and consumer that the
  model cannot keep up with makes latency grow for as long as the run lasts; latest-frame-wins
  keeps it flat. Goal |slope| <= 0.5. Frames the model could not keep up with are dropped
  instead: `dropped_in_node` in the details.
- lost_in_transport: in that run, frames DDS lost between camera and node (the node's diagnostic
  of that name: gaps in the publisher's sequence numbers). Goal 0.
- host_overhead_ms: median per-frame node time excluding the forward pass (decode, mask,
  confidence, overlay, scene graph, markers, all publishing) at 512x1024 with every output
  subscribed — the node's `host_overhead_p50_ms` diagnostic in the 30 Hz run. Goal <= 3 (issue 14; issue 9 had 10).
  host_overhead_cpu_ms: the same frames' host work as CPU time of the worker thread (wall time
  on a shared, loaded machine also counts time other processes held the core).
- points_ms: the extra host time per frame of the 3D path at 512x1024, stride 1, timed directly
  in this process (no DDS): the node's per-frame steps that run only with a registered depth
  image — depth message -> metres and its checks (ros/depth_conversions.depth_frame, what the node's
  frame step calls), the scene graph's 3D centroids/extents/distances
  (perception.depth.graph_in_3d), the organised labelled cloud and its PointCloud2 message — as
  the median over interleaved pairs of (FramePipeline.process with depth and ~/points + those
  conversions) - (the same frame without depth). The frame is a context scene at that size with
  its exact depth (16UC1) and camera; a canned backend returns its ground-truth classes, so the
  scene graph has realistic instances and the model's forward is not in either side. Goal <= 5.
  `points_breakdown_ms` gives each step's median alone.

The model is a randomly initialised swin_nano ContextSegmentor (19 classes) unless --model is
given; on a CPU it is slower than 30 Hz at 512x1024, which is the regime the slow-model goals are
about. Usage:
    python bench/node.py [--model PATH] [--device cpu] [--seconds 60] [--out out/bench/node.json]
(`--seconds 10`: a short check run; `--only points`: points_ms alone, in seconds.) Processes are started, made ready (node active, outputs
matched) and stopped with casseg_ros.processes.children / readiness, on loopback DDS in a private domain.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's casseg_ros, also without an install

from casseg_msgs.msg import SceneGraph  # noqa: E402
from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.parameter_rules import argparse_type  # noqa: E402
from casseg_ros.perception.depth import check_depth, graph_in_3d, labelled_cloud, organised_points  # noqa: E402
from casseg_ros.perception.scene_graph import segment_instances  # noqa: E402
from casseg_ros.pipeline import ClassLabels, DepthFrame, FramePipeline, PipelineSettings, Products  # noqa: E402
from casseg_ros.replay.live.session import start_node  # noqa: E402
from casseg_ros.ros.depth_conversions import depth_frame, depth_to_metres, pinhole_from_info  # noqa: E402
from casseg_ros.ros.frame_io import InputSettings  # noqa: E402
from casseg_ros.ros.messages import point_cloud_msg  # noqa: E402
from casseg_ros.runtime.base import InferenceResult  # noqa: E402
from casseg_ros.runtime.canned import CannedBackend  # noqa: E402
from training.datasets.context_scenes import CONTEXT_CLASSES, ContextScenes  # noqa: E402
from casseg_ros.processes.children import ChildProcesses, loopback_env, node_command, random_domain_id  # noqa: E402
from casseg_ros.processes.readiness import GraphWatcher, wait_for, wait_for_matched_publishers  # noqa: E402

CAMERA = REPO / "test" / "ros_helpers" / "camera.py"
HEIGHT, WIDTH = 512, 1024
WARMUP_MASKS = 3  # masks before measuring: first-frame allocations are not the steady state
SETTLE_TIMEOUT_S = 30.0
ERROR_COUNTERS = ("inputs_rejected", "inference_errors", "processing_errors")


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

    def __init__(self, node: Node, node_fqn: str):
        self.node = node
        self.lock = threading.Lock()
        self.received_s: list[float] = []  # host clock at arrival
        self.latency_s: list[float] = []  # camera stamp -> arrival
        self.diagnostics: list[tuple[float, dict[str, str]]] = []  # (arrival, values)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.subscriptions = [node.create_subscription(Image, f"{node_fqn}/mask", self._on_mask, qos)]
        # Subscribed so the node does all its work (overlay and markers are skipped without subscribers).
        self.subscriptions += [node.create_subscription(Image, f"{node_fqn}/overlay", lambda m: None, qos),
                               node.create_subscription(SceneGraph, f"{node_fqn}/scene_graph", lambda m: None, qos),
                               node.create_subscription(MarkerArray, f"{node_fqn}/scene_graph/markers",
                                                        lambda m: None, qos)]
        self.subscriptions.append(node.create_subscription(DiagnosticArray, "/diagnostics",
                                                           self._on_diagnostics(node_fqn), 10))

    def _on_mask(self, msg: Image) -> None:
        received_ns = time.time_ns()  # same host clock as the camera's stamps
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.received_s.append(received_ns / 1e9)
            self.latency_s.append((received_ns - stamp_ns) / 1e9)

    def _on_diagnostics(self, fqn: str):
        def handle(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.startswith(fqn + ":"):
                    with self.lock:
                        self.diagnostics.append((time.time(), {kv.key: kv.value for kv in status.values}))
        return handle

    def wait_matched(self, timeout: float, alive) -> None:
        """Every output subscription matched to the node's publisher (the node is active)."""
        for sub in self.subscriptions[:-1]:
            wait_for_matched_publishers(sub, timeout, alive=alive)

    @property
    def masks(self) -> int:
        with self.lock:
            return len(self.latency_s)

    def reset(self) -> None:
        with self.lock:
            self.latency_s.clear()
            self.received_s.clear()

    def settled_diagnostics(self, since_s: float) -> dict[str, str]:
        """The node's diagnostics once one, sent after `since_s`, shows every received frame
        accounted for (processed, dropped or rejected): the node is idle. {} until then."""
        with self.lock:
            recent = [d for t, d in self.diagnostics if t > since_s]
        for d in reversed(recent):
            done = int(d["frames_processed"]) + int(d["dropped_in_node"]) + sum(int(d[k]) for k in ERROR_COUNTERS)
            if done >= int(d["frames_received"]):
                return d
        return {}

    def close(self) -> None:
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)


def best_variant(path: Path) -> dict | None:
    """bench/backends.py's fastest CPU variant within its accuracy bounds (the fp32 one at >= 99.9 %
    of eager's pixels, the bf16/int8 one at >= 99 % and <= 0.5 mIoU lost), if it ran at this size."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if list(report.get("settings", {}).get("size") or []) != [HEIGHT, WIDTH]:
        return None
    names = [report.get(k) for k in ("best_cpu_variant", "best_reduced_variant") if report.get(k)]
    ms = {n: report["cpu"][n]["median_ms"] for n in names}
    if not ms:
        return None
    name = min(ms, key=ms.get)
    return {"variant": name, "median_ms": ms[name], "file": str(path),
            "load_avg": report.get("machine", {}).get("loadavg_end")}


def latency_slope_ms_per_s(received_s: list[float], latency_s: list[float]) -> float:
    """Least-squares slope of latency (ms) against receive time (s)."""
    t = np.asarray(received_s) - received_s[0]
    return float(np.polyfit(t, np.asarray(latency_s) * 1e3, 1)[0])


def run_phase(args, env: dict[str, str], graph: GraphWatcher, checkpoint: Path, rate_hz: float, seconds: float,
              name: str) -> dict:
    """Fresh node + camera at `rate_hz` for `seconds`; returns latencies and the node's final stats."""
    ns = f"/bench_{name}_{os.getpid()}"
    fqn = f"{ns}/casseg_ros"
    camera_topic = f"{ns}/camera/image_raw"
    with tempfile.TemporaryDirectory(prefix="bench_node_") as logs, ChildProcesses(Path(logs), env) as children:
        argv = node_command(checkpoint, camera_topic, namespace=ns, params={
            "device": args.device, "backend": args.backend, "input_height": HEIGHT, "input_width": WIDTH,
            "min_instance_area": 64, "precision": args.precision,
            **({"calibration": str(Path(args.calibration).resolve())} if args.calibration else {})})
        consumer = Consumer(graph.node, fqn)
        try:
            start_node(children, graph, argv, fqn, timeout=300)
            consumer.wait_matched(60, children.check_alive)
            t_camera = time.monotonic()
            children.start("camera", [
                sys.executable, str(CAMERA), "--topic", camera_topic, "--width", str(WIDTH), "--height",
                str(HEIGHT), "--rate", str(rate_hz), "--duration", str(seconds + 120), "--reliability", "best_effort"])
            wait_for(lambda: consumer.masks >= WARMUP_MASKS, 120, f"{WARMUP_MASKS} warm-up masks", children.check_alive)
            consumer.reset()
            t_measure = time.monotonic()
            wait_for(lambda: time.monotonic() - t_measure >= seconds, seconds + 60, "the measured run",
                     children.check_alive)
            children.stop("camera")
            camera_end, camera_seconds = time.time(), time.monotonic() - t_camera
            try:
                diag = wait_for(lambda: consumer.settled_diagnostics(camera_end), SETTLE_TIMEOUT_S,
                                "the node's diagnostics after its last frame", children.check_alive)
            except TimeoutError:
                diag = consumer.diagnostics[-1][1] if consumer.diagnostics else {}
            with consumer.lock:
                latency, received = list(consumer.latency_s), list(consumer.received_s)
        finally:
            consumer.close()
    if len(latency) < 5 or not diag:
        raise RuntimeError(f"phase {name}: only {len(latency)} masks received, diagnostics {bool(diag)}")
    return {"latency_s": latency, "received_s": received, "diagnostics": diag, "camera_rate_hz": rate_hz,
            "camera_seconds": camera_seconds}


def _median_ms(samples: list[float]) -> float:
    return float(np.median(samples)) * 1e3


def measure_points_ms(pairs: int, max_range_m: float = InputSettings.depth_max_range_m) -> dict:
    """points_ms (see the module docstring): interleaved frames with and without depth."""
    scene = ContextScenes(1, HEIGHT, WIDTH, seed=0).generate(0)
    k = len(CONTEXT_CLASSES)
    class_ids = scene.label.astype(np.int32)[None]
    confidence = np.full(class_ids.shape, 0.9, np.float32)
    backend = CannedBackend(InferenceResult(class_ids, confidence, np.full((1, k), 1 / k, np.float32),
                                            np.full((1, k, k), 0.5, np.float32)))
    palette = np.random.default_rng(0).integers(0, 256, (k, 3), dtype=np.uint8)
    pipeline = FramePipeline(backend, ClassLabels(tuple(CONTEXT_CLASSES), palette))
    depth = Image(height=HEIGHT, width=WIDTH, encoding="16UC1", is_bigendian=0, step=WIDTH * 2)
    millimetres = np.rint(np.where(np.isfinite(scene.depth), scene.depth, 0) * 1000)
    depth.data = np.where(millimetres <= 65535, millimetres, 0).astype("<u2").tobytes()
    info = CameraInfo(height=HEIGHT, width=WIDTH, k=scene.camera.k)
    header = Header(frame_id="camera_optical_frame")
    settings = PipelineSettings(points_stride=1)

    def with_depth() -> float:
        t0 = time.perf_counter()
        decoded = depth_frame(depth, info, (HEIGHT, WIDTH), max_range_m)  # what the node's frame_io.frame_input calls
        result = pipeline.process(scene.image, settings, Products(points=True), decoded)
        point_cloud_msg(result.points, header)
        return time.perf_counter() - t0

    def without_depth() -> float:
        t0 = time.perf_counter()
        pipeline.process(scene.image, settings, Products(), None)
        return time.perf_counter() - t0

    for _ in range(3):  # warm-up: first-call allocations are not the steady state
        with_depth(), without_depth()
    extra = []
    for i in range(pairs):  # alternate which goes first, so a slow spell of the machine hits both
        if i % 2 == 0:
            extra_s = with_depth()
            extra_s -= without_depth()
        else:
            extra_s = -without_depth()
            extra_s += with_depth()
        extra.append(extra_s)

    # Each step alone, for the profile (same inputs as the node's frame).
    camera = pinhole_from_info(info)
    metres = depth_to_metres(depth, max_range_m)
    result = pipeline.process(scene.image, settings, Products(points=True), DepthFrame(metres, camera))
    base = pipeline.process(scene.image, settings, Products(), None)
    _, runs = segment_instances(base.mask, list(CONTEXT_CLASSES), confidence[0], backend.result.adjacency[0],
                                min_area=settings.min_instance_area, ignore_ids=(pipeline.labels.unknown_id,),
                                stride=settings.scene_graph_stride)
    steps = {
        "depth_to_metres": lambda: depth_to_metres(depth, max_range_m),
        "check_depth": lambda: check_depth(metres, camera, (HEIGHT, WIDTH)),
        "graph_in_3d": lambda: graph_in_3d(base.graph, runs, metres, camera),
        "organised_points+labelled_cloud": lambda: labelled_cloud(organised_points(metres, camera, 1), scene.image,
                                                                  base.mask, confidence[0], 1),
        "point_cloud_msg": lambda: point_cloud_msg(result.points, header),
    }
    breakdown = {}
    for name, step in steps.items():
        samples = []
        for _ in range(max(5, pairs // 2)):
            t0 = time.perf_counter()
            step()
            samples.append(time.perf_counter() - t0)
        breakdown[name] = round(_median_ms(samples), 3)
    return {"points_ms": _median_ms(extra), "points_breakdown_ms": breakdown,
            "points_details": {"pairs": pairs, "image_size": [HEIGHT, WIDTH], "stride": 1,
                               "instances": base.graph.num_objects, "relations": base.graph.num_relations,
                               "valid_points": int(np.isfinite(result.points["z"]).sum()),
                               "method": "pipeline products timed directly, interleaved with/without depth"}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint; default: a random swin_nano model")
    parser.add_argument("--backend", default="torch", type=argparse_type("backend"))
    parser.add_argument("--precision", default="auto", type=argparse_type("precision"),
                        help="the node's precision parameter (auto: backend openvino measures it on --calibration)")
    parser.add_argument("--calibration", default=None,
                        help="the node's calibration parameter (a bag or an image folder), e.g. data/demo.mcap")
    parser.add_argument("--compare", default=str(REPO / "out" / "bench" / "backends.json"),
                        help="bench/backends.py's result: the node's forward is compared with its fastest variant "
                             "within the accuracy bounds (forward_over_best_variant), when it was run at this size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="measured seconds per phase (60 for the goals; less for a short check)")
    parser.add_argument("--out", default=str(REPO / "out" / "bench" / "node.json"))
    parser.add_argument("--only", choices=("points",), default=None,
                        help="points: only points_ms (in-process, seconds), written to the --out file")
    parser.add_argument("--points-pairs", type=int, default=40, help="interleaved frame pairs for points_ms")
    args = parser.parse_args()
    if args.only == "points":
        points = measure_points_ms(args.points_pairs)
        points["goals"] = {"points_ms": "<= 5"}
        points["details"] = {"host": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                      "load_avg_1m": os.getloadavg()[0]}}
        atomic_write_text(Path(args.out), json.dumps(points, indent=2) + "\n")
        print(json.dumps({k: points[k] for k in ("points_ms", "points_breakdown_ms")}, indent=2))
        print(f"wrote {args.out}")
        return 0

    domain = random_domain_id()
    env = loopback_env(domain, {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)})
    with tempfile.TemporaryDirectory(prefix="bench_model_") as tmp, GraphWatcher(domain, env, "bench_consumer") as graph:
        checkpoint = Path(args.model) if args.model else make_random_checkpoint(Path(tmp))
        # Slow-model regime first: a 30 Hz camera; also tells us the forward time.
        saturated = run_phase(args, env, graph, checkpoint, 30.0, args.seconds, "camera30hz")
        forward_ms = float(saturated["diagnostics"]["forward_p50_ms"])
        # Unsaturated: frames arrive at most every 2.5 forward passes, so none waits for the worker.
        idle_rate = min(30.0, 1000.0 / (2.5 * forward_ms))
        unsaturated = run_phase(args, env, graph, checkpoint, idle_rate,
                                max(args.seconds, 12 * 2.5 * forward_ms / 1000), "idle")
    points = measure_points_ms(args.points_pairs)  # after the node phases: nothing else runs meanwhile

    sat_diag, idle_diag = saturated["diagnostics"], unsaturated["diagnostics"]
    best = best_variant(Path(args.compare))
    idle_forward_ms = float(idle_diag["forward_p50_ms"])
    sat_latency_ms = np.asarray(saturated["latency_s"]) * 1e3
    idle_latency_ms = np.asarray(unsaturated["latency_s"]) * 1e3
    result = {
        "e2e_over_forward": float(np.median(idle_latency_ms) / idle_forward_ms),
        "p99_over_model": float(np.percentile(sat_latency_ms, 99) / forward_ms),
        "latency_slope_ms_per_s": latency_slope_ms_per_s(saturated["received_s"], saturated["latency_s"]),
        "lost_in_transport": int(sat_diag["lost_in_transport"]),
        "host_overhead_ms": float(sat_diag["host_overhead_p50_ms"]),
        # Same frames, CPU time of the worker thread: what the host work costs without the time
        # other processes on a shared machine held the core.
        "host_overhead_cpu_ms": float(sat_diag["host_cpu_p50_ms"]),
        **points,
        # the node must not lose what the runtime gains (issue 20): its forward (unsaturated run:
        # the camera does not compete for the cores) / bench/backends.py's best variant (another run)
        **({"forward_over_best_variant": round(idle_forward_ms / best["median_ms"], 3)} if best else {}),
        "goals": {"e2e_over_forward": "<= 1.10", "p99_over_model": "<= 2.0",
                  "latency_slope_ms_per_s": "|slope| <= 0.5", "lost_in_transport": "== 0",
                  "host_overhead_ms": "<= 3", "points_ms": "<= 5", "forward_over_best_variant": "<= 1.0"},
        "details": {
            "image_size": [HEIGHT, WIDTH],
            "model": str(args.model or "random swin_nano (decoder_dim 64, 19 classes)"),
            "backend": sat_diag.get("backend"), "device": sat_diag.get("device"),
            "precision": sat_diag.get("precision"), "precision_choice": sat_diag.get("precision_choice"),
            "backend_choice": sat_diag.get("backend_choice"), "best_variant": best,
            "saturated": {
                "camera_rate_hz": 30.0, "measured_s": args.seconds, "masks": int(sat_latency_ms.size),
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
    print(json.dumps({k: result[k] for k in ("e2e_over_forward", "p99_over_model", "latency_slope_ms_per_s",
                                            "lost_in_transport", "host_overhead_ms", "host_overhead_cpu_ms",
                                            "points_ms", "forward_over_best_variant") if k in result},
                     indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
