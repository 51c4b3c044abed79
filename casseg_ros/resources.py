"""Where the package's installed data (models, config, launch files, demo recording) lives.

Data files are installed by setup.py's `data_files` into `<prefix>/share/casseg_ros/` — the ament
convention — so they are found through the installation, never through a path computed from the
source tree (that breaks a non-editable `pip install .`):

1. the ament index (`colcon build` install, a sourced ROS workspace, or `AMENT_PREFIX_PATH`),
2. `sys.prefix/share/casseg_ros` (a plain `pip install .` into a virtual environment),
3. the working directory (a relative path of the user's own),
4. the checkout an editable install (`make setup`: `pip install -e .`) runs from: it has no share
   directory, its data files stay in the source tree, so the defaults (`models/…`, `data/…`) are
   found wherever the command runs. Only a folder whose package.xml names casseg_ros counts, so a
   regular install never looks there.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ament_index_python.packages import get_package_share_directory

PACKAGE = "casseg_ros"
# The bundled demo: weights and recording, relative to the share directory (or a checkout).
DEMO_MODEL = "models/casseg_demo.safetensors"
DEMO_BAG = "data/demo.mcap"


def share_directories(package: str = PACKAGE) -> list[Path]:
    """The package's share directories, most specific first (ament index, then the pip prefix)."""
    found: list[Path] = []
    try:
        found.append(Path(get_package_share_directory(package)))
    except (LookupError, OSError):  # not in the ament index, or no AMENT_PREFIX_PATH at all
        pass
    pip_share = Path(sys.prefix) / "share" / package
    if pip_share.is_dir() and pip_share not in found:
        found.append(pip_share)
    return found


def editable_checkout() -> Path | None:
    """The source tree this package is imported from, when that is a casseg_ros checkout (an
    editable install, or running inside the repository), else None."""
    root = Path(__file__).resolve().parent.parent
    try:
        manifest = (root / "package.xml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if f"<name>{PACKAGE}</name>" in manifest else None


def candidate_paths(relative_or_absolute: str | os.PathLike) -> list[Path]:
    """Where `resolve_data_path` looks: an absolute path as given; a relative one in each share
    directory, in the working directory, then in the checkout of an editable install."""
    path = Path(os.path.expanduser(str(relative_or_absolute)))
    if path.is_absolute():
        return [path]
    checkout = editable_checkout()
    candidates = ([share / path for share in share_directories()] + [Path.cwd() / path]
                  + ([checkout / path] if checkout is not None else []))
    return list(dict.fromkeys(candidates))  # once each (the working directory is often the checkout)


def resolve_data_path(relative_or_absolute: str | os.PathLike, what: str = "file", folders: bool = False) -> Path:
    """The first existing candidate (a file; with ``folders`` a folder too, e.g. a rosbag2
    directory or a folder of images); FileNotFoundError naming every place tried."""
    candidates = candidate_paths(relative_or_absolute)
    for candidate in candidates:
        if candidate.is_file() or (folders and candidate.is_dir()):
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{what} {str(relative_or_absolute)!r} not found (tried: {tried})")


def loopback_profile() -> Path:
    """The project's Fast DDS profile that keeps every participant on 127.0.0.1 (+ shared memory)."""
    return resolve_data_path("config/fastdds_loopback.xml", "Fast DDS loopback profile")
