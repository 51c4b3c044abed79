"""One live session: the node, a recorder and a player as child processes, ready by the graph.

    with ChildProcesses(log_dir, loopback_env(domain)) as children, GraphWatcher(domain, children.env) as graph:
        start_node(children, graph, node_command(model, "/camera/image_raw", params={...}), "/casseg_ros")
        run = play_and_record(children, graph, "/casseg_ros", "/camera/image_raw", bag, work / "phase1")
        run.recording, run.info            # the rosbag2 of the node's outputs, the player's info

`start_node` returns once the node's `~/get_state` says active; `play_and_record` starts a
recorder, waits until it subscribes to the node's outputs, plays the bag (`player_options`: see
`casseg_ros.replay.live.player`, e.g. `--paced-by /casseg_ros/scene_graph --keep-stamps` to send
every frame back to back with nothing dropped), waits until the node's output for the last frame
published has arrived, then stops the recorder (which closes the bag). A child that exits early
ends the session with its log tail in the error.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from casseg_msgs.msg import SceneGraph
from casseg_ros.processes.children import ChildProcess, ChildProcesses, player_command, recorder_command
from casseg_ros.processes.readiness import GraphWatcher, wait_for, wait_for_matched_publishers

# Seconds to wait, after the player finished, for the output of its last frame (latest-frame-wins
# always processes the last frame; it is missing only if it was lost in transport or rejected).
LAST_OUTPUT_TIMEOUT_S = 30.0


@dataclass
class PlayedRun:
    recording: Path  # the recorder's rosbag2 (mcap)
    info: dict[str, Any]  # the player's --info-file: offset_ns, first_stamp_ns, published, elapsed_s, ...
    last_output_arrived: bool


def start_node(children: ChildProcesses, graph: GraphWatcher, argv: Sequence[str], node: str,
               timeout: float = 120.0, name: str = "node") -> ChildProcess:
    """Start the segmentation node (`argv` from `node_command`) and wait until `node` (its fully
    qualified name) is active; RuntimeError with its log tail if it exits first."""
    child = children.start(name, argv)
    graph.wait_for_lifecycle_state(node, "active", timeout, alive=child.check_alive)
    return child


def play_and_record(children: ChildProcesses, graph: GraphWatcher, node: str, camera_topic: str, bag: Path,
                    work: Path, player_options: Sequence[str] = (), overlay: bool = True, name: str = "run",
                    timeout: float = 600.0, start_timeout: float = 120.0, points: bool = False) -> PlayedRun:
    """Recorder, then player, for one run; `work` gets `recording/` and `player.json`. The
    recorder takes the overlay unless `overlay` is False and the point cloud if `points`."""
    ns = node.rstrip("/")
    work = Path(work)
    recording, info_file = work / "recording", work / "player.json"
    shutil.rmtree(recording, ignore_errors=True)
    info_file.unlink(missing_ok=True)
    others = [n for n, c in children.children.items() if c.running()]

    def alive() -> None:
        children.check_alive(*others, f"{name}_recorder")

    recorder_name = f"casseg_recorder_{name}"
    options = ([] if overlay else ["--no-overlay"]) + (["--points"] if points else [])
    children.start(f"{name}_recorder", recorder_command(recording, node, recorder_name, options))
    graph.wait_for_publisher(f"/{recorder_name}/ready", start_timeout, node=f"/{recorder_name}", alive=alive)
    outputs = graph.stamp_log(f"{ns}/scene_graph", SceneGraph)  # scene graph: the last output of a frame
    try:
        wait_for_matched_publishers(outputs.subscription, start_timeout, alive=alive)
        player = children.start(f"{name}_player", player_command(
            bag, camera_topic, "--info-file", str(info_file), "--wait-timeout", str(start_timeout), *player_options))
        wait_for(lambda: player.poll() is not None, timeout, f"the {name} player to finish", alive)
        if player.returncode != 0:
            raise RuntimeError(f"{name} player failed (exit {player.returncode}):\n{player.log_tail()}")
        info = json.loads(info_file.read_text())
        last = info.get("last_stamp_ns")
        arrived = last is not None and outputs.wait_for_stamp(int(last), LAST_OUTPUT_TIMEOUT_S)
    finally:
        outputs.close()
    alive()
    if children.stop(f"{name}_recorder") != 0:
        raise RuntimeError(f"{name} recorder failed:\n{children.log_tail(f'{name}_recorder')}")
    return PlayedRun(recording, info, arrived)
