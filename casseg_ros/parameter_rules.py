"""One validation rule per setting, shared by the node's parameters and the command-line options.

A `Rule` is a setting's name, its type and the values it takes: a closed range, a set of choices,
or a check that neither can express (`extra`). `problem(name, value)` is the one-line reason a
value is refused, in the same words wherever the setting is made: a node parameter at start-up
(`-p`, a params file) or at run time, a `casseg-replay` or `casseg-export` option. The node's
parameter descriptors take their integer and floating-point ranges from these rules
(`casseg_ros.ros.parameters`), so `ros2 param describe` shows the same range.

ROS-free and free of the project's other modules on purpose: the command lines and the launch file
validate with it without building a node or importing torch.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = ["BACKENDS", "MAX_TEMPORAL_SMOOTHING", "OPENVINO_DEVICES", "OUTPUT_RESOLUTIONS", "PRECISIONS", "PRECISION_SETTINGS", "TRANSPORTS", "RELIABILITIES", "Rule", "RULES", "problem", "input_size_problem",
           "argparse_type", "input_size_argument", "checked_input_size", "upgrade_input_size_syntax"]

# The inference backends `casseg_ros.runtime.create_backend` builds (it takes them from here);
# "auto": the one `casseg_ros.runtime.choose_backend` picks for the device.
BACKENDS = ("torch", "onnxruntime", "tensorrt", "openvino", "auto")
# OpenVINO's devices (backend openvino's openvino_device; only CPU is verified, see runtime/openvino_backend.py)
OPENVINO_DEVICES = ("CPU", "GPU", "NPU", "AUTO")
# The numeric precisions a backend runs (`casseg_ros.runtime.base.Backend.precision`); int8: a
# quantised model. The setting also takes "auto": the backend's choice (OpenVINO measures it).
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
PRECISION_SETTINGS = ("auto",) + PRECISIONS
TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable")
OUTPUT_RESOLUTIONS = ("camera", "model")  # per-pixel outputs at the camera's size, or at the model's
# temporal_smoothing (perception/temporal_smoothing.py): a memory of 1 would hold a pixel's first class for ever
MAX_TEMPORAL_SMOOTHING = 0.95
MAX_INPUT_SIDE = 4096  # input_height / input_width
MIN_INPUT_SIDE = 32  # the backbone's total stride
# A camera name becomes a topic namespace: one ROS name token.
_CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Rule:
    """What values the setting `name` takes; `problem` says why one is refused."""

    name: str
    kind: type  # int, float, str, bool or list
    low: float | None = None  # closed range [low, high] of an int or float
    high: float | None = None
    choices: tuple[str, ...] | None = None
    extra: Callable[[Any], str | None] | None = None  # what a range or choices cannot express

    def range_text(self) -> str:
        if self.kind is float:
            return f"[{float(self.low)!r}, {float(self.high)!r}]"
        return f"[{int(self.low)}, {int(self.high)}]"

    def problem(self, value: Any) -> str | None:
        if self.kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{self.name} must be {'an integer' if self.kind is int else 'a number'}, got {value!r}"
        if self.kind is int and isinstance(value, float):
            return f"{self.name} must be an integer, got {value!r}"
        if self.kind is float and not math.isfinite(float(value)):
            return f"{self.name} must be a finite number, got {value!r}"
        if self.low is not None and not self.low <= value <= self.high:
            return f"{self.name} must be in {self.range_text()}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(repr(c) for c in self.choices)}, got {value!r}"
        return self.extra(value) if self.extra is not None else None


def _input_side(name: str) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        if 0 < value < MIN_INPUT_SIDE:
            return f"{name} must be 0 (native size) or >= {MIN_INPUT_SIDE}, got {value}"
        return None
    return check


def _device(value: str) -> str | None:
    if value in ("cpu", "cuda") or (isinstance(value, str) and re.fullmatch(r"cuda:\d+", value)):
        return None
    return f"device must be cpu, cuda or cuda:N, got {value!r}"


def _input_transport(value: str) -> str | None:
    if value in ("",) + TRANSPORTS:
        return None
    return (f"input_transport (deprecated: use image_transport) must be '' or one of "
            f"{', '.join(repr(t) for t in TRANSPORTS)}, got {value!r}")


def _model_path(value: str) -> str | None:
    return "model_path must not be empty" if not str(value).strip() else None


def _cameras(names: Sequence[str]) -> str | None:
    names = list(names)
    if not names:
        return "cameras must name at least one camera ([''] for one unnamed camera)"
    if names == [""]:
        return None
    bad = [n for n in names if not _CAMERA_NAME.fullmatch(n)]
    if bad:
        return f"camera names must be ROS name tokens (letter, then letters/digits/_), got {bad}"
    if len(set(names)) != len(names):
        return f"camera names must be unique, got {names}"
    return None


RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("model_path", str, extra=_model_path),
    Rule("backend", str, choices=BACKENDS),
    Rule("device", str, extra=_device),
    Rule("openvino_device", str, choices=OPENVINO_DEVICES),
    Rule("precision", str, choices=PRECISION_SETTINGS),
    Rule("input_height", int, 0, MAX_INPUT_SIDE, extra=_input_side("input_height")),
    Rule("input_width", int, 0, MAX_INPUT_SIDE, extra=_input_side("input_width")),
    Rule("cameras", list, extra=_cameras),
    Rule("max_batch", int, 1, 64),
    Rule("max_input_pixels", int, 1, 8192 * 8192),
    Rule("image_transport", str, choices=TRANSPORTS),
    Rule("input_transport", str, extra=_input_transport),
    Rule("qos_reliability", str, choices=RELIABILITIES),
    Rule("score_threshold", float, 0.0, 1.0),
    Rule("min_instance_area", int, 1, 1 << 26),
    Rule("scene_graph_stride", int, 1, 64),
    Rule("track_confirm_hits", int, 1, 100),
    Rule("output_resolution", str, choices=OUTPUT_RESOLUTIONS),
    Rule("track_max_misses", int, 0, 1000),
    Rule("temporal_smoothing", float, 0.0, MAX_TEMPORAL_SMOOTHING),
    Rule("overlay_alpha", float, 0.0, 1.0),
    Rule("marker_scale", float, 1e-6, 10.0),
    Rule("depth_max_range_m", float, 0.01, 1000.0),
    Rule("points_stride", int, 1, 64),
    Rule("sync_wait_s", float, 0.0, 1.0),
)}


def problem(name: str, value: Any) -> str | None:
    """Why `value` is refused for the setting `name`, or None (also for settings without a rule)."""
    rule = RULES.get(name)
    return rule.problem(value) if rule is not None else None


def input_size_problem(height: int, width: int) -> str | None:
    """The pair's own rule: both 0 (native size) or both > 0."""
    if (int(height) == 0) != (int(width) == 0):
        return f"input_height and input_width must both be 0 (native size) or both > 0, got {height}x{width}"
    return None


def argparse_type(name: str) -> Callable[[str], Any]:
    """An argparse `type=` that parses the option as the setting `name` and refuses, with the
    setting's rule, what the node would refuse."""
    rule = RULES[name]

    def parse(text: str) -> Any:
        try:
            value = rule.kind(text) if rule.kind in (int, float) else text
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {'an integer' if rule.kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        reason = rule.problem(value)
        if reason:
            raise argparse.ArgumentTypeError(reason)
        return value
    parse.__name__ = name  # what argparse names in "invalid <name> value"
    return parse


def input_size_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """`--input-size H W` on `parser` (into `args.input_size`; check it with `checked_input_size`)."""
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), default=None, help=help)


def checked_input_size(parser: argparse.ArgumentParser, size: Sequence[int] | None,
                       native_allowed: bool = True) -> tuple[int, int] | None:
    """(H, W), or None for the native size (0 0, or no option): the rules of input_height and
    input_width, and of the pair; `parser.error` (exit 2, one line) when they refuse it."""
    if size is None:
        return None
    height, width = (int(v) for v in size)
    reason = problem("input_height", height) or problem("input_width", width) or input_size_problem(height, width)
    if reason is None and height == 0 and not native_allowed:
        reason = "--input-size must be a size here (the export's input is fixed), got 0 0"
    if reason:
        parser.error(reason)
    return (height, width) if height else None


def upgrade_input_size_syntax(argv: Sequence[str], prog: str) -> list[str]:
    """The old one-word `--input-size HxW` (and `native`) rewritten as `--input-size H W`, with a
    deprecation note on stderr; every other argument as it is."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        word = None
        if arg == "--input-size" and i + 1 < len(args) and re.fullmatch(r"\d+x\d+|native", args[i + 1].lower()):
            word, i = args[i + 1].lower(), i + 1
        elif arg.startswith("--input-size=") and re.fullmatch(r"\d+x\d+|native", arg.split("=", 1)[1].lower()):
            word = arg.split("=", 1)[1].lower()
        if word is None:
            out.append(arg)
        else:
            size = ["0", "0"] if word == "native" else word.split("x")
            print(f"{prog}: note: --input-size {word} is deprecated; write --input-size {' '.join(size)}",
                  file=sys.stderr)
            out += ["--input-size", *size]
        i += 1
    return out
