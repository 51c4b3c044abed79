"""casseg-replay: evaluate the segmentation pipeline on a rosbag2 recording.

Offline (default): every frame of the image topic through the node's pipeline; writes
  OUT/bag/            rosbag2 (mcap): /casseg_ros/{mask,scene_graph,labels} (+ --products), input stamps
  OUT/metrics.json    latency p50/p90/p99, FPS, per-class IoU + mIoU in percent (with a label topic), skips
  OUT/scene_graphs.json, OUT/report.md + OUT/figures/*.png
Several recordings (paths, folders of bags, list files of paths): one task per bag on a local
Dask cluster (--workers N) or an existing one (--scheduler tcp://host:8786); each bag's outputs
as above in OUT/bags/NAME/, plus OUT/fleet.json and OUT/report.md: overall mIoU from the summed
confusion matrix, per-bag table worst first. Re-running the command skips complete bags.
--realtime: publish the recording on live topics at the recorded rate to a running casseg_ros
node (or one started with --spawn-node) and measure it end to end.

Exit status: 0 ok; 1 bad input (the message names it; results of frames done are kept; several
recordings: any bag failed or incomplete); 2 usage / model / backend problems; 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from casseg_ros.parameter_rules import (BACKENDS, OPENVINO_DEVICES, PRECISION_SETTINGS, argparse_type, checked_input_size, input_size_argument,
                                        upgrade_input_size_syntax)
from casseg_ros.pipeline import PipelineSettings, Products
from casseg_ros.processes.children import sigint_default
from casseg_ros.replay.fleet.inputs import FleetInputError, collect_bags, is_bag
from casseg_ros.replay.fleet.run import FLEET_TASK_THREADS, plan_tasks, run_fleet, task_threads
from casseg_ros.replay.live.run import RealtimeConfig, run_realtime
from casseg_ros.replay.offline.run import ReplayConfig, ReplayError, run_replay
from casseg_ros.resources import DEMO_MODEL, resolve_data_path
from casseg_ros.ros.frame_io import InputSettings


def _num(value: float | None, spec: str = ".1f") -> str:
    """A metric for the console (metrics.json keeps full precision); n/a when there is none."""
    return "n/a" if value is None else format(value, spec)


def _products(text: str) -> Products:
    names = {"overlay": "overlay", "color_mask": "color_mask", "confidence": "confidence_image", "points": "points"}
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in names]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown product(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    return Products(**{names[t]: True for t in wanted})


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="casseg-replay", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("bags", type=Path, nargs="+", metavar="BAG",
                   help="rosbag2 directory (mcap or sqlite3) or a .mcap file; several, a folder of bags or a "
                        "list file (one path a line) for a fleet replay")
    p.add_argument("--out", type=Path, default=Path("out/replay"), help="output directory (default out/replay)")
    p.add_argument("--model", type=Path, default=None,
                   help=f"checkpoint or exported model (default: the installed {DEMO_MODEL})")
    p.add_argument("--image-topic", default=None, help="default: the bag's only Image/CompressedImage topic")
    p.add_argument("--label-topic", default=None,
                   help="ground-truth mono8/mono16 class-id topic; default: the only other Image topic with "
                        "'label' in its name; '' for none")
    p.add_argument("--backend", default="torch", type=argparse_type("backend"),
                   help=f"{' | '.join(BACKENDS)} (the node's backend parameter)")
    p.add_argument("--device", default="cpu", type=argparse_type("device"), help="cpu, cuda or cuda:N")
    p.add_argument("--openvino-device", default="CPU", type=argparse_type("openvino_device"),
                   help=f"{' | '.join(OPENVINO_DEVICES)}: the OpenVINO device of --backend openvino (the node's "
                        f"openvino_device parameter; only CPU is verified)")
    p.add_argument("--precision", default="auto", type=argparse_type("precision"),
                   help=f"{' | '.join(PRECISION_SETTINGS)} (the node's precision parameter; auto: backend openvino "
                        f"measures fp32/bf16/int8 on --calibration and runs the fastest at >= 99 %% agreement, the "
                        f"others run their default)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="a bag or a folder of images: the calibration frames of int8 and --precision auto (the "
                        "node's calibration parameter)")
    input_size_argument(p, help="height and width the model runs at (images are resized), as the node's "
                                "input_height/input_width; default or 0 0: native size (HxW: deprecated)")
    p.add_argument("--resize-in-graph", action="store_true",
                   help="resize to the model size and back inside the model's graph (the node's resize_in_graph)")
    p.add_argument("--score-threshold", type=argparse_type("score_threshold"), default=PipelineSettings.score_threshold)
    p.add_argument("--min-instance-area", type=argparse_type("min_instance_area"),
                   default=PipelineSettings.min_instance_area)
    p.add_argument("--instance-topic", default=None,
                   help="ground-truth instance ids (mono16, 0 = none; the same id for an object in every frame): "
                        "tracking metrics (MOTA, IDF1, id switches, flicker) in metrics.json; default: the only "
                        "other Image topic with 'instance' in its name; '' for none")
    p.add_argument("--output-resolution", default="camera", type=argparse_type("output_resolution"),
                   help="camera | model: per-pixel outputs at the camera's or the model's size (the node's "
                        "output_resolution; IoU is then scored against the labels resized to the model size)")
    p.add_argument("--tracking", action="store_true",
                   help="persistent object ids in the scene graph (the node's tracking parameter, with its "
                        "track_confirm_hits / track_max_misses defaults)")
    p.add_argument("--temporal-smoothing", type=argparse_type("temporal_smoothing"),
                   default=PipelineSettings.temporal_smoothing,
                   help="per-pixel class memory against flicker, 0 = off (the node's temporal_smoothing)")
    p.add_argument("--scene-graph-stride", type=argparse_type("scene_graph_stride"),
                   default=PipelineSettings.scene_graph_stride,
                   help="find the scene graph on every n-th row and column of the mask (the node's "
                        "scene_graph_stride; 1 = full resolution)")
    p.add_argument("--overlay-alpha", type=argparse_type("overlay_alpha"), default=PipelineSettings.overlay_alpha)
    p.add_argument("--vocabulary-file", default=None,
                   help="display names/palette for the labels (the node's vocabulary_file parameter)")
    p.add_argument("--products", type=_products, default=Products(),
                   help="optional outputs also written to the output bag, comma-separated: overlay, "
                        "color_mask, confidence, points (default: none, like a node nobody asks for them)")
    p.add_argument("--camera-info-topic", default=None,
                   help="CameraInfo topic paired with the images (default: the image topic's sibling "
                        "camera_info, when the bag has it; '' for none)")
    p.add_argument("--depth-topic", default=None,
                   help="registered depth topic (16UC1 mm / 32FC1 m; default: the sibling depth/image_raw "
                        "when the bag has it; '' for none): the scene graph gets 3D as the node's does")
    p.add_argument("--depth-max-range", type=argparse_type("depth_max_range_m"),
                   default=InputSettings.depth_max_range_m,
                   help="metres; farther depth is invalid (the node's depth_max_range_m)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--overlays", type=int, default=4, help="sample overlays in the report")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=_positive, default=None,
                   help="CPU threads of the backend for each recording, a setting of the run: results are "
                        "identical for one --threads whatever --workers (default: every usable core for one "
                        "recording, 1 per recording in a fleet)")
    fleet = p.add_argument_group("several recordings (fleet replay on Dask)")
    fleet.add_argument("--workers", type=_positive, default=None,
                       help="worker processes of the local Dask cluster, each pinned to --threads cores of its "
                            "own (default: one per --threads usable cores, at most one per bag)")
    fleet.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                       help="run on this existing Dask cluster instead of a local one")
    live = p.add_argument_group("--realtime")
    live.add_argument("--realtime", action="store_true", help="measure the live node instead of running offline")
    live.add_argument("--node", default="/casseg_ros", help="fully qualified name of the running node")
    live.add_argument("--camera-topic", default="/camera/image_raw",
                      help="topic the node subscribes to (where the frames are published)")
    live.add_argument("--spawn-node", action="store_true",
                      help="start a casseg_ros node for the run, with --model, the backend's options and the "
                           "per-frame settings above as its parameters")
    live.add_argument("--rate-scale", type=float, default=1.0, help="playback speed factor for the latency phase")
    live.add_argument("--throughput-frames", type=int, default=1000,
                      help="frames published every 2 ms for the max-throughput phase (0: skip)")
    return p


@sigint_default()  # exit 130 on Ctrl-C also when started from a background job (SIGINT inherited ignored)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(upgrade_input_size_syntax(sys.argv[1:] if argv is None else argv, parser.prog))
    args.input_size = checked_input_size(parser, args.input_size)
    if args.model is None:
        try:
            args.model = resolve_data_path(DEMO_MODEL, "demo weights")
        except FileNotFoundError as exc:
            print(f"casseg-replay: error: {exc} (pass --model)", file=sys.stderr)
            return 2
    settings = PipelineSettings(score_threshold=args.score_threshold, min_instance_area=args.min_instance_area,
                                overlay_alpha=args.overlay_alpha, scene_graph_stride=args.scene_graph_stride,
                                tracking=args.tracking, output_resolution=args.output_resolution,
                                temporal_smoothing=args.temporal_smoothing)
    if args.realtime:
        if len(args.bags) != 1:
            print("casseg-replay: error: --realtime takes one recording", file=sys.stderr)
            return 2
        cfg = RealtimeConfig(bag=args.bags[0], out_dir=args.out, image_topic=args.image_topic, node=args.node,
                             camera_topic=args.camera_topic, spawn_node=args.spawn_node, model_path=args.model,
                             backend=args.backend, device=args.device, input_size=args.input_size,
                             resize_in_graph=args.resize_in_graph, openvino_device=args.openvino_device,
                             precision=args.precision, calibration=args.calibration,
                             rate_scale=args.rate_scale, throughput_frames=args.throughput_frames,
                             max_frames=args.max_frames, settings=settings,
                             depth_max_range_m=args.depth_max_range, vocabulary_file=args.vocabulary_file)
        try:
            metrics = run_realtime(cfg)
        except ReplayError as exc:
            print(f"casseg-replay: error: {exc}", file=sys.stderr)
            return 1
        lat = metrics["at_recorded_rate"]["latency_ms"]
        print(f"realtime: latency p50 {_num(lat['p50'])} ms p99 {_num(lat['p99'])} ms at "
              f"{_num(metrics['at_recorded_rate']['rate_hz'])} Hz, max throughput "
              f"{_num(metrics.get('max_throughput', {}).get('output_fps'))} FPS -> {args.out}/metrics.json")
        return 0

    cfg = ReplayConfig(bag=args.bags[0], out_dir=args.out, model_path=args.model, image_topic=args.image_topic,
                       label_topic=args.label_topic, instance_topic=args.instance_topic,
                       backend=args.backend, device=args.device,
                       input_size=args.input_size, resize_in_graph=args.resize_in_graph, num_threads=args.threads,
                       openvino_device=args.openvino_device, precision=args.precision, calibration=args.calibration,
                       vocabulary_file=args.vocabulary_file, settings=settings,
                       camera_info_topic=args.camera_info_topic, depth_topic=args.depth_topic,
                       depth_max_range_m=args.depth_max_range,
                       products=args.products, max_frames=args.max_frames,
                       num_overlays=args.overlays, progress=not args.no_progress)
    if _is_fleet(args):
        return _run_fleet(args, cfg)
    try:
        metrics = run_replay(cfg)
    except ReplayError as exc:
        print(f"casseg-replay: error: {exc}", file=sys.stderr)
        return 1
    lat = metrics["latency_ms"]["total"]
    iou = metrics.get("iou") or {}
    print(f"replayed {metrics['frames_processed']}/{metrics['frames_in_bag_read']} frames "
          f"(skipped {metrics['frames_skipped']}), latency p50 {_num(lat['p50'])} ms p99 {_num(lat['p99'])} ms, "
          f"{_num(metrics['fps_pipeline'])} FPS, mIoU {_num(iou.get('miou'))} % -> {args.out}")
    return 0


def _is_fleet(args: argparse.Namespace) -> bool:
    """Several recordings, a folder of bags, a list file, or a fleet option: the fleet replay."""
    one = args.bags[0]
    single = len(args.bags) == 1 and (is_bag(one) or not one.exists())
    return not single or args.workers is not None or args.scheduler is not None


def _run_fleet(args: argparse.Namespace, base: ReplayConfig) -> int:

    try:
        bags = collect_bags(args.bags, exclude=args.out)
    except FleetInputError as exc:
        print(f"casseg-replay: error: {exc}", file=sys.stderr)
        return 2
    tasks = plan_tasks(bags, args.out, base)
    threads = task_threads(tasks) or FLEET_TASK_THREADS
    workers = args.workers or max(1, min(len(bags), len(os.sched_getaffinity(0)) // threads))
    try:
        fleet = run_fleet(tasks, args.out, workers=workers, scheduler=args.scheduler, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("casseg-replay: interrupted; complete recordings are kept, run the same command again to "
              "finish the others", file=sys.stderr)
        return 130
    counts, iou = fleet["status_counts"], fleet["iou"] or {}
    for bag in fleet["per_bag"]:
        if bag["status"] != "ok":
            print(f"casseg-replay: {bag['status']}: {bag['bag']}: {bag['reason']}", file=sys.stderr)
    print(f"fleet: {fleet['bags']} recordings ({counts['ok']} ok, {counts['incomplete']} incomplete, "
          f"{counts['failed']} failed; {fleet['run']['bags_reused']} complete before), "
          f"{fleet['frames_processed']} frames, mIoU {_num(iou.get('miou'))} % (summed confusion matrix) -> "
          f"{args.out}/report.md")
    return 0 if counts["ok"] == fleet["bags"] else 1


if __name__ == "__main__":
    sys.exit(main())
