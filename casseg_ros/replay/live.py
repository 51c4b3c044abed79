"""Live replay against the running node, as separate processes over DDS.

    python -m casseg_ros.replay.live player   --bag B --topic /camera/image_raw [--loop-frames N] [--back-to-back]
    python -m casseg_ros.replay.live recorder --out OUT_BAG [--node /casseg_ros]

player   publishes a recording's camera frames at the recorded rate (SensorData QoS, like a camera
         driver). Frames are re-stamped `bag stamp + offset`, offset fixed at start so that stamps are
         "now" while the recorded spacing is kept; the offset is written to --offset-file (before
         the first frame), which maps every output back to its recorded frame and ground truth.
recorder subscribes to the node's outputs (mask, overlay, scene graph, labels, /diagnostics) as
         serialised messages and writes them, receive-time stamped like `ros2 bag record`, into an
         mcap rosbag2 (rosbags); the bag is closed and moved into place on SIGINT/SIGTERM.
`ChildProcesses` starts such processes on loopback DDS in a private domain and always stops them;
`run_realtime` (casseg-replay --realtime) measures latency at the recorded rate and max throughput.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from casseg_ros.fileio import atomic_write_text
from casseg_ros.replay.bag import (
    IMAGE_TYPE, IMAGE_TYPES, LABEL_INFO_TYPE, SCENE_GRAPH_TYPE, BagError, OutputBag, find_connection,
    header_stamp_of, open_reader, typestore,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK_PROFILE = REPO_ROOT / "config" / "fastdds_loopback.xml"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"


# --------------------------------------------------------------------------- child processes
def loopback_env(domain_id: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a child rclpy process: loopback-only Fast DDS profile + a private domain."""
    env = dict(os.environ)
    env.update(FASTDDS_DEFAULT_PROFILES_FILE=str(LOOPBACK_PROFILE), ROS_DOMAIN_ID=str(domain_id),
               RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p))
    if extra:
        env.update(extra)
    return env


def random_domain_id() -> int:
    # Fast DDS derives ports from the domain id; ids above 232 overflow the port range.
    return random.SystemRandom().randint(1, 232)


class ChildProcesses:
    """Named child processes, each in its own session (so a Ctrl-C in the terminal reaches only
    us and we stop them in order), logs in `log_dir`. `stop_all` runs on exit, error or signal:
    SIGINT (clean ROS shutdown), then SIGTERM, then SIGKILL."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Any] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT),
                                start_new_session=True)
        self.procs[name], self._logs[name] = proc, log
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def check_alive(self, *names: str) -> None:
        for name in names:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} process exited with status {proc.returncode}; last log lines:\n"
                                   f"{self.log_tail(name)}")

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        proc = self.procs.get(name)
        if proc is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        log = self._logs.pop(name, None)
        if log:
            log.close()
        return proc.returncode

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def __enter__(self) -> "ChildProcesses":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def node_command(model_path: Path, camera_topic: str, node_name: str = "casseg_ros", backend: str = "torch",
                 device: str = "cpu", input_size: tuple[int, int] | None = None) -> list[str]:
    h, w = input_size if input_size else (0, 0)
    return [sys.executable, "-m", "casseg_ros.ros.segment_node", "--ros-args",
            "-r", f"__node:={node_name}", "-r", f"image:={camera_topic}",
            "-p", f"model_path:={Path(model_path).resolve()}", "-p", f"backend:={backend}",
            "-p", f"device:={device}", "-p", f"input_height:={h}", "-p", f"input_width:={w}"]


# --------------------------------------------------------------------------- player
def _init_rclpy():
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    # Our own SIGINT/SIGTERM handling (below) closes files before exit; rclpy's would not.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    return rclpy


class _StopFlag:
    def __init__(self):
        self.stop = False
        signal.signal(signal.SIGINT, self._set)
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, *_):
        self.stop = True


def load_frames(bag: Path, image_topic: str | None, max_frames: int | None = None):
    """[(bag stamp ns, raw CDR)] of the image topic, and its message type."""
    reader = open_reader(bag)
    try:
        conn = find_connection(reader, image_topic, IMAGE_TYPES, "image")
        frames = []
        for _, _, raw in reader.messages(connections=[conn]):
            raw = bytes(raw)
            frames.append((header_stamp_of(raw, conn.msgtype), raw))
            if max_frames and len(frames) >= max_frames:
                break
    finally:
        reader.close()
    return frames, conn.msgtype


def player_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="casseg_ros.replay.live player")
    p.add_argument("--bag", type=Path, required=True)
    p.add_argument("--image-topic", default=None, help="topic in the bag (default: the only image topic)")
    p.add_argument("--topic", required=True, help="topic to publish on")
    p.add_argument("--rate-scale", type=float, default=1.0)
    p.add_argument("--back-to-back", action="store_true",
                   help="ignore the recorded rate: publish every --interval-ms (far faster than the node runs)")
    p.add_argument("--interval-ms", type=float, default=2.0)
    p.add_argument("--loop-frames", type=int, default=0, help="publish this many frames, looping the bag")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--offset-file", type=Path, default=None)
    p.add_argument("--wait-subscribers", default="", help="comma-separated topics that must have a subscriber "
                                                          "before the first frame (besides --topic)")
    p.add_argument("--wait-timeout", type=float, default=120.0)
    a = p.parse_args(argv)

    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image


    try:
        frames, msgtype = load_frames(a.bag, a.image_topic, a.max_frames)
    except BagError as exc:
        print(f"player: error: {exc}", file=sys.stderr)
        return 1
    if not frames:
        print(f"player: error: no frames in {a.bag}", file=sys.stderr)
        return 1
    msg_class = Image if msgtype == IMAGE_TYPE else CompressedImage
    messages = [deserialize_message(raw, msg_class) for _, raw in frames]
    stamps = np.array([s for s, _ in frames], dtype=np.int64)
    period = int(np.median(np.diff(stamps))) if len(stamps) > 1 else 100_000_000
    span = int(stamps[-1] - stamps[0]) + period  # one loop of the bag, in ns

    stop = _StopFlag()
    rclpy = _init_rclpy()
    node = rclpy.create_node(f"casseg_player_{os.getpid()}")
    pub = node.create_publisher(msg_class, a.topic, qos_profile_sensor_data)
    waits = [t for t in a.wait_subscribers.split(",") if t]

    def missing() -> list[str]:
        # Our own topic: a *matched* reader (publisher side), not just one seen in the graph.
        return ([a.topic] if pub.get_subscription_count() == 0 else []) + [
            t for t in waits if node.count_subscribers(t) == 0]

    deadline = time.monotonic() + a.wait_timeout
    while not stop.stop and missing():
        if time.monotonic() > deadline:
            absent = missing()
            print(f"player: error: no subscriber on {absent} after {a.wait_timeout:.0f} s", file=sys.stderr)
            node.destroy_node()
            rclpy.try_shutdown()
            return 1
        time.sleep(0.05)
    time.sleep(1.0)  # the subscriber side of the match may complete a little later
    total = a.loop_frames or len(frames)
    t0_ns = time.time_ns()
    offset = t0_ns - int(stamps[0])
    if a.offset_file:
        # At rate_scale 1, published stamp = recorded stamp + offset_ns (how outputs map back to frames).
        atomic_write_text(a.offset_file, json.dumps({"offset_ns": offset, "first_stamp_ns": int(stamps[0]),
                                                     "t0_ns": t0_ns, "rate_scale": a.rate_scale,
                                                     "span_ns": span, "frames_in_bag": len(frames)}))
    print(f"player: publishing {total} frames on {a.topic} "
          f"({'back to back' if a.back_to_back else f'{1e9 / period * a.rate_scale:.1f} Hz'})", flush=True)
    published = 0
    t_mono0 = time.monotonic()
    for k in range(total):
        if stop.stop:
            break
        i, loop = k % len(frames), k // len(frames)
        # Recorded spacing divided by rate_scale, so stamps stay "now" at any playback speed.
        stamp = t0_ns + int((int(stamps[i]) - int(stamps[0]) + loop * span) / a.rate_scale)
        if not a.back_to_back:
            delay = (stamp - t0_ns) / 1e9 - (time.monotonic() - t_mono0)
            if delay > 0:
                time.sleep(delay)
        else:
            time.sleep(a.interval_ms / 1000.0)
            stamp = time.time_ns()  # stamps must stay unique and "now" even without pacing
        msg = messages[i]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        pub.publish(msg)
        published += 1
    elapsed = time.monotonic() - t_mono0
    print(f"player: published {published} frames in {elapsed:.2f} s", flush=True)
    if a.offset_file:
        data = json.loads(a.offset_file.read_text())
        data.update(published=published, elapsed_s=elapsed, back_to_back=a.back_to_back)
        atomic_write_text(a.offset_file, json.dumps(data))
    time.sleep(0.3)  # give DDS a moment to deliver the last sample before the participant goes away
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# --------------------------------------------------------------------------- recorder
def recorder_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="casseg_ros.replay.live recorder")
    p.add_argument("--out", type=Path, required=True, help="rosbag2 directory to create (mcap)")
    p.add_argument("--node", default="/casseg_ros")
    p.add_argument("--no-overlay", action="store_true", help="do not subscribe to the overlay (the node then skips it)")
    p.add_argument("--ready-file", type=Path, default=None,
                   help="written once the node's mask publisher is matched to this recorder")
    a = p.parse_args(argv)

    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from casseg_msgs.msg import LabelInfo, SceneGraph

    stop = _StopFlag()
    rclpy = _init_rclpy()
    node = rclpy.create_node(f"casseg_recorder_{os.getpid()}")
    bag = OutputBag(a.out)
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    ns = a.node.rstrip("/")
    topics = [(f"{ns}/mask", Image, IMAGE_TYPE, reliable), (f"{ns}/scene_graph", SceneGraph, SCENE_GRAPH_TYPE, reliable),
              (f"{ns}/labels", LabelInfo, LABEL_INFO_TYPE, latched), ("/diagnostics", DiagnosticArray, DIAGNOSTICS_TYPE, reliable)]
    if not a.no_overlay:
        topics.insert(1, (f"{ns}/overlay", Image, IMAGE_TYPE, reliable))
    subs = []
    for topic, cls, msgtype, qos in topics:
        bag.add_topic(topic, msgtype)

        def callback(raw: bytes, topic=topic):
            bag.write(topic, time.time_ns(), raw)  # receive time, as `ros2 bag record` stamps messages
        subs.append(node.create_subscription(cls, topic, callback, qos, raw=True))
    print(f"recorder: recording {[t for t, *_ in topics]} to {a.out}", flush=True)
    ready_pending = a.ready_file is not None
    try:
        while not stop.stop:
            rclpy.spin_once(node, timeout_sec=0.1)
            # A matched publisher, not a subscriber seen in the graph: a recorder of an earlier
            # phase can linger in discovery data and make a player start before we can receive.
            if ready_pending and subs[0].get_publisher_count() > 0:
                atomic_write_text(a.ready_file, json.dumps({"matched_publishers": subs[0].get_publisher_count()}))
                ready_pending = False
    finally:
        path = bag.close()
        print(f"recorder: wrote {path} {bag.counts}", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# --------------------------------------------------------------------------- analysis of a recording
@dataclass
class LiveRecording:
    """What the recorder captured, decoded: per mask its stamp and receive time."""

    mask_stamps_ns: np.ndarray
    mask_receive_ns: np.ndarray
    messages: dict[str, int]
    last_diagnostics: dict[str, str]
    diagnostics_series: list[dict[str, str]]


def read_recording(bag_path: Path, node: str = "/casseg_ros") -> LiveRecording:
    from rosbags.rosbag2 import Reader

    store = typestore()
    ns = node.rstrip("/")
    stamps, received, counts = [], [], {}
    diags: list[dict[str, str]] = []
    with Reader(Path(bag_path)) as reader:
        for conn, log_time, raw in reader.messages():
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            if conn.topic == f"{ns}/mask":
                stamps.append(header_stamp_of(bytes(raw), IMAGE_TYPE))
                received.append(log_time)
            elif conn.topic == "/diagnostics":
                msg = store.deserialize_cdr(raw, DIAGNOSTICS_TYPE)
                for status in msg.status:
                    if status.name.startswith(ns):
                        diags.append({kv.key: kv.value for kv in status.values})
    return LiveRecording(np.asarray(stamps, np.int64), np.asarray(received, np.int64), counts,
                         diags[-1] if diags else {}, diags)


def _diag_int(d: dict[str, str], key: str) -> int | None:
    try:
        return int(float(d[key]))
    except (KeyError, ValueError):
        return None


def live_metrics(rec: LiveRecording, published: int, elapsed_s: float,
                 first_stamp_ns: int | None = None) -> dict[str, Any]:
    """Latency/drops of one player run. Masks stamped before the player's first frame are not
    ours (another publisher in the same domain) and are left out, and counted."""
    from casseg_ros.replay.metrics import percentiles_ms

    foreign = 0
    if first_stamp_ns is not None:
        ours = rec.mask_stamps_ns >= first_stamp_ns
        foreign = int((~ours).sum())
        rec = LiveRecording(rec.mask_stamps_ns[ours], rec.mask_receive_ns[ours], rec.messages,
                            rec.last_diagnostics, rec.diagnostics_series)

    latency_s = ((rec.mask_receive_ns - rec.mask_stamps_ns) / 1e9).tolist()
    received = int(rec.mask_stamps_ns.size)
    span_s = (rec.mask_receive_ns.max() - rec.mask_receive_ns.min()) / 1e9 if received > 1 else 0.0
    d = rec.last_diagnostics
    return {
        "frames_published": published,
        "frames_received": received,
        "dropped": published - received,
        "publish_s": round(elapsed_s, 3),
        "output_fps": round((received - 1) / span_s, 3) if span_s > 0 else None,
        "latency_ms": percentiles_ms(latency_s),
        "node_diagnostics": {k: d.get(k) for k in (
            "frames_received", "frames_processed", "dropped_in_node", "lost_in_transport", "inputs_rejected",
            "inference_errors", "processing_errors", "last_reject_reason", "last_error", "forward_p50_ms", "host_overhead_p50_ms")},
        "errors_in_node": sum(_diag_int(d, k) or 0 for k in ("inputs_rejected", "inference_errors", "processing_errors")),
        "foreign_masks_ignored": foreign,
    }


# --------------------------------------------------------------------------- casseg-replay --realtime
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
    rate_scale: float = 1.0
    throughput_frames: int = 1000
    max_frames: int | None = None
    node_start_timeout_s: float = 120.0


def run_phase(children: ChildProcesses, cfg: RealtimeConfig, name: str, work: Path, back_to_back: bool,
              frames: int | None) -> dict[str, Any]:
    """One recorder + one player run; returns live_metrics of it."""
    py = sys.executable
    rec_bag, offset_file = work / f"{name}_recording", work / f"{name}_player.json"
    ready_file = work / f"{name}_recorder_ready.json"
    ready_file.unlink(missing_ok=True)
    children.start(f"{name}_recorder", [py, "-m", "casseg_ros.replay.live", "recorder", "--out", str(rec_bag),
                                        "--node", cfg.node, "--no-overlay", "--ready-file", str(ready_file)])
    deadline = time.monotonic() + cfg.node_start_timeout_s
    while not ready_file.exists():
        children.check_alive(*(n for n in children.procs if n == "node"), f"{name}_recorder")
        if time.monotonic() > deadline:
            raise RuntimeError(f"recorder never matched {cfg.node.rstrip('/')}/mask: "
                               f"{children.log_tail(f'{name}_recorder')}")
        time.sleep(0.1)
    argv = [py, "-m", "casseg_ros.replay.live", "player", "--bag", str(cfg.bag), "--topic", cfg.camera_topic,
            "--offset-file", str(offset_file), "--wait-subscribers", f"{cfg.node.rstrip('/')}/mask",
            "--wait-timeout", str(cfg.node_start_timeout_s), "--rate-scale", str(cfg.rate_scale)]
    if cfg.image_topic:
        argv += ["--image-topic", cfg.image_topic]
    if back_to_back:
        argv += ["--back-to-back", "--loop-frames", str(frames)]
    elif frames:
        argv += ["--max-frames", str(frames)]
    player = children.start(f"{name}_player", argv)
    while player.poll() is None:
        children.check_alive(*(n for n in children.procs if n == "node"), f"{name}_recorder")
        time.sleep(0.2)
    if player.returncode != 0:
        raise RuntimeError(f"player failed ({player.returncode}): {children.log_tail(f'{name}_player')}")
    time.sleep(2.0)  # outputs of the last frames are still on their way
    children.stop(f"{name}_recorder")
    info = json.loads(offset_file.read_text())
    metrics = live_metrics(read_recording(rec_bag, cfg.node), int(info["published"]), float(info["elapsed_s"]),
                           int(info["offset_ns"]) + int(info["first_stamp_ns"]))
    metrics["recording"] = str(rec_bag)
    metrics["first_stamp_ns"] = int(info["offset_ns"]) + int(info["first_stamp_ns"])
    return metrics


def run_realtime(cfg: RealtimeConfig) -> dict[str, Any]:
    from casseg_ros.replay.offline import ReplayError
    from casseg_ros.replay.report import write_json, write_report

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "live"
    work.mkdir(exist_ok=True)
    for stale in work.glob("*_recording"):
        import shutil

        shutil.rmtree(stale, ignore_errors=True)
    metrics: dict[str, Any] = {"bag": str(cfg.bag), "mode": "realtime", "node": cfg.node, "status": "ok"}
    if not cfg.spawn_node and ("ROS_DOMAIN_ID" not in os.environ):
        print("casseg-replay: note: ROS_DOMAIN_ID is not set; using domain 0 to reach the running node",
              file=sys.stderr)
    domain = random_domain_id() if cfg.spawn_node else int(os.environ.get("ROS_DOMAIN_ID", "0"))
    env = loopback_env(domain) if cfg.spawn_node else dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        reader = open_reader(cfg.bag)
        try:
            conn = find_connection(reader, cfg.image_topic, IMAGE_TYPES, "image")
            rate_hz = conn.msgcount / max((reader.duration or 1) / 1e9, 1e-9) if conn.msgcount > 1 else None
        finally:
            reader.close()
    except BagError as exc:
        metrics.update(status="error", errors=[str(exc)])
        write_json(out / "metrics.json", metrics)
        raise ReplayError(str(exc)) from exc
    try:
        with ChildProcesses(work / "logs", env) as children:
            if cfg.spawn_node:
                children.start("node", node_command(cfg.model_path, cfg.camera_topic, cfg.node.strip("/"),
                                                    cfg.backend, cfg.device, cfg.input_size))
            recorded = run_phase(children, cfg, "recorded_rate", work, back_to_back=False, frames=cfg.max_frames)
            recorded["rate_hz"] = round(rate_hz * cfg.rate_scale, 3) if rate_hz else None
            metrics["at_recorded_rate"] = recorded
            if cfg.throughput_frames > 0:
                metrics["max_throughput"] = run_phase(children, cfg, "max_throughput", work, back_to_back=True,
                                                      frames=cfg.throughput_frames)
    except (RuntimeError, KeyboardInterrupt) as exc:
        metrics.update(status="error", errors=[str(exc) or type(exc).__name__])
        write_json(out / "metrics.json", metrics)
        raise ReplayError(str(exc) or type(exc).__name__) from exc
    metrics["latency_ms"] = {"e2e_at_recorded_rate": recorded["latency_ms"]}
    write_json(out / "metrics.json", metrics)
    write_report(out, "casseg_ros live replay (realtime)", {**metrics, **{k: recorded[k] for k in (
        "frames_published", "frames_received", "dropped", "output_fps")}}, [],
        {"stamp -> mask received": _latencies(recorded["recording"], cfg.node, recorded["first_stamp_ns"])},
        intro=f"Bag `{cfg.bag}` published on `{cfg.camera_topic}` at the recorded rate "
              f"({recorded['rate_hz']} Hz); node `{cfg.node}`. Max throughput (frames back to back): "
              f"{metrics.get('max_throughput', {}).get('output_fps')} FPS.")
    return metrics


def _latencies(bag: str, node: str, first_stamp_ns: int) -> list[float]:
    rec = read_recording(Path(bag), node)
    ours = rec.mask_stamps_ns >= first_stamp_ns
    return ((rec.mask_receive_ns[ours] - rec.mask_stamps_ns[ours]) / 1e9).tolist()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("player", "recorder"):
        print("usage: python -m casseg_ros.replay.live {player|recorder} ...", file=sys.stderr)
        return 2
    return (player_main if argv[0] == "player" else recorder_main)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
