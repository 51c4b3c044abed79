"""What `launch/segment.launch.py` makes of its arguments: the node's cameras, their topic remaps,
and warnings for arguments it does not declare. Plain Python, so it is tested without ROS 2 launch
(not on PyPI); the launch file calls it from an OpaqueFunction, once the values are known.

Cameras: the `cameras` launch argument (`[front, rear]` or `front,rear`), else the `cameras`
parameter of the params file, else one unnamed camera. The unnamed camera reads `image` (and
`image/compressed`), `camera_info` and `depth/image`, remapped to `camera_topic`,
`camera_info_topic` and `depth_topic`. Named camera `c` reads `c/image`, `c/camera_info`,
`c/depth/image`, remapped to the c-th entry of `camera_topics` (default `/c/image_raw`) and of
`camera_info_topics` / `depth_topics` (default: the topics next to its image topic, as a camera
driver names them: `/c/camera_info`, `/c/depth/image_raw`).

Launch ignores an argument nobody declared without a word, and every launch configuration in
scope (a parent launch file's own arguments too) looks alike, so `unknown_argument_warnings` names
only those that are meant for this file: close to one of its arguments (a typo: `camera_topc`) or
the name of a node parameter (`input_height:=96`, which belongs in the params file).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from casseg_ros.parameter_rules import problem
from casseg_ros.ros.topics import camera_siblings

__all__ = ["CameraSetup", "parse_list", "parameters_in", "cameras_from_params_file", "camera_setup",
           "unknown_argument_warnings"]


@dataclass(frozen=True)
class CameraSetup:
    """The node's `cameras` parameter (None: leave the params file's) and its remap rules."""

    cameras: list[str] | None
    remappings: list[tuple[str, str]]


def parse_list(text: str, what: str) -> list[str]:
    """'[a, b]', "['a', 'b']" or 'a,b' -> ['a', 'b']; '' or '[]' -> []."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{what} must be a list like [a, b], got {text!r}: {exc}") from None
        if not isinstance(value, list):
            raise ValueError(f"{what} must be a list like [a, b], got {text!r}")
        return ["" if v is None else str(v).strip() for v in value]
    return [part.strip() for part in text.split(",")] if text else []


def _load_params_file(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"params_file {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def parameters_in(path: str | Path) -> list[str]:
    """The parameter names a params file sets for every node ("/**"): for the shipped
    config/segment.yaml, every parameter of the node."""
    section = _load_params_file(path).get("/**") or {}
    return list((section.get("ros__parameters") or {}) if isinstance(section, dict) else {})


def cameras_from_params_file(path: str | Path, node_name: str, namespace: str = "") -> list[str] | None:
    """The `cameras` parameter the params file gives the node (under "/**", the node's name or its
    fully qualified name), or None when it gives none."""
    data = _load_params_file(path)
    fqn = "/" + "/".join(p for p in (namespace.strip("/"), node_name) if p)
    found = None
    for key in ("/**", node_name, fqn, fqn.lstrip("/")):  # later keys are more specific
        section = data.get(key)
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if isinstance(params, dict) and "cameras" in params:
            found = [str(c) for c in params["cameras"]]
    return found


def camera_setup(cameras: Sequence[str] | None, camera_topic: str, camera_info_topic: str, depth_topic: str,
                 camera_topics: Sequence[str] = (), camera_info_topics: Sequence[str] = (),
                 depth_topics: Sequence[str] = ()) -> CameraSetup:
    """`cameras` (None or [""]: the unnamed camera) and the topic arguments -> parameter + remaps.
    ValueError with a one-line reason for a bad name or a topic list of the wrong length."""
    names = list(cameras) if cameras else [""]
    reason = problem("cameras", names)
    if reason:
        raise ValueError(reason)
    if names == [""]:
        if camera_topics or camera_info_topics or depth_topics:
            raise ValueError("camera_topics / camera_info_topics / depth_topics are for named cameras "
                             "(cameras:=[a, b]); the unnamed camera takes camera_topic, camera_info_topic, depth_topic")
        return CameraSetup(None if cameras is None else [""], [
            ("image", camera_topic), ("image/compressed", f"{camera_topic}/compressed"),
            ("camera_info", camera_info_topic), ("depth/image", depth_topic)])
    for what, topics in (("camera_topics", camera_topics), ("camera_info_topics", camera_info_topics),
                         ("depth_topics", depth_topics)):
        if topics and len(topics) != len(names):
            raise ValueError(f"{what} names {len(topics)} topic(s) for {len(names)} cameras {names}: one per camera")
    remappings: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        image = camera_topics[i] if camera_topics else f"/{name}/image_raw"
        info, depth = camera_siblings(image)
        remappings += [(f"{name}/image", image), (f"{name}/image/compressed", f"{image}/compressed"),
                       (f"{name}/camera_info", camera_info_topics[i] if camera_info_topics else info),
                       (f"{name}/depth/image", depth_topics[i] if depth_topics else depth)]
    return CameraSetup(names, remappings)


def unknown_argument_warnings(given: Iterable[str], declared: Iterable[str], node_parameters: Iterable[str],
                              launch_file: str = "segment.launch.py") -> list[str]:
    """One warning per given launch argument this file does not declare that is meant for it."""
    declared, parameters = list(declared), set(node_parameters)
    warnings = []
    for name in sorted(set(given) - set(declared)):
        if name in parameters:
            warnings.append(f"{launch_file}: '{name}' is a node parameter, not a launch argument, and is ignored: "
                            f"set it in params_file (or after the launch, with `casseg-ctl param set`)")
            continue
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.8)
        if close:
            warnings.append(f"{launch_file}: unknown launch argument '{name}' is ignored; did you mean '{close[0]}'?")
    return warnings

