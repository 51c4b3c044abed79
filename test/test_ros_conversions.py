"""Image/CompressedImage <-> numpy conversions, including every malformed input the node rejects."""
import array
import io

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from casseg_ros.ros.conversions import (
    InvalidImage, compressed_to_rgb, image_to_rgb, numpy_to_image, to_rgb,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def raw(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1).view(np.uint8) if pixels.dtype == np.uint8 else pixels.reshape(h, -1)
    if pixels.dtype == np.uint16:
        row = pixels.astype(">u2" if bigendian else "<u2").reshape(h, -1).view(np.uint8)
    padded = np.zeros((h, row.shape[1] + pad), np.uint8)
    padded[:, :row.shape[1]] = row
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=padded.shape[1])
    msg.data = array.array("B", padded.tobytes())
    return msg


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding,make", [
    ("rgb8", lambda p: p),
    ("bgr8", lambda p: p[..., ::-1]),
    ("rgba8", lambda p: np.dstack([p, np.full(p.shape[:2], 7, np.uint8)])),
    ("bgra8", lambda p: np.dstack([p[..., ::-1], np.full(p.shape[:2], 7, np.uint8)])),
])
def test_colour_encodings_decode_to_rgb(encoding, make, pad):
    out = image_to_rgb(raw(np.ascontiguousarray(make(RGB)), encoding, pad))
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)


def test_rgb8_without_padding_is_zero_copy():
    msg = raw(RGB, "rgb8")
    out = image_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("pad", [0, 2])
def test_mono8(pad):
    grey = RGB[..., 0].copy()
    out = image_to_rgb(raw(grey, "mono8", pad))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 1, 2])
def test_mono16_keeps_high_byte(bigendian, pad):
    depth = RNG.integers(0, 65536, size=(4, 6), dtype=np.uint16)
    out = image_to_rgb(raw(depth, "mono16", pad, bigendian))
    np.testing.assert_array_equal(out[..., 1], (depth >> 8).astype(np.uint8))


def _bad(**kw) -> Image:
    msg = raw(RGB, "rgb8")
    for k, v in kw.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize("msg,reason", [
    (_bad(encoding="yuv422"), "unsupported encoding"),
    (_bad(encoding="32FC1"), "unsupported encoding"),
    (_bad(step=20), "step 20 <"),
    (_bad(data=array.array("B", bytes(104))), "data length 104"),
    (_bad(data=array.array("B", bytes(106))), "data length 106"),
    (Image(height=0, width=0, encoding="rgb8", step=0), "empty image"),
    (Image(height=10, width=0, encoding="rgb8", step=0), "empty image"),
    (Image(height=100_000, width=100_000, encoding="mono8", step=100_000), "exceeds max_input_pixels"),
])
def test_malformed_raw_images_are_rejected_with_reason(msg, reason):
    with pytest.raises(InvalidImage) as err:
        image_to_rgb(msg)
    assert reason in err.value.reason


def test_max_pixels_is_configurable():
    with pytest.raises(InvalidImage, match="max_input_pixels=34"):
        image_to_rgb(raw(RGB, "rgb8"), max_pixels=34)
    assert image_to_rgb(raw(RGB, "rgb8"), max_pixels=35).shape == (5, 7, 3)


def compressed(pixels_rgb: np.ndarray, ext: str, **params) -> CompressedImage:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(pixels_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format=ext.strip("."))
    msg.data = array.array("B", buf.tobytes())
    return msg


SMOOTH = cv2.resize(RGB, (64, 48), interpolation=cv2.INTER_LINEAR)


def test_png_is_lossless():
    np.testing.assert_array_equal(compressed_to_rgb(compressed(SMOOTH, ".png")), SMOOTH)


def test_jpeg_decodes_to_rgb():
    out = to_rgb(compressed(SMOOTH, ".jpg"))
    assert out.shape == (48, 64, 3)
    # Lossy, but colour order must be right: channel means agree closely.
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), SMOOTH.reshape(-1, 3).mean(0), atol=4)


EXIF_ORIENTATION_TAG = 0x0112


def with_exif_orientation(pixels_rgb: np.ndarray, fmt: str, orientation: int | None) -> CompressedImage:
    """PIL-encoded JPEG/PNG whose EXIF (JPEG APP1 / PNG eXIf) carries `orientation` (None: no EXIF)."""
    buf = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {}
    if orientation is not None:
        exif = PILImage.Exif()
        exif[EXIF_ORIENTATION_TAG] = orientation
        options["exif"] = exif.tobytes()
    PILImage.fromarray(pixels_rgb).save(buf, fmt, **options)
    msg = CompressedImage(format=fmt.lower())
    msg.data = array.array("B", buf.getvalue())
    return msg


# np.rot90 turns (k) that a decoder applying the EXIF orientation tag makes: 6 = 90° clockwise.
EXIF_ROT90_TURNS = {1: 0, 3: 2, 6: -1, 8: 1}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_ignored(fmt, orientation):
    """The stored pixels as they are: a camera (and image_transport) never rotates by EXIF."""
    msg = with_exif_orientation(SMOOTH, fmt, orientation)
    untagged = compressed_to_rgb(with_exif_orientation(SMOOTH, fmt, None))
    # The tag is really there: OpenCV's default decode turns the image by it.
    applied = cv2.cvtColor(cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(applied, np.rot90(untagged, EXIF_ROT90_TURNS[orientation]))
    out = compressed_to_rgb(msg)
    # Same pixels as the same encoding without EXIF (bit-exact: the compressed scan is identical).
    np.testing.assert_array_equal(out, untagged)
    if fmt == "PNG":
        np.testing.assert_array_equal(out, SMOOTH)
    else:
        assert np.abs(out.astype(int) - SMOOTH).mean() < 4


def test_grey_16bit_png_decodes_to_rgb8():
    ok, buf = cv2.imencode(".png", np.full((8, 9), 40000, np.uint16))
    msg = CompressedImage(format="png")
    msg.data = array.array("B", buf.tobytes())
    out = compressed_to_rgb(msg)
    assert out.shape == (8, 9, 3) and out.dtype == np.uint8 and out[0, 0, 0] == 40000 >> 8


def _cut(msg: CompressedImage, keep: int) -> CompressedImage:
    return CompressedImage(format=msg.format, data=msg.data[:keep])


def _flip_middle(msg: CompressedImage) -> CompressedImage:
    data = bytearray(msg.data)
    mid = len(data) // 2
    data[mid:mid + 40] = bytes(40)  # zeroed run inside the compressed stream
    return CompressedImage(format=msg.format, data=array.array("B", bytes(data)))


def _forged_png_size(msg: CompressedImage) -> CompressedImage:
    data = bytearray(msg.data)
    data[16:24] = (50_000).to_bytes(4, "big") * 2
    return CompressedImage(format="png", data=array.array("B", bytes(data)))


PNG = compressed(SMOOTH, ".png")
JPEG = compressed(SMOOTH, ".jpg")


@pytest.mark.parametrize("msg,reason", [
    (CompressedImage(format="jpeg"), "empty compressed image"),
    (CompressedImage(format="jpeg", data=array.array("B", b"GIF89a" + bytes(40))), "neither PNG nor JPEG"),
    (_cut(JPEG, len(JPEG.data) // 2), "truncated JPEG"),
    (_cut(JPEG, 10), "JPEG"),
    (_cut(PNG, len(PNG.data) // 2), "truncated PNG"),
    (_cut(PNG, 20), "truncated PNG header"),
    (_flip_middle(PNG), "corrupt png"),
    (_forged_png_size(PNG), "exceeds max_input_pixels"),
])
def test_corrupt_compressed_images_are_rejected_with_reason(msg, reason):
    with pytest.raises(InvalidImage) as err:
        compressed_to_rgb(msg)
    assert reason in err.value.reason


@pytest.mark.parametrize("encoding,pixels", [
    ("mono8", RGB[..., 0].copy()),
    ("mono16", RNG.integers(0, 65536, size=(5, 7), dtype=np.uint16)),
    ("rgb8", RGB),
])
def test_numpy_to_image_round_trip_keeps_header(encoding, pixels):
    header = Header(frame_id="cam_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = numpy_to_image(pixels, encoding, header)
    assert msg.header == header and msg.encoding == encoding
    assert (msg.height, msg.width) == pixels.shape[:2]
    assert len(msg.data) == msg.step * msg.height
    back = np.frombuffer(msg.data, pixels.dtype).reshape(pixels.shape)
    np.testing.assert_array_equal(back, pixels)


def test_numpy_to_image_rejects_wrong_dtype():
    with pytest.raises(ValueError, match="mono8 needs"):
        numpy_to_image(np.zeros((2, 2), np.int32), "mono8", Header())
