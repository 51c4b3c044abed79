"""Permission checks for tests: run a block under a given umask, read a file's mode bits."""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process's umask set to `mask` for the block (it is process-wide: restored after)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: str | os.PathLike) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def file_modes(root: Path) -> dict[str, int]:
    """{path relative to root: mode} of every file below root."""
    return {str(p.relative_to(root)): mode(p) for p in sorted(root.rglob("*")) if p.is_file()}
