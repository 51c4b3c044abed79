"""Atomic writes for the runtime: the project-wide helper (``casseg_ros.fileio``), re-exported here so
the engine cache and the ONNX export keep one import path."""
from __future__ import annotations

from casseg_ros.fileio import atomic_write_bytes

__all__ = ["atomic_write_bytes"]
