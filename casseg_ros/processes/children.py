"""Child processes on loopback DDS: the environment, the commands, a clean start and stop.

One toolkit for everything that runs the node, a player and a recorder as separate processes
(the demo, `casseg-replay --realtime`, bench/, the tests):

- `loopback_env`: a child's environment: the project's loopback-only Fast DDS profile, a private
  `ROS_DOMAIN_ID`, rmw_fastrtps, unbuffered output.
- `ChildProcess`: one child in its own session (a Ctrl-C in the terminal reaches only the parent,
  which then stops the children in order), its output in a log file (no pipe can fill up), SIGINT
  and SIGTERM at their default dispositions whatever its parent ignores.
  `stop` always ends it: SIGINT (clean ROS shutdown), then SIGTERM, then SIGKILL.
- `ChildProcesses`: named children that are all stopped on exit, error, Ctrl-C (reverse order).
- `node_command`, `player_command`, `recorder_command`: the argv of each child (a camera's
  camera_info and depth next to its image topic: `casseg_ros.ros.topics.camera_siblings`).
- `sigint_default`: a program that stops its children on Ctrl-C (the demo, `casseg-replay`) gets
  KeyboardInterrupt on SIGINT even where it was started with SIGINT ignored.

When a child is *ready* is read from the ROS graph, never from its log: see
`casseg_ros.processes.readiness`.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Sequence

import rclpy
from rclpy.signals import SignalHandlerOptions

from casseg_ros.resources import loopback_profile
from casseg_ros.ros.topics import NODE_NAME, camera_siblings

# Fast DDS derives its ports from the domain id; ids above 232 overflow the port range.
DOMAIN_ID_RANGE = (1, 232)
# SIGINT lets rclpy shut down cleanly (a recorder closes its bag); the rest only end a stuck child.
STOP_SEQUENCE = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def _default_stop_signals() -> None:
    """Runs in the child between fork and exec. An ignored signal stays ignored across exec, and a
    background job (`nohup make test &`, a CI runner, a supervisor) starts its children with SIGINT
    ignored: without this a child started from there would outlive `stop`'s SIGINT."""
    for sig in STOP_SEQUENCE[:-1]:
        signal.signal(sig, signal.SIG_DFL)


@contextmanager
def sigint_default() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt inside the block even where this process was started with
    SIGINT ignored (Python installs its handler at start-up only when SIGINT was not ignored), so
    Ctrl-C, `kill -INT` and supervisors stop it from any parent. The previous disposition is back
    afterwards (a `main` called in-process leaves its caller's as it was). Also a decorator.
    Outside the main thread (no signal handlers there) it changes nothing."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block take effect when it ends. A child already
    runs before Popen returns; a KeyboardInterrupt raised in between would lose its Popen object
    and leave the child running. Only Python-level handlers are held (a disposition set by C code,
    e.g. rclpy's, is left alone), and only in the main thread, where handlers run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = {sig: signal.getsignal(sig) for sig in STOP_SEQUENCE[:-1]}
    held = {sig: handler for sig, handler in held.items() if callable(handler)}
    for sig in held:
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


def random_domain_id() -> int:
    """A private DDS domain, so concurrent runs on one machine do not see each other's topics."""
    return random.SystemRandom().randint(*DOMAIN_ID_RANGE)


def loopback_env(domain_id: int, extra: Mapping[str, str] | None = None,
                 base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a child rclpy process: loopback Fast DDS profile, `domain_id`, rmw_fastrtps.

    ROS_AUTOMATIC_DISCOVERY_RANGE is left alone on purpose: with the profile it would make the
    rmw open an extra UDP transport on every interface."""
    env = dict(os.environ if base is None else base)
    env.update(FASTDDS_DEFAULT_PROFILES_FILE=str(loopback_profile()), ROS_DOMAIN_ID=str(domain_id),
               RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONUNBUFFERED="1")
    if extra:
        env.update(extra)
    return env


class ChildProcess:
    """One child process in its own session, stdout+stderr appended to `log_path`."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 cwd: Path | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.stopped = False  # stop() was called: its exit is expected
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] | None = open(self.log_path, "ab")  # closed in stop()
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.argv, env=dict(env), cwd=cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_default_stop_signals)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Exit status; subprocess.TimeoutExpired if it is still running after `timeout` s."""
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def check_alive(self) -> None:
        """RuntimeError naming the child and the end of its log if it has exited (unless stopped)."""
        if self.proc.poll() is not None and not self.stopped:
            raise RuntimeError(f"{self.name} process exited with status {self.proc.returncode}; "
                               f"last log lines:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0, grace: float = 5.0) -> int | None:
        """SIGINT and `timeout` s to exit cleanly, then SIGTERM, then SIGKILL (to its whole
        session), `grace` s each, until it has exited."""
        self.stopped = True
        for sig, wait in zip(STOP_SEQUENCE, (timeout, grace, grace)):
            if self.proc.poll() is not None:
                break
            try:
                if sig == signal.SIGKILL:
                    os.killpg(self.proc.pid, sig)  # its own session: also re-exec'd grandchildren
                else:
                    self.proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


class ChildProcesses:
    """Named children with logs in `log_dir/<name>.log`; `stop_all` (also on leaving the `with`
    block by error or Ctrl-C) stops them in reverse start order."""

    def __init__(self, log_dir: Path, env: Mapping[str, str], cwd: Path | None = None):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env)
        self.cwd = cwd
        self.children: dict[str, ChildProcess] = {}

    def start(self, name: str, argv: Sequence[str]) -> ChildProcess:
        if name in self.children and self.children[name].running():
            raise ValueError(f"a child named {name!r} is already running")
        with _stop_signals_held():  # a Ctrl-C during Popen lands once the child is known, so it is stopped
            child = ChildProcess(name, argv, self.env, self.log_dir / f"{name}.log", self.cwd)
            self.children[name] = child
        return child

    def __getitem__(self, name: str) -> ChildProcess:
        return self.children[name]

    def log_tail(self, name: str, lines: int = 15) -> str:
        child = self.children.get(name)
        return child.log_tail(lines) if child else ""

    def check_alive(self, *names: str) -> None:
        """RuntimeError if one of `names` (default: every child still expected to run) exited."""
        for name in names or tuple(self.children):
            self.children[name].check_alive()

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        child = self.children.get(name)
        return child.stop(timeout) if child else None

    def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            self.children[name].stop()

    def __enter__(self) -> "ChildProcesses":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()


# --------------------------------------------------------------------------- commands
def node_command(model_path: Path | str, camera_topic: str, node_name: str = NODE_NAME,
                 namespace: str = "", params: Mapping[str, Any] | None = None,
                 node_args: Sequence[str] = (), camera_info_topic: str | None = None,
                 depth_topic: str | None = None) -> list[str]:
    """`python -m casseg_ros.ros.node_main` (the `casseg_ros` executable) with `model_path`, the camera remapped to
    `camera_topic` (raw and `/compressed`), its camera_info and registered depth to the given
    topics (default: `camera_siblings(camera_topic)`), and any further node parameters."""
    sibling_info, sibling_depth = camera_siblings(camera_topic)
    ros_args = ["--ros-args", "-r", f"__node:={node_name}", "-r", f"image:={camera_topic}",
                "-r", f"image/compressed:={camera_topic}/compressed",
                "-r", f"camera_info:={camera_info_topic or sibling_info}",
                "-r", f"depth/image:={depth_topic or sibling_depth}"]
    if namespace:
        ros_args += ["-r", f"__ns:={namespace}"]
    values = {"model_path": str(Path(model_path).resolve()), **dict(params or {})}
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        ros_args += ["-p", f"{key}:={text or repr('')}"]  # values are YAML: '' is the empty string
    return [sys.executable, "-m", "casseg_ros.ros.node_main", *node_args, *ros_args]


def node_params(backend: str = "torch", device: str = "cpu", input_size: tuple[int, int] | None = None,
                resize_in_graph: bool = False, openvino_device: str = "CPU", precision: str = "auto",
                calibration: Path | str | None = None) -> dict[str, Any]:
    """The parameters `casseg-replay` and the demo set (input size 0x0 = native; calibration None:
    left at the node's default, none — an empty `-p calibration:=` is not a valid ROS argument)."""
    h, w = input_size if input_size else (0, 0)
    return {"backend": backend, "device": device, "input_height": h, "input_width": w,
            "resize_in_graph": bool(resize_in_graph), "openvino_device": openvino_device, "precision": precision,
            **({"calibration": str(Path(calibration).resolve())} if calibration is not None else {})}


def player_command(bag: Path | str, topic: str, *options: str) -> list[str]:
    """`python -m casseg_ros.replay.live.player` publishing `bag`'s camera frames on `topic`
    (options: see `casseg_ros.replay.live.player`)."""
    return [sys.executable, "-m", "casseg_ros.replay.live.player", "--bag", str(bag), "--topic", topic, *options]


def recorder_command(out: Path | str, node: str = f"/{NODE_NAME}", name: str | None = None,
                     options: Sequence[str] = ()) -> list[str]:
    """`python -m casseg_ros.replay.live.recorder` writing `node`'s outputs into the rosbag2 `out`;
    `name` is its ROS node name (what a readiness wait looks for in the graph)."""
    argv = [sys.executable, "-m", "casseg_ros.replay.live.recorder", "--out", str(out), "--node", node]
    if name:
        argv += ["--name", name]
    return [*argv, *options]


# --------------------------------------------------------------------------- the child side
class StopFlag:
    """Set by SIGINT/SIGTERM: a child's main loop checks it and then closes its files itself."""

    def __init__(self) -> None:
        self.stop = False
        signal.signal(signal.SIGINT, self._set)
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, *_: Any) -> None:
        self.stop = True


def init_child_rclpy(context: Any = None) -> None:
    """rclpy.init without rclpy's signal handlers: the child's `StopFlag` decides when to stop,
    after it has closed its files (rclpy's handler would shut the context down under it)."""
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
