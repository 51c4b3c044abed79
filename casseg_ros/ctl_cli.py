"""`casseg-ctl`: drive a running casseg_ros node and record a camera, with rclpy only.

    casseg-ctl vocabulary set road car person [--descriptions "..." ...] [--colors car=#0000c8]
    casseg-ctl lifecycle get | configure | activate | deactivate | cleanup
    casseg-ctl param get score_threshold overlay_alpha
    casseg-ctl param set score_threshold 0.3 [NAME VALUE ...]
    casseg-ctl record /camera/image_raw [MORE_TOPICS ...] -o my_bag [--duration 30] [--frames 300]

For installs without the ros2 CLI (the pip-only install of the README has rclpy but no `ros2`).
The same with a ROS distribution: `ros2 service call /casseg_ros/set_vocabulary
casseg_msgs/srv/SetVocabulary "{class_names: [...]}"`, `ros2 lifecycle set /casseg_ros configure`,
`ros2 param get|set /casseg_ros NAME [VALUE]`, `ros2 bag record -s mcap TOPIC ...`.

`--node` is the node's fully qualified name (default /casseg_ros; e.g. /perception/casseg_ros when
launched in a namespace). Set ROS_DOMAIN_ID (and the Fast DDS profile, if the node uses one) as the
node has them.

`record` writes a rosbag2 (mcap, through rosbags) that `casseg-replay` reads: every topic named,
with its type from the ROS graph, and for each camera image topic its camera_info and registered
depth siblings (`/camera/image_raw` -> `/camera/camera_info`, `/camera/depth/image_raw`) when they
are published (`--no-siblings` to leave them out). Messages are stored as received (CDR), stamped
with their receive time, until Ctrl-C / SIGTERM, `--duration` or `--frames` (images of the first
topic).

Exit status: 0 done; 1 the node refused (its reason is printed); 2 bad arguments, or the node,
service or topic was not found within --timeout.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import rclpy
import yaml
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import ColorRGBA

from casseg_msgs.srv import SetVocabulary
from casseg_ros.perception.palette import palette_for_names, parse_color_assignments
from casseg_ros.processes.children import StopFlag, init_child_rclpy
from casseg_ros.replay.bag import IMAGE_TYPES, OutputBag
from casseg_ros.replay.live.recorder import drain
from casseg_ros.ros.topics import camera_siblings

PROG = "casseg-ctl"
TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}
SPIN_S = 0.1
# Enough to hold a burst of camera frames while the bag writer catches up.
RECORD_DEPTH = 100


class CtlError(RuntimeError):
    """What went wrong, for the user; `status` is the exit status."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class NodeClient:
    """An rclpy node of our own that calls the services of the casseg_ros node `target`."""

    def __init__(self, target: str, timeout: float):
        self.target = "/" + target.strip("/")
        self.timeout = timeout
        self.node = rclpy.create_node(f"casseg_ctl_{os.getpid()}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def call(self, srv_type: Any, service: str, request: Any) -> Any:
        name = f"{self.target}/{service}"
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=self.timeout):
                raise CtlError(f"service {name} not found in {self.timeout:g} s: is the node running, under "
                               f"this name (--node), in this ROS_DOMAIN_ID?")
            future = client.call_async(request)
            self.executor.spin_until_future_complete(future, timeout_sec=self.timeout)
            if not future.done():
                raise CtlError(f"{name} did not answer in {self.timeout:g} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


# --------------------------------------------------------------------------- vocabulary
def set_vocabulary(client: NodeClient, names: list[str], descriptions: list[str] | None,
                   colors: Sequence[str] | None) -> int:
    request = SetVocabulary.Request(class_names=names, descriptions=descriptions or [])
    if colors:  # the node takes one colour per name or none: the others get their names' colours
        try:
            palette = palette_for_names(names, parse_color_assignments(colors))
        except ValueError as exc:
            raise CtlError(str(exc)) from None
        request.colors = [ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0) for r, g, b in palette.tolist()]
    response = client.call(SetVocabulary, "set_vocabulary", request)
    print(f"{client.target}: {response.message}")
    return 0 if response.success else 1


# --------------------------------------------------------------------------- lifecycle
def lifecycle_state(client: NodeClient) -> str:
    return client.call(GetState, "get_state", GetState.Request()).current_state.label


def lifecycle(client: NodeClient, action: str) -> int:
    if action == "get":
        print(lifecycle_state(client))
        return 0
    request = ChangeState.Request()
    request.transition.id = TRANSITIONS[action]
    ok = client.call(ChangeState, "change_state", request).success
    state = lifecycle_state(client)
    if not ok:
        print(f"{client.target}: {action} refused or failed (now {state}; the node's log says why)", file=sys.stderr)
        return 1
    print(f"{client.target}: {action} done, now {state}")
    return 0


# --------------------------------------------------------------------------- parameters
def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip().removesuffix("...").strip()


def param_get(client: NodeClient, names: list[str]) -> int:
    values = client.call(GetParameters, "get_parameters", GetParameters.Request(names=names)).values
    if len(values) != len(names):  # rclpy answers nothing at all when one name is not declared
        values = [next(iter(client.call(GetParameters, "get_parameters", GetParameters.Request(names=[n])).values),
                       ParameterValue()) for n in names]
    status = 0
    for name, value in zip(names, values):
        if value.type == ParameterType.PARAMETER_NOT_SET:
            print(f"{name}: (not declared by {client.target})", file=sys.stderr)
            status = 1
        else:
            print(f"{name}: {_yaml(parameter_value_to_python(value))}")
    return status


def _typed(text: str, declared: int) -> Any:
    """VALUE as the parameter's declared type: YAML, like `ros2 param set`, but "1" for a double is
    1.0 and a string parameter takes the text as it is."""
    if declared == ParameterType.PARAMETER_STRING:
        return text
    value = yaml.safe_load(text)
    if declared == ParameterType.PARAMETER_DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if declared == ParameterType.PARAMETER_STRING_ARRAY and isinstance(value, list):
        return [str(v) for v in value]
    if declared == ParameterType.PARAMETER_DOUBLE_ARRAY and isinstance(value, list):
        return [float(v) for v in value]
    return value


def param_set(client: NodeClient, pairs: list[str]) -> int:
    if len(pairs) % 2:
        raise CtlError("param set takes NAME VALUE pairs")
    names, texts = pairs[0::2], pairs[1::2]
    def describe(some: list[str]) -> list:
        return client.call(DescribeParameters, "describe_parameters", DescribeParameters.Request(names=some)).descriptors

    descriptors = describe(names)
    if len(descriptors) != len(names):  # rclpy describes nothing at all when one name is not declared
        missing = [name for name in names if not describe([name])]
        raise CtlError(f"{client.target} has no parameter {', '.join(repr(n) for n in missing)}", status=1)
    parameters = []
    for name, text, descriptor in zip(names, texts, descriptors):
        parameters.append(Parameter(name, value=_typed(text, descriptor.type)).to_parameter_msg())
    results = client.call(SetParameters, "set_parameters", SetParameters.Request(parameters=parameters)).results
    status = 0
    for name, text, result in zip(names, texts, results):
        if result.successful:
            print(f"{name}: set to {text}")
        else:
            print(f"{name}: refused: {result.reason}", file=sys.stderr)
            status = 1
    return status


# --------------------------------------------------------------------------- record
def _topic_types(node: Any) -> dict[str, str]:
    return {name: types[0] for name, types in node.get_topic_names_and_types() if types}


def record_qos(node: Any, topic: str) -> QoSProfile:
    """Reliable when every publisher of `topic` offers reliable, else best effort (which matches
    every publisher), as `ros2 bag record` adapts: a best-effort reader of a reliable camera loses
    frames under load, and a recording stopped by --frames would then wait for frames never sent."""
    offered = [info.qos_profile.reliability for info in node.get_publishers_info_by_topic(topic)]
    reliable = bool(offered) and all(r == ReliabilityPolicy.RELIABLE for r in offered)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


def record(topics: list[str], out: Path, timeout: float, duration: float | None, frames: int | None,
           siblings: bool, stop: StopFlag) -> int:
    node = rclpy.create_node(f"casseg_ctl_record_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while not set(topics) <= set(_topic_types(node)):  # publishers are seen in the graph, not waited for by sleep
            if time.monotonic() > deadline or stop.stop:
                missing = sorted(set(topics) - set(_topic_types(node)))
                raise CtlError(f"no publisher of {', '.join(missing)} found in {timeout:g} s (ROS_DOMAIN_ID "
                               f"{os.environ.get('ROS_DOMAIN_ID', '0')})")
            executor.spin_once(timeout_sec=SPIN_S)
        types = _topic_types(node)
        wanted = list(topics)
        if siblings:
            for topic in topics:
                if types[topic] in IMAGE_TYPES:
                    wanted += [t for t in camera_siblings(topic) if t in types and t not in wanted]
        bag = OutputBag(out)
        counts_first = topics[0]
        subscriptions = []
        for topic in wanted:
            bag.add_topic(topic, types[topic])

            def write(raw: bytes, topic: str = topic) -> None:
                bag.write(topic, time.time_ns(), raw)  # receive time, as `ros2 bag record` stamps messages
            message_class = _message_class(types[topic])
            subscriptions.append(node.create_subscription(message_class, topic, write, record_qos(node, topic), raw=True))
        print(f"{PROG}: recording {', '.join(f'{t} ({types[t]})' for t in wanted)} to {out}; Ctrl-C to stop",
              flush=True)
        end = time.monotonic() + duration if duration else None
        try:
            while not stop.stop and (end is None or time.monotonic() < end) and (
                    frames is None or bag.counts[counts_first] < frames):
                executor.spin_once(timeout_sec=SPIN_S)
            drain(executor, bag)
        finally:
            path = bag.close()
        print(f"{PROG}: wrote {path}: " + ", ".join(f"{t} {n}" for t, n in bag.counts.items()))
        return 0
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()


def _message_class(type_name: str) -> Any:
    """The rclpy message class of 'pkg/msg/Name' (raw subscriptions still need the type)."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--node", default="/casseg_ros", help="fully qualified name of the node (default /casseg_ros)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node or a topic (30)")
    commands = p.add_subparsers(dest="command", required=True)
    vocabulary = commands.add_parser("vocabulary", help="~/set_vocabulary: new class names at run time")
    vocabulary.add_argument("action", choices=("set",))
    vocabulary.add_argument("names", nargs="+", metavar="NAME")
    vocabulary.add_argument("--descriptions", nargs="+", help="one sentence per name, in order")
    vocabulary.add_argument("--colors", nargs="+", metavar="NAME=COLOR",
                            help="#rrggbb or r,g,b; the other classes get their names' usual colours")
    lifecycle_cmd = commands.add_parser("lifecycle", help="the node's lifecycle state and transitions")
    lifecycle_cmd.add_argument("action", choices=("get", *TRANSITIONS))
    param = commands.add_parser("param", help="get or set parameters")
    param.add_argument("action", choices=("get", "set"))
    param.add_argument("args", nargs="+", metavar="NAME [VALUE]", help="get: NAME ...; set: NAME VALUE ...")
    rec = commands.add_parser("record", help="record camera topics into a rosbag2 (mcap) for casseg-replay")
    rec.add_argument("topics", nargs="+", metavar="TOPIC")
    rec.add_argument("-o", "--out", type=Path, required=True, help="rosbag2 directory to create")
    rec.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    rec.add_argument("--frames", type=int, default=None, help="stop after this many messages of the first topic")
    rec.add_argument("--no-siblings", dest="siblings", action="store_false",
                     help="only the topics named (not their camera_info / depth siblings)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "record" and args.out.exists():
        print(f"{PROG}: error: {args.out} exists; record writes a new bag", file=sys.stderr)
        return 2
    if args.command == "record":
        stop = StopFlag()  # SIGINT/SIGTERM end the recording; the bag is closed, never left half-written
    else:  # a Ctrl-C ends the call (also where the parent started us with SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    init_child_rclpy()
    try:
        if args.command == "record":
            return record(args.topics, args.out, args.timeout, args.duration, args.frames, args.siblings, stop)
        client = NodeClient(args.node, args.timeout)
        try:
            if args.command == "vocabulary":
                return set_vocabulary(client, args.names, args.descriptions, args.colors)
            if args.command == "lifecycle":
                return lifecycle(client, args.action)
            return param_get(client, args.args) if args.action == "get" else param_set(client, args.args)
        finally:
            client.close()
    except CtlError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
