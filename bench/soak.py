#!/usr/bin/env python3
"""Soak test of the live node: N frames from a recording through casseg_ros over loopback DDS.

Processes: the node and a player (`casseg_ros.replay.live.player`, looping the bag) are children,
started, made ready (node active, mask matched) and stopped with casseg_ros.processes.children/readiness;
this process subscribes to the node's ~/mask and /diagnostics and samples the node's RSS (psutil,
whole process tree) once a second. Reports RSS at start (first mask) and end (last mask), growth %,
RSS after the first 10 % of frames (allocator/cache warm-up done) to end, drops (published - masks
received), node-side rejected inputs / inference errors, and whether the node survived.

    .venv/bin/python bench/soak.py [--frames 10000] [--rate 30] [--model models/casseg_demo.safetensors]
Writes out/bench/soak.json (atomically). Goal: RSS growth < 5 %, no errors, node alive.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's casseg_ros, also without an install

from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.processes.children import ChildProcesses, loopback_env, node_command, player_command, \
    random_domain_id  # noqa: E402
from casseg_ros.processes.readiness import GraphWatcher, wait_for_matched_publishers  # noqa: E402
from casseg_ros.replay.live.session import start_node  # noqa: E402

NODE = "/casseg_ros"
SAMPLE_S = 1.0  # RSS sampling period


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=30.0, help="publish rate [Hz] (the bag is re-timed to it)")
    p.add_argument("--bag", type=Path, default=REPO / "data" / "demo.mcap")
    p.add_argument("--model", type=Path, default=REPO / "models" / "casseg_demo.safetensors")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "soak.json")
    a = p.parse_args(argv)
    if not a.model.is_file():
        print(f"soak: error: model {a.model} not found", file=sys.stderr)
        return 1

    domain = random_domain_id()
    env = loopback_env(domain, {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)})
    lock = threading.Lock()
    state = {"masks": 0, "first_mask_t": None, "last_mask_t": None, "diag": {}}

    def on_mask(raw: bytes) -> None:
        with lock:
            state["masks"] += 1
            now = time.monotonic()
            state["first_mask_t"] = state["first_mask_t"] or now
            state["last_mask_t"] = now

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE):
                with lock:
                    state["diag"] = {kv.key: kv.value for kv in status.values}

    work = a.out.parent / "soak_work"
    result: dict = {"frames_requested": a.frames, "rate_hz": a.rate, "model": str(a.model), "bag": str(a.bag)}
    samples: list[tuple[float, int, int]] = []  # (t, masks so far, rss bytes)
    t0 = time.monotonic()
    info_file = work / "player.json"
    info_file.unlink(missing_ok=True)
    try:
        # This process watches from the same private loopback domain (its own rclpy context).
        with ChildProcesses(work / "logs", env) as children, GraphWatcher(domain, env, "casseg_soak_monitor") as graph:
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
            masks_sub = graph.node.create_subscription(Image, f"{NODE}/mask", on_mask, qos, raw=True)
            graph.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
            node = start_node(children, graph, node_command(a.model, "/camera/image_raw"), NODE, timeout=120)
            wait_for_matched_publishers(masks_sub, 60, alive=node.check_alive)
            last_mask = graph.stamp_log(f"{NODE}/mask", Image)
            # The bag is recorded at 10 Hz; rate-scale re-times it to --rate.
            player = children.start("player", player_command(
                a.bag, "/camera/image_raw", "--loop-frames", str(a.frames), "--rate-scale", str(a.rate / 10.0),
                "--info-file", str(info_file), "--wait-timeout", "120"))
            while player.poll() is None:
                children.check_alive("node")
                with lock:
                    masks = state["masks"]
                if masks:
                    samples.append((time.monotonic() - t0, masks, tree_rss(node.pid)))
                    if len(samples) % 30 == 0:
                        print(f"soak: {masks} masks, node RSS {samples[-1][2] / 2**20:.1f} MiB", flush=True)
                time.sleep(SAMPLE_S)
            if player.returncode != 0:
                raise RuntimeError(f"player failed: {player.log_tail()}")
            info = json.loads(info_file.read_text())
            if info.get("last_stamp_ns"):  # latest-frame-wins always processes the last frame
                last_mask.wait_for_stamp(int(info["last_stamp_ns"]), 30.0)
            children.check_alive("node")
            samples.append((time.monotonic() - t0, state["masks"], tree_rss(node.pid)))
            result["node_alive_at_end"] = node.running()
    except (RuntimeError, TimeoutError) as exc:
        result.update(status="error", error=str(exc))
        atomic_write_text(a.out, json.dumps(result, indent=2) + "\n")
        print(f"soak: error: {exc}", file=sys.stderr)
        return 1

    published = int(info.get("published", 0))
    masks = state["masks"]
    rss = [s[2] for s in samples]
    warm = next((s[2] for s in samples if s[1] >= 0.1 * max(masks, 1)), rss[0])
    diag = state["diag"]
    result.update(
        status="ok",
        frames_published=published,
        masks_received=masks,
        drops=published - masks,
        drop_pct=round(100.0 * (published - masks) / max(published, 1), 2),
        node_dropped_in_node=diag.get("dropped_in_node"),
        node_lost_in_transport=diag.get("lost_in_transport"),
        errors=sum(int(float(diag.get(k, 0))) for k in ("inputs_rejected", "inference_errors", "processing_errors")),
        node_inputs_rejected=diag.get("inputs_rejected"), node_inference_errors=diag.get("inference_errors"),
        rss_start_mib=round(rss[0] / 2**20, 1), rss_end_mib=round(rss[-1] / 2**20, 1),
        rss_max_mib=round(max(rss) / 2**20, 1),
        rss_growth_pct=round(100.0 * (rss[-1] - rss[0]) / rss[0], 2),
        rss_after_10pct_mib=round(warm / 2**20, 1),
        rss_growth_after_warmup_pct=round(100.0 * (rss[-1] - warm) / warm, 2),
        publish_s=round(float(info.get("elapsed_s", 0.0)), 1),
        output_fps=round(masks / (state["last_mask_t"] - state["first_mask_t"]), 2) if masks > 1 else None,
        node_forward_p50_ms=diag.get("forward_p50_ms"), node_latency_p99_ms=diag.get("latency_p99_ms"),
        rss_samples=[[round(t, 1), m, round(r / 2**20, 1)] for t, m, r in samples[:: max(1, len(samples) // 60)]],
    )
    atomic_write_text(a.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
