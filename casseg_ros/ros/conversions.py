"""sensor_msgs Image / CompressedImage <-> numpy, with validation of everything a camera can send.

Decoding always yields an RGB uint8 HWC array (the model's input format). Every malformed message
raises `InvalidImage(reason)` instead of numpy/OpenCV errors or, worse, a silently garbled frame,
so the node can count it, warn and carry on with the next frame.

Copies are avoided where the encoding allows it: the message buffer is viewed with
`np.frombuffer` and row padding (`step > width * channels`) is skipped with a strided view, so an
unpadded or padded `rgb8` image costs no copy at all (the result then aliases `msg.data`: treat it
as read-only). Other encodings cost exactly one OpenCV colour conversion.
"""
from __future__ import annotations

import array
import struct
from typing import NamedTuple

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from casseg_ros.message_buffers import backing_bytes

# 4096 x 4096: well above any camera a segmentation node is fed with (a 12 MP sensor is 4000x3000),
# and far below what lets a forged header make us allocate gigabytes.
DEFAULT_MAX_PIXELS = 4096 * 4096


class InvalidImage(ValueError):
    """A message that cannot be turned into an image; `reason` says why, for logs and counters."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _RawLayout(NamedTuple):
    channels: int
    bytes_per_channel: int
    to_rgb: int | None  # cv2 colour conversion code, None when already RGB


RAW_ENCODINGS: dict[str, _RawLayout] = {
    "rgb8": _RawLayout(3, 1, None),
    "bgr8": _RawLayout(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": _RawLayout(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": _RawLayout(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": _RawLayout(1, 1, cv2.COLOR_GRAY2RGB),
    "mono16": _RawLayout(1, 2, cv2.COLOR_GRAY2RGB),
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# IMREAD_COLOR: grey and 16-bit PNGs come back as 8-bit 3-channel BGR, alpha dropped.
# IMREAD_IGNORE_ORIENTATION: the stored pixels as they are. OpenCV would otherwise apply an EXIF
# orientation tag (JPEG APP1, PNG eXIf) and rotate the frame, which ROS decoders (image_transport's
# compressed plugin) and the camera's own geometry (frame_id, CameraInfo) do not.
_IMDECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise InvalidImage(f"empty image ({width}x{height})")
    if height * width > max_pixels:
        raise InvalidImage(f"image {width}x{height} exceeds max_input_pixels={max_pixels}")


def image_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB. mono16 keeps its high byte (value >> 8)."""
    encoding = msg.encoding.strip().lower()
    layout = RAW_ENCODINGS.get(encoding)
    if layout is None:
        raise InvalidImage(f"unsupported encoding {msg.encoding!r} (supported: {', '.join(RAW_ENCODINGS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width, max_pixels)
    row_bytes = width * layout.channels * layout.bytes_per_channel
    if step < row_bytes:
        raise InvalidImage(f"step {step} < width*channels*bytes = {row_bytes} for {encoding} {width}x{height}")
    data = msg.data
    if len(data) != step * height:
        raise InvalidImage(f"data length {len(data)} != step*height = {step}*{height} = {step * height}")

    buffer = np.frombuffer(data, dtype=np.uint8)
    # (H, step) view, then drop the row padding: still a view, rows `step` bytes apart.
    rows = buffer.reshape(height, step)[:, :row_bytes]
    if layout.bytes_per_channel == 2:
        if step % 2:
            # Rows would start at odd byte offsets; a uint16 view is impossible, copy once.
            rows = np.ascontiguousarray(rows)
        wide = rows.view(">u2" if msg.is_bigendian else "<u2")
        pixels = (wide >> 8).astype(np.uint8)
    else:
        pixels = rows.reshape(height, width, layout.channels) if layout.channels > 1 else rows
    if layout.to_rgb is None:
        return pixels
    return cv2.cvtColor(pixels, layout.to_rgb)


def _compressed_size(data: bytes | memoryview) -> tuple[str, int, int]:
    """(format, height, width) from the PNG/JPEG header, without decoding the pixels.

    Reading the size first lets a forged 100000x100000 header be rejected before OpenCV
    allocates for it, and lets truncation be detected: libjpeg "decodes" a truncated JPEG by
    filling the missing rows with grey and only prints a warning.
    """
    head = bytes(data[:32])
    if head.startswith(_PNG_SIGNATURE):
        if len(data) < 33 or head[12:16] != b"IHDR":
            raise InvalidImage("truncated PNG header")
        width, height = struct.unpack(">II", head[16:24])
        if bytes(data[-8:]) != _PNG_IEND:
            raise InvalidImage("truncated PNG (no IEND chunk)")
        return "png", height, width
    if head.startswith(_JPEG_SOI):
        view = memoryview(data)
        pos = 2
        while pos + 4 <= len(view):
            if view[pos] != 0xFF:
                raise InvalidImage(f"corrupt JPEG: bad marker at byte {pos}")
            marker = view[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
                pos += 2
                continue
            (length,) = struct.unpack(">H", view[pos + 2:pos + 4])
            if marker in _JPEG_SOF_MARKERS:
                if pos + 9 > len(view):
                    break
                height, width = struct.unpack(">HH", view[pos + 5:pos + 9])
                # Restart/padding bytes may follow EOI; the marker must be among the last bytes.
                if _JPEG_EOI not in bytes(view[-16:]):
                    raise InvalidImage("truncated JPEG (no end-of-image marker)")
                return "jpeg", height, width
            if marker == 0xDA:  # start of scan before any frame header
                break
            pos += 2 + length
        raise InvalidImage("corrupt or truncated JPEG: no frame header")
    raise InvalidImage("compressed data is neither PNG nor JPEG")


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, any colour type) -> (H, W, 3) uint8 RGB."""
    data = msg.data
    if len(data) == 0:
        raise InvalidImage("empty compressed image")
    kind, height, width = _compressed_size(data)
    _check_size(height, width, max_pixels)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _IMDECODE_FLAGS)
    if decoded is None:
        raise InvalidImage(f"corrupt {kind} data ({len(data)} bytes) could not be decoded")
    if decoded.shape[:2] != (height, width):
        raise InvalidImage(f"corrupt {kind}: header says {width}x{height}, decoded {decoded.shape[1]}x{decoded.shape[0]}")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def to_rgb(msg: Image | CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg, max_pixels)
    return image_to_rgb(msg, max_pixels)


_OUTPUT_LAYOUTS = {"mono8": (np.uint8, 2), "mono16": (np.uint16, 2), "rgb8": (np.uint8, 3)}


def numpy_to_image(pixels: np.ndarray, encoding: str, header: Header) -> Image:
    """(H, W) uint8 -> mono8, (H, W) uint16 -> mono16, (H, W, 3) uint8 -> rgb8; header kept as is."""
    if encoding not in _OUTPUT_LAYOUTS:
        raise ValueError(f"cannot publish encoding {encoding!r} (supported: {', '.join(_OUTPUT_LAYOUTS)})")
    dtype, ndim = _OUTPUT_LAYOUTS[encoding]
    if pixels.dtype != dtype or pixels.ndim != ndim or (ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"{encoding} needs a {'(H,W,3)' if ndim == 3 else '(H,W)'} {np.dtype(dtype).name} array, "
                         f"got {pixels.shape} {pixels.dtype}")
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype.byteorder == ">":  # keep the little-endian wire format announced below
        pixels = pixels.astype(pixels.dtype.newbyteorder("<"))
    # check_fields=True: the generated setter then keeps an array.array as it is (else it copies)
    msg = Image(check_fields=True)
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
    msg.data = message_bytes(pixels)
    return msg


def message_bytes(values: np.ndarray) -> array.array:
    """`values`' bytes as the array.array a message's uint8[] field keeps: the array's own storage
    when it is a message array (casseg_ros/message_buffers.py, no copy), else one copy."""
    data = backing_bytes(values)
    if data is None:
        data = array.array("B")
        data.frombytes(memoryview(np.ascontiguousarray(values)).cast("B"))
    return data
