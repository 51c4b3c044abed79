"""`casseg-replay --realtime`: the live node measured end to end with a recording.

Phase 1 publishes the bag at its recorded rate (x --rate-scale) and measures camera stamp ->
mask received (in the recorder process) and drops; phase 2 publishes every 2 ms, far above the
node's rate, and reports the node's output FPS (max throughput; latest-frame-wins drops are
expected there). The node is either already running (in this environment's ROS domain) or
started for the run on loopback DDS in a private domain (--spawn-node).
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from casseg_ros.pipeline import PipelineSettings
from casseg_ros.processes.children import ChildProcesses, loopback_env, node_command, node_params, random_domain_id
from casseg_ros.processes.readiness import GraphWatcher, ReadinessTimeout
from casseg_ros.replay.bag import IMAGE_TYPES, BagError, find_connection, open_reader
from casseg_ros.replay.live.recording import live_metrics, read_recording
from casseg_ros.replay.live.session import play_and_record, start_node
from casseg_ros.replay.offline.run import ReplayError
from casseg_ros.replay.report import write_json, write_report
from casseg_ros.ros.frame_io import InputSettings


@dataclass
class RealtimeConfig:
    bag: Path
    out_dir: Path
    image_topic: str | None = None
    node: str = "/casseg_ros"
    camera_topic: str = "/camera/image_raw"
    spawn_node: bool = False
    model_path: Path = Path("models/casseg_demo.safetensors")
    backend: str = "torch"
    device: str = "cpu"
    input_size: tuple[int, int] | None = None
    resize_in_graph: bool = False
    openvino_device: str = "CPU"  # the node's parameter (backend openvino)
    precision: str = "auto"  # the node's parameters of these names
    calibration: Path | None = None
    rate_scale: float = 1.0
    throughput_frames: int = 1000
    max_frames: int | None = None
    node_start_timeout_s: float = 120.0
    # the per-frame settings the offline replay takes; a spawned node gets them as its parameters
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    depth_max_range_m: float = InputSettings.depth_max_range_m
    vocabulary_file: str | None = None


def spawned_node_params(cfg: RealtimeConfig) -> dict[str, Any]:
    """--spawn-node's parameters: the backend's and every per-frame setting (the node's parameters
    of the PipelineSettings field names), so a realtime run measures what an offline one computes."""
    return {**node_params(cfg.backend, cfg.device, cfg.input_size, cfg.resize_in_graph, cfg.openvino_device,
                          cfg.precision, cfg.calibration),
            **asdict(cfg.settings), "depth_max_range_m": cfg.depth_max_range_m,
            **({"vocabulary_file": str(Path(cfg.vocabulary_file).resolve())} if cfg.vocabulary_file else {})}


def settings_left_to_the_node(cfg: RealtimeConfig) -> list[str]:
    """The per-frame settings given that a running node (no --spawn-node) does not take from us."""
    given = {**asdict(cfg.settings), "depth_max_range_m": cfg.depth_max_range_m, "vocabulary_file": cfg.vocabulary_file}
    defaults = {**asdict(PipelineSettings()), "depth_max_range_m": InputSettings.depth_max_range_m,
                "vocabulary_file": None}
    return [name for name, value in given.items() if value != defaults[name]]


def _recorded_rate_hz(cfg: RealtimeConfig) -> float | None:
    reader = open_reader(cfg.bag)
    try:
        conn = find_connection(reader, cfg.image_topic, IMAGE_TYPES, "image")
        return conn.msgcount / max((reader.duration or 1) / 1e9, 1e-9) if conn.msgcount > 1 else None
    finally:
        reader.close()


def _phase(children: ChildProcesses, graph: GraphWatcher, cfg: RealtimeConfig, name: str,
           options: list[str]) -> dict[str, Any]:
    """One recorder + player run; its live_metrics, the recording and the first stamp of ours."""
    if cfg.image_topic:
        options = [*options, "--image-topic", cfg.image_topic]
    run = play_and_record(children, graph, cfg.node, cfg.camera_topic, cfg.bag, Path(cfg.out_dir) / "live" / name,
                          options, overlay=False, name=name, start_timeout=cfg.node_start_timeout_s)
    first = int(run.info["offset_ns"]) + int(run.info["first_stamp_ns"])
    metrics = live_metrics(read_recording(run.recording, cfg.node), int(run.info["published"]),
                           float(run.info["elapsed_s"]), first)
    metrics.update(recording=str(run.recording), first_stamp_ns=first)
    return metrics


def run_realtime(cfg: RealtimeConfig) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    metrics: dict[str, Any] = {"bag": str(cfg.bag), "mode": "realtime", "node": cfg.node, "status": "ok"}
    if not cfg.spawn_node and "ROS_DOMAIN_ID" not in os.environ:
        print("casseg-replay: note: ROS_DOMAIN_ID is not set; using domain 0 to reach the running node",
              file=sys.stderr)
    if not cfg.spawn_node and settings_left_to_the_node(cfg):
        print(f"casseg-replay: note: the running node {cfg.node} keeps its own parameters; "
              f"{', '.join(settings_left_to_the_node(cfg))} apply only with --spawn-node "
              f"(or set them on the node: casseg-ctl param set)", file=sys.stderr)
    domain = random_domain_id() if cfg.spawn_node else int(os.environ.get("ROS_DOMAIN_ID", "0"))
    env = loopback_env(domain) if cfg.spawn_node else dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        rate_hz = _recorded_rate_hz(cfg)
    except BagError as exc:  # before anything ran: nothing written
        raise ReplayError(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)  # from here on the live run's logs and metrics are kept
    shutil.rmtree(out / "live", ignore_errors=True)
    try:
        with ChildProcesses(out / "live" / "logs", env) as children, GraphWatcher(domain, env) as graph:
            if cfg.spawn_node:
                argv = node_command(cfg.model_path, cfg.camera_topic, cfg.node.strip("/"),
                                    params=spawned_node_params(cfg))
                start_node(children, graph, argv, cfg.node, cfg.node_start_timeout_s)
            else:
                graph.wait_for_lifecycle_state(cfg.node, "active", cfg.node_start_timeout_s)
            recorded = _phase(children, graph, cfg, "recorded_rate", ["--rate-scale", str(cfg.rate_scale)] + (
                ["--max-frames", str(cfg.max_frames)] if cfg.max_frames else []))
            recorded["rate_hz"] = round(rate_hz * cfg.rate_scale, 3) if rate_hz else None
            metrics["at_recorded_rate"] = recorded
            if cfg.throughput_frames > 0:
                metrics["max_throughput"] = _phase(children, graph, cfg, "max_throughput", [
                    "--interval-ms", "2", "--loop-frames", str(cfg.throughput_frames)])
    except (RuntimeError, ReadinessTimeout, KeyboardInterrupt) as exc:
        metrics.update(status="error", errors=[str(exc) or type(exc).__name__])
        write_json(out / "metrics.json", metrics)
        raise ReplayError(str(exc) or type(exc).__name__) from exc
    metrics["latency_ms"] = {"e2e_at_recorded_rate": recorded["latency_ms"]}
    write_json(out / "metrics.json", metrics)
    latencies = read_recording(Path(recorded["recording"]), cfg.node).since(recorded["first_stamp_ns"]).latencies_s()
    write_report(out, "casseg_ros live replay (realtime)", {**metrics, **{k: recorded[k] for k in (
        "frames_published", "frames_received", "dropped", "output_fps")}}, [],
        {"stamp -> mask received": latencies},
        intro=f"Bag `{cfg.bag}` published on `{cfg.camera_topic}` at the recorded rate "
              f"({recorded['rate_hz']} Hz); node `{cfg.node}`. Max throughput (frames back to back): "
              f"{metrics.get('max_throughput', {}).get('output_fps')} FPS.")
    return metrics
