"""Atomic file writes: every file the project writes (checkpoints, vocabularies, ONNX models,
engines, metrics, reports) goes through here, so a crash never leaves a half-written file.

The file gets the permissions any newly created file gets (0666 less the process's umask: 0644
under the usual umask 022), as `open(path, "w")` would give it: the temp file is created with
`os.open(..., 0o666)`, so the kernel applies the umask (`tempfile.mkstemp` makes 0600 files, which
containers and other users could not read).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

_NEW_FILE_MODE = 0o666  # less the umask, applied by the kernel at creation


def _create_temp(directory: Path, name: str) -> tuple[int, str]:
    """A new, empty, exclusively created temp file next to `name` in `directory`: (fd, path)."""
    while True:
        tmp = str(directory / f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                           _NEW_FILE_MODE), tmp
        except FileExistsError:  # a name another writer just took: draw again
            continue


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path``: temp file in the same directory, fsync, ``os.replace``.

    Readers see either the old file or the complete new one. The temp file is removed if
    anything fails before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (best effort: not every file system allows it)
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
