"""Which recordings a fleet replay evaluates, and the output folder of each.

`casseg-replay` takes recordings as any mix of:

* a bag: a rosbag2 directory (it holds `metadata.yaml`) or a bare `.mcap` / `.db3` file;
* a folder of bags: every bag below it, found recursively (hidden folders and the fleet's own
  output folder are not searched; a bag's own directory is not searched inside);
* a list file: one bag or folder per line, relative to the list file; `#` starts a comment.

The order is the order given (folders sorted by path), duplicates are dropped. Each bag gets the
output folder `OUT/bags/NAME`, NAME being the bag's name, plus a short hash of its full path
when two bags share a name, so that the same command always maps a bag to the same folder (a
re-run finds the outputs it made before).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

BAG_FILE_SUFFIXES = (".mcap", ".db3")
BAGS_FOLDER = "bags"  # OUT/bags/NAME: one folder per recording


class FleetInputError(ValueError):
    """The recordings asked for cannot be listed (empty folder, unreadable list file...)."""


def is_bag(path: Path) -> bool:
    """A rosbag2 directory or a bare bag file (what a single-bag `casseg-replay` run takes)."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix in BAG_FILE_SUFFIXES)


def _bags_in_folder(folder: Path, exclude: Path | None) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or (exclude is not None and entry.resolve() == exclude):
            continue
        if is_bag(entry):
            found.append(entry)
        elif entry.is_dir():
            found += _bags_in_folder(entry, exclude)
    return found


def _read_list_file(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetInputError(f"cannot read list file {path}: {exc}") from exc
    entries = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [(path.parent / entry) for entry in entries if entry]


def _expand(path: Path, exclude: Path | None, in_list: bool) -> list[Path]:
    if is_bag(path) or not path.exists():
        return [path]  # a missing bag fails alone, with the replay's own message
    if path.is_dir():
        bags = _bags_in_folder(path, exclude)
        if not bags:
            raise FleetInputError(f"no rosbag2 recording (a folder with metadata.yaml, or a "
                                  f"{'/'.join(BAG_FILE_SUFFIXES)} file) found in {path}")
        return bags
    if in_list:
        raise FleetInputError(f"{path} (named in a list file) is neither a bag nor a folder of bags")
    return [bag for entry in _read_list_file(path) for bag in _expand(entry, exclude, in_list=True)]


def collect_bags(paths: list[Path], exclude: Path | None = None) -> list[Path]:
    """The recordings named by `paths` (bags, folders of bags, list files), without duplicates.

    `exclude`: a folder never searched (the fleet's output folder, which holds output bags)."""
    exclude = exclude.resolve() if exclude is not None else None
    bags: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        for bag in _expand(Path(path), exclude, in_list=False):
            key = bag.resolve()
            if key not in seen:
                seen.add(key)
                bags.append(bag)
    return bags


def _name(bag: Path) -> str:
    return bag.stem if bag.is_file() or bag.suffix in BAG_FILE_SUFFIXES else bag.name


def output_names(bags: list[Path]) -> list[str]:
    """Folder name of each bag's outputs: its name, made unique by a hash of its full path."""
    names = [_name(bag) for bag in bags]
    shared = {n for n in names if names.count(n) > 1}
    return [f"{n}-{hashlib.sha1(str(bag.resolve()).encode()).hexdigest()[:8]}" if n in shared else n
            for n, bag in zip(names, bags)]
