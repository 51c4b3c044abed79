"""What a recorder captured from the live node, decoded: mask stamps and receive times,
diagnostics, the latency/drop figures of one player run, and organised point clouds."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from casseg_ros.replay.bag import DIAGNOSTICS_TYPE, IMAGE_TYPE, header_stamp_of, typestore
from casseg_ros.replay.metrics import percentiles_ms

NODE_DIAGNOSTICS = ("frames_received", "frames_processed", "dropped_in_node", "lost_in_transport", "inputs_rejected",
                    "inference_errors", "processing_errors", "last_reject_reason", "last_error", "forward_p50_ms",
                    "host_overhead_p50_ms")
ERROR_COUNTERS = ("inputs_rejected", "inference_errors", "processing_errors")


@dataclass
class LiveRecording:
    """Per mask its header stamp and receive time (ns), messages per topic, the node's diagnostics."""

    mask_stamps_ns: np.ndarray
    mask_receive_ns: np.ndarray
    messages: dict[str, int]
    last_diagnostics: dict[str, str]
    diagnostics_series: list[dict[str, str]]

    def since(self, first_stamp_ns: int) -> "LiveRecording":
        """Only the masks stamped at or after `first_stamp_ns` (a player's own frames)."""
        ours = self.mask_stamps_ns >= first_stamp_ns
        return replace(self, mask_stamps_ns=self.mask_stamps_ns[ours], mask_receive_ns=self.mask_receive_ns[ours])

    def latencies_s(self) -> list[float]:
        """Camera stamp -> mask received, per mask."""
        return ((self.mask_receive_ns - self.mask_stamps_ns) / 1e9).tolist()


def read_recording(bag_path: Path, node: str = "/casseg_ros") -> LiveRecording:
    store = typestore()
    ns = node.rstrip("/")
    stamps, received, counts = [], [], {}
    diags: list[dict[str, str]] = []
    with Reader(Path(bag_path)) as reader:
        for conn, log_time, raw in reader.messages():
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            if conn.topic == f"{ns}/mask":
                stamps.append(header_stamp_of(bytes(raw), IMAGE_TYPE))
                received.append(log_time)
            elif conn.topic == "/diagnostics":
                msg = store.deserialize_cdr(raw, DIAGNOSTICS_TYPE)
                for status in msg.status:
                    if status.name.startswith(ns):
                        diags.append({kv.key: kv.value for kv in status.values})
    return LiveRecording(np.asarray(stamps, np.int64), np.asarray(received, np.int64), counts,
                         diags[-1] if diags else {}, diags)


# sensor_msgs/PointField datatype -> numpy (little-endian): a cloud is read by its declared fields.
_POINT_FIELD_DTYPES = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 8: "<f8"}


def cloud_array(msg: Any) -> np.ndarray:
    """An organised little-endian PointCloud2 (rosbags or rclpy) -> (height, width) structured
    array with one field per declared PointField (a packed `rgb` reads as the FLOAT32 it is declared)."""
    if msg.is_bigendian:
        raise ValueError("big-endian point clouds are not supported")
    dtype = np.dtype({"names": [f.name for f in msg.fields], "offsets": [f.offset for f in msg.fields],
                      "formats": [_POINT_FIELD_DTYPES[f.datatype] for f in msg.fields], "itemsize": msg.point_step})
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.row_step)[:, : msg.width * msg.point_step]
    return np.ascontiguousarray(rows).view(dtype).reshape(msg.height, msg.width)


def _diag_int(d: dict[str, str], key: str) -> int:
    try:
        return int(float(d[key]))
    except (KeyError, ValueError):
        return 0


def live_metrics(rec: LiveRecording, published: int, elapsed_s: float,
                 first_stamp_ns: int | None = None) -> dict[str, Any]:
    """Latency/drops of one player run. Masks stamped before the player's first frame are not
    ours (another publisher in the same domain) and are left out, and counted."""
    foreign = 0
    if first_stamp_ns is not None:
        ours = rec.since(first_stamp_ns)
        foreign = int(rec.mask_stamps_ns.size - ours.mask_stamps_ns.size)
        rec = ours
    received = int(rec.mask_stamps_ns.size)
    span_s = (rec.mask_receive_ns.max() - rec.mask_receive_ns.min()) / 1e9 if received > 1 else 0.0
    d = rec.last_diagnostics
    return {
        "frames_published": published,
        "frames_received": received,
        "dropped": published - received,
        "publish_s": round(elapsed_s, 3),
        "output_fps": round((received - 1) / span_s, 3) if span_s > 0 else None,
        "latency_ms": percentiles_ms(rec.latencies_s()),
        "node_diagnostics": {k: d.get(k) for k in NODE_DIAGNOSTICS},
        "errors_in_node": sum(_diag_int(d, k) for k in ERROR_COUNTERS),
        "foreign_masks_ignored": foreign,
    }
