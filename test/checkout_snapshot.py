"""The checkout's files and their modification times, to see what a test session wrote into it.

conftest.py takes a snapshot when the session starts (before collection); test_environment.py
compares the checkout with it after the whole suite.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Not watched: git's, the venv's, Python's byte-code and pytest's own caches.
UNWATCHED = {".git", ".venv", "__pycache__", ".pytest_cache"}


def checkout_files(root: Path = REPO_ROOT) -> dict[str, int]:
    """{path relative to the checkout: mtime_ns} of every file but those under UNWATCHED folders."""
    found = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in UNWATCHED]
        for name in files:
            path = Path(folder, name)
            found[path.relative_to(root).as_posix()] = path.stat().st_mtime_ns
    return found
