"""The one-command demo: the real casseg_ros node on a bundled recording, over loopback DDS.

    python -m casseg_ros.demo --out out/demo        (what `make demo` runs)

Three processes in a private DDS domain on loopback (config/fastdds_loopback.xml):
  player    data/demo.mcap's camera frames on /camera/image_raw at the recorded rate
  node      casseg_ros (python -m casseg_ros.ros.segment_node) with models/casseg_demo.safetensors
  recorder  the node's mask, overlay, scene graph, labels and /diagnostics -> an mcap bag
Then the recording is evaluated against the bag's ground-truth labels and out/demo/ gets:
  report.md            open this first (latency, mIoU, per-class IoU, overlays)
  overlays/*.png       the node's ~/overlay output | ground truth, for sample frames
  scene_graphs.json    every frame's scene graph as the node published it
  metrics.json         all numbers;   recording/ the node's outputs (rosbag2, mcap);   logs/
Every child process is stopped on success, error and Ctrl-C; failures exit non-zero with the reason.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from casseg_ros.replay.bag import IMAGE_TYPE, IMAGE_TYPES, LABEL_INFO_TYPE, SCENE_GRAPH_TYPE, BagError, \
    find_connection, open_reader, stamp_ns, typestore
from casseg_ros.replay.live import ChildProcesses, loopback_env, node_command, random_domain_id, read_recording

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BAG = REPO_ROOT / "data" / "demo.mcap"
DEFAULT_MODEL = REPO_ROOT / "models" / "casseg_demo.safetensors"
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
                names = [c.name for c in sorted(msg.classes, key=lambda c: c.class_id)]
            elif conn.id == image_conn.id:
                images[stamp_ns(msg.header)] = _image_array(msg)
            else:
                labels[stamp_ns(msg.header)] = _image_array(msg).astype(np.int64)
    finally:
        reader.close()
    return images, labels, names


def run_live(bag: Path, model: Path, out: Path, timeout_s: float) -> tuple[Path, dict[str, Any]]:
    """Node + recorder + player; returns the recording and the player's info (offset, counts)."""
    work = out / "recording"
    shutil.rmtree(work, ignore_errors=True)
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    player_info = out / "logs" / "player.json"
    py = sys.executable
    domain = random_domain_id()
    print(f"demo: starting node, recorder and player (loopback DDS, ROS_DOMAIN_ID={domain}); logs in {logs}",
          flush=True)
    deadline = time.monotonic() + timeout_s
    with ChildProcesses(logs, loopback_env(domain)) as children:
        children.start("node", node_command(model, CAMERA_TOPIC, NODE.strip("/")))
        children.start("recorder", [py, "-m", "casseg_ros.replay.live", "recorder", "--out", str(work), "--node", NODE])
        player = children.start("player", [
            py, "-m", "casseg_ros.replay.live", "player", "--bag", str(bag), "--topic", CAMERA_TOPIC,
            "--offset-file", str(player_info), "--wait-subscribers", f"{NODE}/mask,{NODE}/overlay",
            "--wait-timeout", str(max(10.0, timeout_s - 30.0))])
        announced = False
        while player.poll() is None:
            try:
                children.check_alive("node", "recorder")
            except RuntimeError as exc:
                raise DemoError(str(exc)) from None
            if not announced and player_info.exists():
                print("demo: node is up, playing the recording at its recorded rate", flush=True)
                announced = True
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout_s:.0f} s; node log:\n{children.log_tail('node')}")
            time.sleep(0.2)
        if player.returncode != 0:
            raise DemoError(f"player failed (exit {player.returncode}):\n{children.log_tail('player')}\n"
                            f"node log:\n{children.log_tail('node')}")
        time.sleep(2.0)  # the last frames' outputs are still being computed/delivered
        children.check_alive("node")
        if children.stop("recorder") != 0:
            raise DemoError(f"recorder failed:\n{children.log_tail('recorder')}")
    return work, json.loads(player_info.read_text())


def evaluate(bag: Path, recording: Path, player: dict[str, Any], out: Path, num_overlays: int = 8) -> dict[str, Any]:
    from casseg_ros.perception import make_overlay
    from casseg_ros.replay.live import live_metrics
    from casseg_ros.replay.metrics import IoUEvaluator
    from casseg_ros.replay.offline import gt_mapping
    from casseg_ros.replay.report import save_png, write_json, write_report

    images, labels, gt_names = _read_input_bag(bag)
    store = typestore()
    rec = read_recording(recording, NODE)
    offset = int(player["offset_ns"])
    metrics = live_metrics(rec, int(player["published"]), float(player["elapsed_s"]), offset + int(player["first_stamp_ns"]))

    masks, overlays, graphs, names, palette = {}, {}, [], None, None
    from rosbags.rosbag2 import Reader

    with Reader(recording) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic == f"{NODE}/labels":
                msg = store.deserialize_cdr(raw, LABEL_INFO_TYPE)
                classes = sorted(msg.classes, key=lambda c: c.class_id)
                names = [c.name for c in classes]
                palette = np.array([[c.color.r, c.color.g, c.color.b] for c in classes]) * 255.0 + 0.5
            elif conn.topic == f"{NODE}/mask":
                msg = store.deserialize_cdr(raw, IMAGE_TYPE)
                masks[stamp_ns(msg.header) - offset] = _image_array(msg)
            elif conn.topic == f"{NODE}/overlay":
                msg = store.deserialize_cdr(raw, IMAGE_TYPE)
                overlays[stamp_ns(msg.header) - offset] = _image_array(msg)
            elif conn.topic == f"{NODE}/scene_graph":
                msg = store.deserialize_cdr(raw, SCENE_GRAPH_TYPE)
                if stamp_ns(msg.header) - offset < int(player["first_stamp_ns"]):
                    continue  # not one of our frames
                graphs.append({
                    "stamp_ns": stamp_ns(msg.header), "recorded_stamp_ns": stamp_ns(msg.header) - offset,
                    "frame_id": msg.header.frame_id,
                    "nodes": [{"instance_id": n.instance_id, "class_id": n.class_id, "label": n.label,
                               "score": round(float(n.score), 4),
                               "bbox": [n.bbox.x_offset, n.bbox.y_offset, n.bbox.width, n.bbox.height],
                               "centroid": [round(n.centroid.x, 2), round(n.centroid.y, 2)], "area": n.area}
                              for n in msg.nodes],
                    "edges": [{"source": e.source, "target": e.target, "predicate": e.predicate,
                               "weight": round(float(e.weight), 4)} for e in msg.edges]})
    if names is None:
        raise DemoError("the node's ~/labels (LabelInfo) never arrived in the recording")
    palette = palette.clip(0, 255).astype(np.uint8)
    lut, missing = gt_mapping(gt_names, names) if gt_names else (None, [])
    iou = IoUEvaluator(names, lut)
    unmatched = 0
    for stamp, mask in sorted(masks.items()):
        if stamp < int(player["first_stamp_ns"]):
            continue  # not one of our frames
        if stamp not in labels:
            unmatched += 1
            continue
        iou.update(mask.astype(np.int64), labels[stamp])
    metrics["iou"] = iou.result()
    metrics["masks_without_ground_truth"] = unmatched
    metrics["ground_truth_classes_not_in_model"] = missing

    shutil.rmtree(out / "overlays", ignore_errors=True)
    shutil.rmtree(out / "figures", ignore_errors=True)
    stamps = sorted(s for s in overlays if s in images)
    picks = [stamps[i] for i in np.linspace(0, len(stamps) - 1, num=min(num_overlays, len(stamps)), dtype=int)] if stamps else []
    first = min(images) if images else 0
    period = (np.median(np.diff(sorted(images))) if len(images) > 1 else 1)
    panels = []
    for stamp in picks:
        index = int(round((stamp - first) / period))
        save_png(out / "overlays" / f"frame_{index:04d}.png", overlays[stamp])
        row = [images[stamp], overlays[stamp]]
        if stamp in labels:
            gt = labels[stamp]
            gt_ids = np.where(gt < len(lut), lut[np.clip(gt, 0, len(lut) - 1)], 255) if lut is not None else gt
            row.append(make_overlay(images[stamp], gt_ids.astype(np.int32), palette, 0.7))
        panels.append((f"frame_{index:04d}", np.concatenate(row, axis=1)))
    write_json(out / "scene_graphs.json", {"node": NODE, "frames": graphs})
    metrics.update(status="ok", bag=str(bag), recording=str(recording), classes=names)
    metrics["latency_ms"] = {"e2e (camera stamp -> mask received)": metrics.pop("latency_ms")}
    write_json(out / "metrics.json", metrics)
    ours = rec.mask_stamps_ns >= offset + int(player["first_stamp_ns"])
    lat = ((rec.mask_receive_ns[ours] - rec.mask_stamps_ns[ours]) / 1e9).tolist()
    extra = []
    if picks and graphs:
        from casseg_ros.replay.report import scene_graph_markdown

        middle = picks[len(picks) // 2]
        graph = next((g for g in graphs if g["recorded_stamp_ns"] == middle), None)
        if graph is not None:
            index = int(round((middle - first) / period))
            extra = scene_graph_markdown(f"Scene graph of frame {index} (as published on `{NODE}/scene_graph`)",
                                         graph["nodes"], graph["edges"])
    write_report(out, "casseg_ros demo", metrics, panels, {"camera stamp -> mask received": lat}, extra_sections=extra,
                 intro=f"The real `casseg_ros` node (separate process, loopback DDS) segmented `{bag.name}` played at "
                       f"its recorded rate; a recorder process captured its outputs into `recording/`. "
                       f"Figures: camera | node overlay (`{NODE}/overlay`) | ground truth. "
                       f"Per-frame overlays: `overlays/`; scene graphs: `scene_graphs.json`.")
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m casseg_ros.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--bag", type=Path, default=DEFAULT_BAG)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--timeout", type=float, default=170.0, help="seconds for the live part")
    a = p.parse_args(argv)
    t0 = time.monotonic()

    def terminate(signum, frame):  # SIGTERM (e.g. `kill`, a CI timeout): clean up like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        if not a.bag.is_file() and not a.bag.is_dir():
            raise DemoError(f"demo recording {a.bag} not found (generate it: python scripts/make_demo_bag.py)")
        if not a.model.is_file():
            raise DemoError(f"model {a.model} not found (the demo weights ship in models/; or pass --model)")
        try:
            reader = open_reader(a.bag)
            reader.close()
        except BagError as exc:
            raise DemoError(str(exc)) from None
        a.out.mkdir(parents=True, exist_ok=True)
        recording, player = run_live(a.bag.resolve(), a.model.resolve(), a.out, a.timeout)
        print("demo: evaluating the recording against the ground-truth labels", flush=True)
        metrics = evaluate(a.bag.resolve(), recording, player, a.out)
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
          f"latency p50 {lat['p50']} ms p99 {lat['p99']} ms, mIoU {iou['miou']} "
          f"({time.monotonic() - t0:.0f} s). Open {a.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
