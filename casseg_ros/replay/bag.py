"""rosbag2 access for the replay tools: a typestore that knows casseg_msgs, frame/label pairing,
and an output bag that is never left half-written.

Messages are kept as the raw CDR bytes rosbags reads; the replay deserialises them with
`rclpy.serialization` into the very message classes the node receives, so the node's
`casseg_ros.ros.conversions` decode them unchanged (no second conversion code path). rclpy is only
used as a (de)serialiser here: no DDS participant is created.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from casseg_ros.resources import share_directories

# Interface packages the Kilted typestore lacks: registered from their installed definitions.
MSG_PACKAGES = ("vision_msgs", "casseg_msgs")
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
LABEL_INFO_TYPE = "vision_msgs/msg/LabelInfo"
SCENE_GRAPH_TYPE = "casseg_msgs/msg/SceneGraph"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)


class BagError(RuntimeError):
    """A bag that cannot be used as asked (missing, unreadable, missing topic, wrong type)."""


def msg_definitions_dir(package: str) -> Path:
    """An installed interface package's `.msg` files: `share/<package>/msg` found through the ament
    index, else the Python prefix (`make setup` builds them into the venv), as for any installed
    ROS package — the same definitions the node's message classes were generated from."""
    candidates = [share / "msg" for share in share_directories(package)]
    for directory in candidates:
        if any(directory.glob("*.msg")):
            return directory
    tried = ", ".join(str(c) for c in candidates) or f"no share/{package} in the ament index or sys.prefix"
    raise BagError(f"{package} message definitions not found (tried: {tried}); build the interface "
                   f"packages first (make setup, or scripts/build_interfaces.sh)")


@lru_cache(maxsize=1)
def typestore():
    """Kilted typestore + vision_msgs + casseg_msgs, so output bags carry full message definitions."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for package in MSG_PACKAGES:
        for path in sorted(msg_definitions_dir(package).glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass
class _SalvagedConnection:
    id: int
    topic: str
    msgtype: str
    msgcount: int


class SalvagedMcap:
    """The readable part of an mcap file whose end is missing (recorder killed, copy cut short).

    rosbags needs the mcap footer/summary and refuses such a file; the `mcap` stream reader reads
    records front to back, so every complete chunk before the damage is still usable. Offers the
    subset of `rosbags.rosbag2.Reader` the replay uses; `damage` says where reading stopped.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.damage: str | None = None
        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, int]] = {}
        counts: dict[int, int] = {}
        self._start, self._end = None, None
        for rec in self._records():
            if isinstance(rec, Schema):
                schemas[rec.id] = rec.name
            elif isinstance(rec, Channel):
                channels[rec.id] = (rec.topic, rec.schema_id)
            elif isinstance(rec, Message):
                counts[rec.channel_id] = counts.get(rec.channel_id, 0) + 1
                self._start = rec.log_time if self._start is None else min(self._start, rec.log_time)
                self._end = rec.log_time if self._end is None else max(self._end, rec.log_time)
        if self.damage is None:
            raise BagError(f"{path}: not readable by rosbags, yet the mcap stream reads to the end")
        self.connections = [_SalvagedConnection(cid, topic, schemas.get(sid, "?"), counts.get(cid, 0))
                            for cid, (topic, sid) in sorted(channels.items())]

    def _records(self):
        with open(self.path, "rb") as handle:
            try:
                for rec in StreamReader(handle).records:
                    yield rec
            except Exception as exc:  # noqa: BLE001 - EndOfFile, bad CRC, broken zstd frame...
                self.damage = f"{type(exc).__name__}: {exc}".strip().rstrip(":")

    @property
    def duration(self) -> int:
        return 0 if self._start is None else self._end - self._start + 1

    def messages(self, connections=()):
        by_id = {c.id: c for c in (connections or self.connections)}
        for rec in self._records():
            if isinstance(rec, Message) and rec.channel_id in by_id:
                yield by_id[rec.channel_id], rec.log_time, rec.data

    def close(self) -> None:
        pass


def open_reader(path: str | os.PathLike):
    """Open a rosbag2 directory (mcap or sqlite3) or a bare .mcap file, with a message naming the bag.

    A bare .mcap that rosbags rejects (e.g. truncated) is salvaged up to its damage, with a warning
    (`reader.damage`), so the frames it still holds are evaluated.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
        return reader
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for unreadable bags
        error = exc
    if path.is_file() and path.suffix == ".mcap":
        try:
            salvaged = SalvagedMcap(path)
        except Exception:  # noqa: BLE001 - not even the start is readable
            salvaged = None
        if salvaged is not None and salvaged.connections:
            return salvaged
    raise BagError(f"cannot open bag {path}: {type(error).__name__}: {error} "
                   f"(truncated or corrupt file, or not a rosbag2 mcap/sqlite3 bag)") from error


def find_connection(reader: Reader, topic: str | None, types: tuple[str, ...], role: str):
    """The connection of `topic` (or the only one of `types` when topic is None)."""
    topics = {c.topic: c for c in reader.connections}
    if topic is None:
        matching = [c for c in reader.connections if c.msgtype in types]
        if len(matching) > 1 and role == "image":  # ground-truth labels/instances and registered depth are Images too
            matching = [c for c in matching if not any(word in c.topic.lower() for word in ("label", "depth", "instance"))]
        if len(matching) != 1:
            listing = ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections) or "none"
            raise BagError(f"cannot pick the {role} topic automatically: {len(matching)} topics of type "
                           f"{' / '.join(types)} in {reader.path} (topics: {listing}); name one")
        return matching[0]
    if topic not in topics:
        listing = ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections) or "none"
        raise BagError(f"{role} topic {topic!r} not in bag {reader.path} (topics: {listing})")
    conn = topics[topic]
    if conn.msgtype not in types:
        raise BagError(f"{role} topic {topic!r} has type {conn.msgtype}, expected {' or '.join(types)}")
    return conn


@dataclass
class BagFrame:
    """One camera message of the bag with the messages of the same stamp on the paired topics
    (raw CDR): its ground-truth label, camera_info, registered depth, when the bag has them."""

    index: int
    log_time_ns: int
    msgtype: str
    raw: bytes
    label_raw: bytes | None = None
    label_note: str | None = None  # why label_raw is None although a label topic was given
    companions: dict[str, bytes | None] = field(default_factory=dict)  # e.g. "camera_info", "depth"


def header_stamp_of(raw: bytes, msgtype: str) -> int:
    """Header stamp straight from CDR (sec int32, nanosec uint32 after the 4-byte encapsulation):
    pairing images with labels must not deserialise whole images twice."""
    if len(raw) < 12:
        raise ValueError(f"{msgtype} message of {len(raw)} bytes is too short for a header")
    little = raw[1] == 1
    order = "little" if little else "big"
    sec = int.from_bytes(raw[4:8], order, signed=True)
    nsec = int.from_bytes(raw[8:12], order)
    return sec * 1_000_000_000 + nsec


@dataclass
class FrameStream:
    """Image messages of one topic, each paired with the messages of the same header stamp on the
    label topic and on the companion topics (camera_info, registered depth).

    A recording writes those next to their image, so a bounded look-ahead suffices: an image is
    emitted as soon as every paired topic has a message of its stamp, or once `window` later
    messages went by (what is missing is then None; for the label, `label_note` says so).
    """

    reader: Reader
    image_conn: object
    label_conn: object | None = None
    window: int = 64
    errors: list[str] = field(default_factory=list)
    companion_conns: dict[str, object] = field(default_factory=dict)  # name -> connection

    def __iter__(self) -> Iterator[BagFrame]:
        paired = dict(self.companion_conns)
        if self.label_conn is not None:
            paired["label"] = self.label_conn
        name_of = {conn.id: name for name, conn in paired.items()}
        waiting: dict[str, dict[int, bytes]] = {name: {} for name in paired}  # name -> stamp -> raw
        pending: list[tuple[int, BagFrame, int]] = []  # (stamp, frame, messages seen since)
        index = 0

        def pop(frame_stamp: int, frame: BagFrame) -> BagFrame:
            found = {name: by_stamp.pop(frame_stamp, None) for name, by_stamp in waiting.items()}
            frame.label_raw = found.pop("label", None)
            frame.companions = found
            if frame.label_raw is None and self.label_conn is not None:
                frame.label_note = f"no message on {self.label_conn.topic} with this frame's stamp"
            return frame

        try:
            for conn, log_time, raw in self.reader.messages(connections=[self.image_conn, *paired.values()]):
                raw = bytes(raw)
                if conn.id == self.image_conn.id:
                    frame = BagFrame(index=index, log_time_ns=int(log_time), msgtype=conn.msgtype, raw=raw)
                    index += 1
                    if not paired:
                        yield frame
                        continue
                    try:
                        stamp = header_stamp_of(raw, conn.msgtype)
                    except ValueError:
                        yield frame  # the pipeline rejects it with the decode error
                        continue
                    pending.append((stamp, frame, 0))
                else:
                    try:
                        waiting[name_of[conn.id]][header_stamp_of(raw, conn.msgtype)] = raw
                    except ValueError:
                        pass
                # Emit, in order, every pending image whose paired messages are here or will not come.
                pending = [(s, f, n + 1) for s, f, n in pending]
                while pending and (all(pending[0][0] in by_stamp for by_stamp in waiting.values())
                                   or pending[0][2] > self.window):
                    s, f, _ = pending.pop(0)
                    yield pop(s, f)
                for by_stamp in waiting.values():  # messages without an image: keep memory bounded
                    if len(by_stamp) > 4 * self.window:
                        for key in sorted(by_stamp)[: len(by_stamp) - 2 * self.window]:
                            by_stamp.pop(key)
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt chunk, truncated file, bad compression...
            self.errors.append(f"reading {self.reader.path} stopped after {index} image messages: "
                               f"{type(exc).__name__}: {exc} (truncated or corrupt bag)")
        for s, f, _ in pending:
            yield pop(s, f)


class OutputBag:
    """A rosbag2 (mcap, zstd-compressed chunks) written to a temp directory next to `path` and
    moved into place by `close()`: a reader never sees a half-written bag, and a bag whose writing
    was interrupted by bad input is still closed properly (its messages kept) before the move.
    """

    def __init__(self, path: str | os.PathLike, compress: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._writer = Writer(self._tmpdir / self.path.name, version=9, storage_plugin=StoragePlugin.MCAP)
        if compress:
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str, qos: str | None = None) -> None:
        kwargs = {"offered_qos_profiles": qos} if qos else {}
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore(), **kwargs)
        self.counts[topic] = 0

    def write(self, topic: str, log_time_ns: int, raw_cdr: bytes) -> None:
        self._writer.write(self._connections[topic], int(log_time_ns), raw_cdr)
        self.counts[topic] += 1

    def close(self) -> Path:
        self._writer.close()
        final_tmp = self._tmpdir / self.path.name
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
            os.replace(final_tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(final_tmp, self.path)
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self._tmpdir, ignore_errors=True)


def read_bag_messages(path: str | os.PathLike, topics: list[str] | None = None):
    """[(topic, log_time_ns, deserialised rosbags message)] of a bag — for tests and reports."""
    store = typestore()
    out = []
    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, log_time, raw in reader.messages(connections=conns):
            out.append((conn.topic, log_time, store.deserialize_cdr(raw, conn.msgtype)))
    return out
