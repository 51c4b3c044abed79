"""The one-command demo: the real casseg_ros node on a bundled recording, over loopback DDS.

    python -m casseg_ros.demo --out out/demo        (what `make demo` runs)

Three processes in a private DDS domain on loopback (config/fastdds_loopback.xml), started and
stopped with casseg_ros.ros.processes, ready when the ROS graph says so (casseg_ros.replay.session):
  player    data/demo.mcap's camera frames on /camera/image_raw at the recorded rate
  node      casseg_ros (python -m casseg_ros.ros.segment_node) with models/casseg_demo.safetensors
  recorder  the node's mask, overlay, scene graph, labels and /diagnostics -> an mcap bag
Then the recording is evaluated against the bag's ground-truth labels and out/demo/ gets:
  report.md            open this first (latency, mIoU, per-class IoU, overlays)
  overlays/*.png       the node's ~/overlay output | ground truth, for sample frames
  scene_graphs.json    every frame's scene graph as the node published it (replay's schema:
                       `{"frames": [scene_graph_record(...)]}`, stamps as recorded in the bag)
  metrics.json         all numbers;   recording/ the node's outputs (rosbag2, mcap);   logs/
  player.json          the player's stamp offset and counts
Every child process is stopped on success, error and Ctrl-C; failures exit non-zero with the reason.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from casseg_ros.model.checkpoint import read_vocabulary
from casseg_ros.perception import make_overlay
from casseg_ros.perception.scene_graph import scene_graph_record
from casseg_ros.replay.bag import IMAGE_TYPE, IMAGE_TYPES, LABEL_INFO_TYPE, SCENE_GRAPH_TYPE, BagError, \
    find_connection, open_reader, stamp_ns, typestore
from casseg_ros.replay.metrics import IoUEvaluator
from casseg_ros.replay.offline import gt_mapping
from casseg_ros.replay.recording import live_metrics, read_recording
from casseg_ros.replay.report import save_png, scene_graph_markdown, write_json, write_report
from casseg_ros.replay.session import PlayedRun, play_and_record, start_node
from casseg_ros.resources import DEMO_BAG, DEMO_MODEL, resolve_data_path
from casseg_ros.ros.messages import scene_graph_from_msg
from casseg_ros.ros.processes import ChildProcesses, loopback_env, node_command, random_domain_id
from casseg_ros.ros.readiness import GraphWatcher, ReadinessTimeout

CAMERA_TOPIC = "/camera/image_raw"
NODE = "/casseg_ros"


class DemoError(RuntimeError):
    pass


def _image_array(msg) -> np.ndarray:
    """rosbags Image (rgb8 / mono8 as the demo bag and the node write them) -> numpy, no copy."""
    data = np.asarray(msg.data, dtype=np.uint8)
    channels = {"rgb8": 3, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise DemoError(f"unexpected encoding {msg.encoding!r} in the recording")
    rows = data.reshape(msg.height, msg.step)[:, : msg.width * channels]
    return rows.reshape(msg.height, msg.width, channels) if channels == 3 else rows


def _read_input_bag(bag: Path) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], list[str] | None]:
    """{stamp: rgb}, {stamp: label ids} and the label names of the demo recording."""
    store = typestore()
    reader = open_reader(bag)
    try:
        image_conn = find_connection(reader, None, IMAGE_TYPES, "image")
        label_conns = [c for c in reader.connections if c.msgtype == IMAGE_TYPE and "label" in c.topic]
        info_conns = [c for c in reader.connections if c.msgtype == LABEL_INFO_TYPE]
        images, labels, names = {}, {}, None
        for conn, _, raw in reader.messages(connections=[image_conn, *label_conns, *info_conns]):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.msgtype == LABEL_INFO_TYPE:
                names = [c.class_name for c in sorted(msg.class_map, key=lambda c: c.class_id)]
            elif conn.id == image_conn.id:
                images[stamp_ns(msg.header)] = _image_array(msg)
            else:
                labels[stamp_ns(msg.header)] = _image_array(msg).astype(np.int64)
    finally:
        reader.close()
    return images, labels, names


def run_live(bag: Path, model: Path, out: Path, timeout_s: float) -> PlayedRun:
    """Node, then recorder, then player at the recorded rate; the recording is `out/recording/`,
    the player's info (stamp offset, counts) `out/player.json`."""
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
            start_node(children, graph, node_command(model, CAMERA_TOPIC, NODE.strip("/")), NODE, left())
            print("demo: node is up, playing the recording at its recorded rate", flush=True)
            return play_and_record(children, graph, NODE, CAMERA_TOPIC, bag, out, name="demo", timeout=left(),
                                   start_timeout=left())
        except ReadinessTimeout as exc:
            raise DemoError(f"{exc} (limit {timeout_s:.0f} s); node log:\n{children.log_tail('node')}") from None
        except RuntimeError as exc:
            raise DemoError(str(exc)) from None


def _frame_index(stamps: list[int]) -> dict[int, int]:
    """Recorded stamp -> index of the frame in the recording."""
    return {stamp: i for i, stamp in enumerate(sorted(stamps))}


def evaluate(bag: Path, model: Path, run: PlayedRun, out: Path, num_overlays: int = 8) -> dict[str, Any]:
    images, labels, gt_names = _read_input_bag(bag)
    index_of = _frame_index(list(images))
    store = typestore()
    rec = read_recording(run.recording, NODE)
    offset, first = int(run.info["offset_ns"]), int(run.info["first_stamp_ns"])
    metrics = live_metrics(rec, int(run.info["published"]), float(run.info["elapsed_s"]), offset + first)

    masks, overlays, graphs, names = {}, {}, [], None
    palette = read_vocabulary(model).palette  # the colours of the node's ~/mask/color and ~/overlay
    with Reader(run.recording) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic == f"{NODE}/label_info":
                msg = store.deserialize_cdr(raw, LABEL_INFO_TYPE)
                names = [c.class_name for c in sorted(msg.class_map, key=lambda c: c.class_id)]
            elif conn.topic == f"{NODE}/mask":
                msg = store.deserialize_cdr(raw, IMAGE_TYPE)
                masks[stamp_ns(msg.header) - offset] = _image_array(msg)
            elif conn.topic == f"{NODE}/overlay":
                msg = store.deserialize_cdr(raw, IMAGE_TYPE)
                overlays[stamp_ns(msg.header) - offset] = _image_array(msg)
            elif conn.topic == f"{NODE}/scene_graph":
                msg = store.deserialize_cdr(raw, SCENE_GRAPH_TYPE)
                recorded = stamp_ns(msg.header) - offset
                if recorded in index_of:  # one of our frames (not another publisher's)
                    graphs.append(scene_graph_record(index_of[recorded], recorded, msg.header.frame_id,
                                                     scene_graph_from_msg(msg)))
    if names is None:
        raise DemoError("the node's ~/label_info (vision_msgs/LabelInfo) never arrived in the recording")
    lut, missing = gt_mapping(gt_names, names) if gt_names else (None, [])
    iou = IoUEvaluator(names, lut)
    unmatched = 0
    for stamp, mask in sorted(masks.items()):
        if stamp < first:
            continue  # not one of our frames
        if stamp not in labels:
            unmatched += 1
            continue
        iou.update(mask.astype(np.int64), labels[stamp])
    metrics["iou"] = iou.result()
    metrics["masks_without_ground_truth"] = unmatched
    metrics["ground_truth_classes_not_in_model"] = missing
    metrics["stamp_offset_ns"] = offset

    shutil.rmtree(out / "overlays", ignore_errors=True)
    shutil.rmtree(out / "figures", ignore_errors=True)
    stamps = sorted(s for s in overlays if s in images)
    picks = [stamps[i] for i in np.linspace(0, len(stamps) - 1, num=min(num_overlays, len(stamps)), dtype=int)] if stamps else []
    panels = []
    for stamp in picks:
        index = index_of[stamp]
        save_png(out / "overlays" / f"frame_{index:04d}.png", overlays[stamp])
        row = [images[stamp], overlays[stamp]]
        if stamp in labels:
            gt = labels[stamp]
            gt_ids = np.where(gt < len(lut), lut[np.clip(gt, 0, len(lut) - 1)], 255) if lut is not None else gt
            row.append(make_overlay(images[stamp], gt_ids.astype(np.int32), palette, 0.7))
        panels.append((f"frame_{index:04d}", np.concatenate(row, axis=1)))
    graphs.sort(key=lambda g: g["frame"])
    write_json(out / "scene_graphs.json", {"frames": graphs})
    metrics.update(status="ok", bag=str(bag), recording=str(run.recording), classes=names)
    metrics["latency_ms"] = {"e2e (camera stamp -> mask received)": metrics.pop("latency_ms")}
    write_json(out / "metrics.json", metrics)
    extra = []
    if picks and graphs:
        middle = index_of[picks[len(picks) // 2]]
        graph = next((g for g in graphs if g["frame"] == middle), None)
        if graph is not None:
            extra = scene_graph_markdown(f"Scene graph of frame {middle} (as published on `{NODE}/scene_graph`)",
                                         graph["instances"], graph["relations"])
    write_report(out, "casseg_ros demo", metrics, panels,
                 {"camera stamp -> mask received": rec.since(offset + first).latencies_s()}, extra_sections=extra,
                 intro=f"The real `casseg_ros` node (separate process, loopback DDS) segmented `{bag.name}` played at "
                       f"its recorded rate; a recorder process captured its outputs into `recording/`. "
                       f"Figures: camera | node overlay (`{NODE}/overlay`) | ground truth. "
                       f"Per-frame overlays: `overlays/`; scene graphs: `scene_graphs.json`.")
    return metrics


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m casseg_ros.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--bag", type=Path, default=None, help=f"default: the installed {DEMO_BAG}")
    p.add_argument("--model", type=Path, default=None, help=f"default: the installed {DEMO_MODEL}")
    p.add_argument("--timeout", type=float, default=170.0, help="seconds for the live part")
    a = p.parse_args(argv)
    t0 = time.monotonic()

    def terminate(signum, frame):  # SIGTERM (e.g. `kill`, a CI timeout): clean up like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        bag, model = _inputs(a.bag, a.model)
        a.out.mkdir(parents=True, exist_ok=True)
        run = run_live(bag, model, a.out, a.timeout)
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
          f"latency p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms, mIoU {iou['miou']:.3f} "
          f"({time.monotonic() - t0:.0f} s). Open {a.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
