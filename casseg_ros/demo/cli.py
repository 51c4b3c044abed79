"""The one-command demo: the real casseg_ros node on a bundled recording, over loopback DDS.

    python -m casseg_ros.demo --out out/demo        (what `make demo` runs)

Three processes in a private DDS domain on loopback (config/fastdds_loopback.xml), started and
stopped with casseg_ros.processes.children, ready when the ROS graph says so (casseg_ros.replay.live.session):
  player    data/demo.mcap's camera frames on /camera/image_raw at the recorded rate, each with its
            /camera/camera_info and registered depth /camera/depth/image_raw (same stamp)
  node      casseg_ros (python -m casseg_ros.ros.node_main) with models/casseg_demo.safetensors
  recorder  the node's mask, colour mask, overlay, camera_info, point cloud, scene graph,
            label_info and /diagnostics -> an mcap bag
Then `casseg_ros.demo.checks` evaluates the recording against the bag's ground-truth labels and
depth and checks the standard outputs (label_info arrived; a camera_info with every mask's stamp,
equal to the camera's; colour mask == palette[mask]; every valid point of ~/points back-projects
to its pixel, carries its label and the camera's depth), and out/demo/ gets:
  report.md            open this first (latency, mIoU, per-class IoU, overlays, colour masks,
                       a bird's-eye view of one frame's labelled points, the 3D figures and checks)
  overlays/*.png       the node's ~/overlay output, for sample frames
  scene_graphs.json    every frame's scene graph as the node published it (replay's schema:
                       `{"frames": [scene_graph_record(...)]}`, stamps as recorded in the bag)
  metrics.json         all numbers;   recording/ the node's outputs (rosbag2, mcap);   logs/
  player.json          the player's stamp offset and counts
Every child process is stopped on success, error and Ctrl-C; failures (a failed output check
included) exit non-zero with the reason.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path

from casseg_ros.demo.checks import DEPTH_MAX_RANGE_M, NODE, DemoError, evaluate
from casseg_ros.parameter_rules import BACKENDS, OPENVINO_DEVICES, PRECISION_SETTINGS, argparse_type
from casseg_ros.processes.children import ChildProcesses, loopback_env, node_command, random_domain_id, \
    sigint_default
from casseg_ros.processes.readiness import GraphWatcher, ReadinessTimeout
from casseg_ros.replay.bag import BagError, open_reader
from casseg_ros.replay.live.session import PlayedRun, play_and_record, start_node
from casseg_ros.resources import DEMO_BAG, DEMO_MODEL, resolve_data_path
from casseg_ros.ros.topics import camera_siblings

CAMERA_TOPIC = "/camera/image_raw"


def run_live(bag: Path, model: Path, out: Path, timeout_s: float, backend: dict[str, str] | None = None) -> PlayedRun:
    """Node, then recorder, then player at the recorded rate; the recording is `out/recording/`,
    the player's info (stamp offset, counts) `out/player.json`. `backend`: node parameters
    (backend, openvino_device, precision, calibration) other than the node's defaults."""
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    domain = random_domain_id()
    env = loopback_env(domain)
    print(f"demo: starting node, recorder and player (loopback DDS, ROS_DOMAIN_ID={domain}); logs in {logs}",
          flush=True)
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    with ChildProcesses(logs, env) as children, GraphWatcher(domain, env, name="casseg_demo") as graph:
        try:
            start_node(children, graph, node_command(model, CAMERA_TOPIC, NODE.strip("/"), params={
                "depth_max_range_m": DEPTH_MAX_RANGE_M, **(backend or {})}), NODE, left())
            print("demo: node is up, playing the recording at its recorded rate", flush=True)
            # The node's camera_info and depth subscriptions are in the graph before the first
            # frame, so the player waits until its companions are matched to them.
            siblings = ",".join(camera_siblings(CAMERA_TOPIC))
            return play_and_record(children, graph, NODE, CAMERA_TOPIC, bag, out,
                                   ["--wait-subscribers", siblings], name="demo", timeout=left(),
                                   start_timeout=left(), points=True)
        except ReadinessTimeout as exc:
            raise DemoError(f"{exc} (limit {timeout_s:.0f} s); node log:\n{children.log_tail('node')}") from None
        except RuntimeError as exc:
            raise DemoError(str(exc)) from None


def _inputs(bag: Path | None, model: Path | None) -> tuple[Path, Path]:
    """The recording and the weights, absolute: given paths as they are, defaults from the
    installed package data (or the working directory of a checkout)."""
    try:
        bag = bag if bag is not None else resolve_data_path(DEMO_BAG, "demo recording")
        model = model if model is not None else resolve_data_path(DEMO_MODEL, "demo weights")
    except FileNotFoundError as exc:
        raise DemoError(f"{exc} (pass --bag / --model)") from None
    if not bag.is_file() and not bag.is_dir():
        raise DemoError(f"demo recording {bag} not found (generate it: python scripts/make_demo_bag.py)")
    if not model.is_file():
        raise DemoError(f"model {model} not found (the demo weights ship in models/; or pass --model)")
    try:
        open_reader(bag).close()
    except BagError as exc:
        raise DemoError(str(exc)) from None
    return bag.resolve(), model.resolve()


@sigint_default()  # Ctrl-C stops the demo and its children also when started from a background job
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m casseg_ros.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--bag", type=Path, default=None, help=f"default: the installed {DEMO_BAG}")
    p.add_argument("--model", type=Path, default=None, help=f"default: the installed {DEMO_MODEL}")
    p.add_argument("--timeout", type=float, default=170.0, help="seconds for the live part")
    p.add_argument("--backend", type=argparse_type("backend"), default=None,
                   help=f"{' | '.join(BACKENDS)}: the node's backend parameter (default: the node's default)")
    p.add_argument("--openvino-device", type=argparse_type("openvino_device"), default=None,
                   help=f"{' | '.join(OPENVINO_DEVICES)}: the node's openvino_device (backend openvino; only CPU verified)")
    p.add_argument("--precision", type=argparse_type("precision"), default=None,
                   help=f"{' | '.join(PRECISION_SETTINGS)}: the node's precision parameter (default: the node's default)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="the node's calibration parameter (a bag or an image folder, for int8 and precision auto)")
    a = p.parse_args(argv)
    backend = {k: v for k, v in (("backend", a.backend), ("openvino_device", a.openvino_device),
                                 ("precision", a.precision),
                                 ("calibration", str(a.calibration.resolve()) if a.calibration else None))
               if v is not None}
    t0 = time.monotonic()

    def terminate(signum, frame):  # SIGTERM (e.g. `kill`, a CI timeout): clean up like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        bag, model = _inputs(a.bag, a.model)
        a.out.mkdir(parents=True, exist_ok=True)
        run = run_live(bag, model, a.out, a.timeout, backend)
        print("demo: evaluating the recording against the ground-truth labels", flush=True)
        metrics = evaluate(bag, model, run, a.out)
    except KeyboardInterrupt:
        print("demo: interrupted; all child processes stopped", file=sys.stderr)
        return 130
    except (DemoError, BagError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    lat, iou = metrics["latency_ms"]["e2e (camera stamp -> mask received)"], metrics["iou"]
    print(f"demo: {metrics['frames_received']}/{metrics['frames_published']} frames segmented by the node, "
          f"latency p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms, mIoU {iou['miou']:.1f} % "
          f"({time.monotonic() - t0:.0f} s). Open {a.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
