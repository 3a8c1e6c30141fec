"""lisa_ros.runtime.codec: Image/CompressedImage <-> numpy, with stand-in messages (no ROS needed)."""

import array
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lisa_ros.runtime.codec import (
    ImageError,
    compressed_to_rgb,
    depth_to_meters,
    encode_compressed,
    image_to_rgb,
    mask_to_mono8_fields,
    rgb_to_image_fields,
)

RNG = np.random.default_rng(0)
H, W = 5, 7  # odd sizes catch row/column mix-ups
LAYOUTS = [  # (extra bytes per row, big-endian); 3 is not a multiple of any pixel size
    (0, False),
    (3, False),
    (0, True),
    (3, True),
]


def message(array_, encoding, padding=0, big=False):
    """A stand-in sensor_msgs/Image holding `array_`, rows padded by `padding` bytes."""
    fields = rgb_to_image_fields(array_, encoding)
    return SimpleNamespace(**rgb_to_image_fields(array_, encoding, is_bigendian=big, step=fields["step"] + padding))


@pytest.mark.parametrize("padding,big", LAYOUTS)
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_rgb_round_trip(encoding, padding, big):
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    msg = message(rgb, encoding, padding, big)
    assert msg.step == W * 3 + padding
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("padding,big", LAYOUTS)
@pytest.mark.parametrize("encoding", ["rgba8", "bgra8"])
def test_rgba_round_trip_drops_alpha(encoding, padding, big):
    rgba = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(message(rgba, encoding, padding, big)), rgba[:, :, :3])
    # An RGB array gets an opaque alpha.
    fields = rgb_to_image_fields(rgba[:, :, :3], encoding)
    assert np.frombuffer(fields["data"], np.uint8).reshape(H, W, 4)[:, :, 3].min() == 255


@pytest.mark.parametrize("padding,big", LAYOUTS)
def test_mono8_round_trip_replicates_gray(padding, big):
    gray = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(message(gray, "mono8", padding, big)), np.repeat(gray[:, :, None], 3, 2))


@pytest.mark.parametrize("padding,big", LAYOUTS)
def test_mono16_round_trip_scales_to_8_bits(padding, big):
    gray = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    out = image_to_rgb(message(gray, "mono16", padding, big))
    np.testing.assert_array_equal(out, np.repeat((gray >> 8).astype(np.uint8)[:, :, None], 3, 2))


@pytest.mark.parametrize("padding,big", LAYOUTS)
@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_integer_depth_round_trip(encoding, padding, big):
    millimetres = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    millimetres[0, 0] = 0
    depth = depth_to_meters(message(millimetres, encoding, padding, big))
    assert depth.dtype == np.float32 and depth.shape == (H, W)
    expected = millimetres.astype(np.float32) / 1000
    expected[0, 0] = np.nan
    np.testing.assert_allclose(depth, expected, rtol=1e-6, equal_nan=True)
    quarter = depth_to_meters(message(millimetres, encoding, padding, big), depth_scale=4000.0)
    np.testing.assert_allclose(quarter, expected / 4, rtol=1e-6)


@pytest.mark.parametrize("padding,big", LAYOUTS)
def test_float_depth_round_trip_invalid_is_nan(padding, big):
    metres = RNG.uniform(0.1, 10, (H, W)).astype(np.float32)
    metres[0, :4] = [0.0, -1.0, np.inf, np.nan]
    depth = depth_to_meters(message(metres, "32FC1", padding, big))
    expected = metres.copy()
    expected[0, :4] = np.nan
    np.testing.assert_array_equal(depth, expected)


def test_hand_made_messages():
    """Byte layouts written out by hand, independent of rgb_to_image_fields."""
    def msg(encoding, width, step, big, data):
        return SimpleNamespace(height=1, width=width, encoding=encoding, is_bigendian=big, step=step, data=data)

    bgr = msg("bgr8", 2, 8, 0, bytes([1, 2, 3, 4, 5, 6, 99, 99]))
    np.testing.assert_array_equal(image_to_rgb(bgr), [[[3, 2, 1], [6, 5, 4]]])
    big = msg("16UC1", 1, 2, 1, b"\x03\xe8")  # 1000
    little = msg("16UC1", 1, 2, 0, b"\xe8\x03")
    assert depth_to_meters(big)[0, 0] == depth_to_meters(little)[0, 0] == 1.0
    mono16 = msg("mono16", 1, 2, 1, b"\x12\x34")
    assert image_to_rgb(mono16).tolist() == [[[0x12] * 3]]
    f32 = msg("32FC1", 1, 4, 1, np.array([2.5], ">f4").tobytes())
    assert depth_to_meters(f32)[0, 0] == 2.5


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, lambda b: array.array("B", b), list, lambda b: np.frombuffer(b, np.uint8)],
    ids=["bytes", "bytearray", "array", "list", "numpy"],
)
def test_data_container_types(wrap):
    """rclpy gives array.array or bytes, rosbags numpy arrays; tests may use lists."""
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    msg = message(rgb, "rgb8", padding=2)
    msg.data = wrap(msg.data)
    out = image_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)
    out[:] = 0  # writable, and a copy
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_mask_to_mono8_fields():
    mask = np.zeros((H, W), bool)
    mask[1:3, 2:5] = True
    fields = mask_to_mono8_fields(mask)
    assert (fields["height"], fields["width"], fields["encoding"], fields["step"]) == (H, W, "mono8", W)
    np.testing.assert_array_equal(np.frombuffer(fields["data"], np.uint8).reshape(H, W), mask * 255)
    with pytest.raises(ImageError, match=r"\[H,W\] mask"):
        mask_to_mono8_fields(np.zeros((2, 2, 1), bool))


def _smooth_rgb(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=2).astype(np.uint8)


def test_png_round_trip_is_exact():
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    fmt, data = encode_compressed(rgb, "png")
    assert fmt == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_to_rgb(SimpleNamespace(format=fmt, data=data)), rgb)
    gray = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    fmt, data = encode_compressed(gray, "png")
    assert fmt == "mono8; png compressed "  # image_transport names no target for gray
    out = compressed_to_rgb(SimpleNamespace(format="png", data=data))
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, 2))


def test_jpeg_round_trip_is_close():
    rgb = _smooth_rgb()
    fmt, data = encode_compressed(rgb, "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8"
    # rosbags stores uint8[] as a numpy array.
    out = compressed_to_rgb(SimpleNamespace(format=fmt, data=np.frombuffer(data, np.uint8)))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3


def test_sixteen_bit_png_scales_to_8_bits():
    gray = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    out = compressed_to_rgb(SimpleNamespace(format="png", data=buffer.getvalue()))
    np.testing.assert_array_equal(out, np.repeat((gray >> 8).astype(np.uint8)[:, :, None], 3, 2))


def _depth(encoding, step, data):
    return SimpleNamespace(height=2, width=2, encoding=encoding, is_bigendian=0, step=step, data=data)


def _image(**changes):
    fields = rgb_to_image_fields(np.zeros((H, W, 3), np.uint8), "rgb8")
    fields.update(changes)
    return SimpleNamespace(**fields)


@pytest.mark.parametrize(
    "convert,msg,match",
    [
        (image_to_rgb, _image(encoding="nonsense"), "nonsense"),
        (image_to_rgb, _image(encoding="16UC1"), "unsupported image encoding '16UC1'"),
        (depth_to_meters, _image(), "unsupported image encoding 'rgb8'"),
        (image_to_rgb, _image(height=0, data=b""), "empty image"),
        (image_to_rgb, _image(width=0), "empty image"),
        (image_to_rgb, _image(step=W * 3 - 1), "step 20 is less than width 7 x 3 bytes per pixel"),
        (image_to_rgb, _image(data=bytes(H * W * 3 - 1)), "104 bytes, expected height 5 x step 21 = 105"),
        (depth_to_meters, _depth("32FC1", step=8, data=bytes(15)), "15 bytes"),
        (depth_to_meters, _depth("16UC1", step=3, data=bytes(6)), "step 3 is less"),
    ],
    ids=[
        "unknown", "depth-as-color", "color-as-depth", "zero-height", "zero-width",
        "short-step", "short-data", "short-float", "odd-step",
    ],
)
def test_bad_images_raise_image_error(convert, msg, match):
    with pytest.raises(ImageError, match=match):
        convert(msg)


def test_bad_depth_scale():
    with pytest.raises(ValueError, match="depth_scale must be positive"):
        depth_to_meters(message(np.ones((2, 2), np.uint16), "16UC1"), depth_scale=0)


@pytest.mark.parametrize(
    "fmt,data,match",
    [
        ("jpeg", b"not an image", "cannot decode compressed image"),
        ("png", b"", "cannot decode compressed image"),
        ("jpeg", encode_compressed(_smooth_rgb())[1][:200], "cannot decode compressed image"),
        ("16UC1; compressedDepth png", encode_compressed(_smooth_rgb(), "png")[1], "compressedDepth"),
    ],
    ids=["garbage", "empty", "truncated", "compressed-depth"],
)
def test_bad_compressed_images_raise_image_error(fmt, data, match):
    with pytest.raises(ImageError, match=match):
        compressed_to_rgb(SimpleNamespace(format=fmt, data=data))


@pytest.mark.parametrize(
    "array_,encoding,match",
    [
        (np.zeros((2, 2, 3), np.uint8), "yuv422", "unsupported image encoding"),
        (np.zeros((2, 2), np.uint8), "rgb8", "rgb8 needs 3 channel"),
        (np.zeros((2, 2, 3), np.float32), "rgb8", "needs integers"),
        (np.full((2, 2), 256), "mono8", r"in \[0, 255\]"),
        (np.full((2, 2), -1), "16UC1", r"in \[0, 65535\]"),
        (np.zeros((0, 2, 3), np.uint8), "rgb8", "non-empty"),
    ],
)
def test_bad_arrays_raise_image_error(array_, encoding, match):
    with pytest.raises(ImageError, match=match):
        rgb_to_image_fields(array_, encoding)


def test_bad_step_and_format_arguments():
    with pytest.raises(ImageError, match="step 5 is less than a row of 6 bytes"):
        rgb_to_image_fields(np.zeros((2, 2, 3), np.uint8), step=5)
    with pytest.raises(ValueError, match="'jpeg' or 'png'"):
        encode_compressed(np.zeros((2, 2, 3), np.uint8), "bmp")
    with pytest.raises(ImageError, match="uint8"):
        encode_compressed(np.zeros((2, 2, 3), np.uint16))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_matches_cv_bridge(encoding):
    """The numpy path agrees with ROS 2 cv_bridge (robots only; cv_bridge is not on PyPI)."""
    cv_bridge = pytest.importorskip("cv_bridge")
    channels = {"rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1}.get(encoding, 3)
    dtype = np.uint16 if encoding == "mono16" else np.uint8
    pixels = RNG.integers(0, np.iinfo(dtype).max + 1, (H, W, channels), dtype=dtype)
    # cv_bridge needs padding in whole pixels, and little-endian data under numpy 2.
    msg = message(pixels, encoding, padding=2 * channels * pixels.itemsize)
    expected = cv_bridge.CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    tolerance = 1 if encoding == "mono16" else 0  # OpenCV scales 16 -> 8 bits by /257, we by >> 8
    np.testing.assert_allclose(image_to_rgb(msg).astype(int), np.asarray(expected).astype(int), atol=tolerance)


def test_helpers_import_without_torch_or_ros():
    """Codecs, parameters and launch mapping stay ROS-free and torch-free (design rule)."""
    import subprocess
    import sys

    code = (
        "import sys, lisa_ros.runtime.codec, lisa_ros.runtime.parameters, lisa_ros.runtime.launch_config; "
        "print(sorted({'torch', 'rclpy', 'cv_bridge'} & set(sys.modules)))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "[]"
