"""sensor_msgs Image / CompressedImage <-> numpy, without ROS.

Messages are duck-typed: anything with the fields of sensor_msgs/Image (height,
width, encoding, is_bigendian, step, data) or sensor_msgs/CompressedImage
(format, data) works, so rclpy messages and rosbags' message classes both do.
`data` may be bytes, bytearray, array.array, a list of ints or a numpy array.
"""

import io
from types import SimpleNamespace

import numpy as np
from PIL import Image

from lisa_ros import geometry

# encoding -> (channels, dtype of one channel as ROS stores it little-endian)
_RAW = {
    "rgb8": (3, np.dtype("u1")),
    "bgr8": (3, np.dtype("u1")),
    "rgba8": (4, np.dtype("u1")),
    "bgra8": (4, np.dtype("u1")),
    "mono8": (1, np.dtype("u1")),
    "mono16": (1, np.dtype("<u2")),
    "16UC1": (1, np.dtype("<u2")),
    "32FC1": (1, np.dtype("<f4")),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class ImageError(ValueError):
    """An image message that cannot be converted (bad encoding, size or data)."""


def _as_bytes(data) -> np.ndarray:
    """The message's data as a flat uint8 array (a view where possible)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints, or a non-contiguous array
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _unpack(msg, supported: tuple[str, ...]) -> tuple[str, np.ndarray]:
    """Validate an Image message and return (encoding, HxWxC array in native byte order)."""
    encoding = msg.encoding
    if encoding not in supported:
        raise ImageError(f"unsupported image encoding {encoding!r}; supported: {', '.join(supported)}")
    channels, dtype = _RAW[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image: {width}x{height} ({encoding})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        pixel_bytes = channels * dtype.itemsize
        raise ImageError(f"step {step} is less than width {width} x {pixel_bytes} bytes per pixel ({encoding})")
    raw = _as_bytes(msg.data)
    if raw.size < height * step:
        raise ImageError(f"image data has {raw.size} bytes, expected height {height} x step {step} = {height * step}")
    rows = raw[: height * step].reshape(height, step)[:, :row_bytes]
    if msg.is_bigendian:
        dtype = dtype.newbyteorder(">")
    # The copy detaches the result from the message buffer and makes it writable.
    pixels = np.array(rows).view(dtype)
    if not pixels.dtype.isnative:
        pixels = pixels.astype(dtype.newbyteorder("="))
    return encoding, pixels.reshape(height, width, channels)


def _cv_bridge_convert(msg, desired_encoding: str):
    """cv_bridge's conversion of an encoding the numpy path lacks (bayer, yuv, ...), or None without cv_bridge."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    try:
        return np.asarray(CvBridge().imgmsg_to_cv2(msg, desired_encoding=desired_encoding))
    except Exception as error:  # CvBridgeError and whatever numpy/OpenCV raise inside it
        raise ImageError(f"cv_bridge cannot convert {msg.encoding!r} image: {error}") from error


def image_to_rgb(msg) -> np.ndarray:
    """Convert a sensor_msgs/Image to RGB.

    Arguments:
      msg: an Image with encoding rgb8, bgr8, rgba8, bgra8, mono8 (gray replicated to
        three channels) or mono16 (scaled to 8 bits by >> 8); other encodings go
        through cv_bridge when it is installed.

    Returns:
      (np.ndarray uint8 [H,W,3]): the image, RGB order, a new array.

    Raises ImageError for unsupported encodings, zero height or width, a step shorter
    than a row, or data shorter than height x step.
    """
    if msg.encoding not in _RAW:
        converted = _cv_bridge_convert(msg, "rgb8")
        if converted is not None:
            return np.ascontiguousarray(converted, dtype=np.uint8)
    encoding, pixels = _unpack(msg, COLOR_ENCODINGS)
    if encoding == "rgb8":
        return pixels
    if encoding == "mono16":
        pixels = (pixels >> 8).astype(np.uint8)
    order = (0, 0, 0) if pixels.shape[2] == 1 else (2, 1, 0) if encoding.startswith("bgr") else (0, 1, 2)
    rgb = np.empty(pixels.shape[:2] + (3,), np.uint8)
    # Channel by channel: several times faster than copying a strided view (reversed, sliced or repeated).
    for index, channel in enumerate(order):
        rgb[:, :, index] = pixels[:, :, channel]
    return rgb


def depth_to_meters(msg, depth_scale: float = 1000.0) -> np.ndarray:
    """Convert a depth sensor_msgs/Image to metres (lisa_ros.geometry.depth_to_meters on its pixels).

    Arguments:
      msg: an Image with encoding 16UC1 or mono16 (integer depth units, millimetres
        by default) or 32FC1 (metres).
      depth_scale (float): integer depth units per metre (1000 for millimetres).

    Returns:
      (np.ndarray float32 [H,W]): depth in metres; NaN where the sensor has no
        reading (0, negative, NaN or infinite).

    Raises ImageError as image_to_rgb does, and ValueError for depth_scale <= 0.
    """
    if not depth_scale > 0:
        raise ValueError(f"depth_scale must be positive, got {depth_scale}")
    return geometry.depth_to_meters(depth_pixels(msg)[1], depth_scale)


def depth_pixels(msg) -> tuple[str, np.ndarray]:
    """(encoding, [H,W] raw values) of a depth sensor_msgs/Image (16UC1, mono16: integers; 32FC1: floats).

    Raises ImageError as image_to_rgb does.
    """
    encoding, pixels = _unpack(msg, DEPTH_ENCODINGS)
    return encoding, pixels[:, :, 0]


def compressed_to_rgb(msg) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG) to RGB.

    Arguments:
      msg: a CompressedImage; format as image_transport writes it ("jpeg", "png",
        "rgb8; jpeg compressed bgr8", ...). The data itself decides the decoder.

    Returns:
      (np.ndarray uint8 [H,W,3]): the image, RGB order (16-bit PNGs scaled by >> 8).

    Raises ImageError for compressedDepth images and data that is not a JPEG or PNG.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ImageError(f"compressedDepth images are not supported (format {fmt!r})")
    try:
        with Image.open(io.BytesIO(_as_bytes(msg.data).tobytes()), formats=("JPEG", "PNG")) as image:
            image.load()
            if image.mode.startswith("I"):  # 16-bit gray PNG; convert("RGB") would clip, not scale
                gray = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            return np.asarray(image.convert("RGB")).copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"cannot decode compressed image (format {fmt!r}): {error}") from error


def rgb_to_image_fields(
    array: np.ndarray, encoding: str = "rgb8", *, is_bigendian: bool = False, step: int | None = None
) -> dict:
    """The fields of a sensor_msgs/Image holding `array`.

    Arguments:
      array (np.ndarray): [H,W,3] RGB or [H,W,4] RGBA for rgb8/bgr8/rgba8/bgra8
        (channels are reordered for bgr; RGB gets an opaque alpha for rgba/bgra);
        [H,W] or [H,W,1] for mono8, mono16/16UC1 (integers) and 32FC1 (metres).
        Values must fit the encoding's type (uint8, uint16, float32).
      encoding (str): one of rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1, 32FC1.
      is_bigendian (bool): byte order of 16/32-bit data.
      step (int | None): bytes per row, at least W x bytes per pixel; rows are padded
        with zeros up to it. None: no padding.

    Returns:
      dict(height, width, encoding, is_bigendian, step, data: bytes).
    """
    if encoding not in _RAW:
        raise ImageError(f"unsupported image encoding {encoding!r}; supported: {', '.join(_RAW)}")
    channels, dtype = _RAW[encoding]
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"expected a non-empty [H,W] or [H,W,C] array, got shape {array.shape}")
    if channels == 4 and array.shape[2] == 3:
        array = np.concatenate([array, np.full(array.shape[:2] + (1,), np.iinfo(np.uint8).max, array.dtype)], axis=2)
    if array.shape[2] != channels:
        raise ImageError(f"{encoding} needs {channels} channel(s), got an array of shape {array.shape}")
    if encoding.startswith("bgr"):
        array = np.concatenate([array[:, :, 2::-1], array[:, :, 3:]], axis=2)
    values = _cast(array, dtype, encoding)
    height, width = values.shape[:2]
    row_bytes = width * channels * dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ImageError(f"step {step} is less than a row of {row_bytes} bytes")
    rows = np.zeros((height, step), np.uint8)
    order = ">" if is_bigendian else "<"
    rows[:, :row_bytes] = values.astype(dtype.newbyteorder(order)).reshape(height, -1).view(np.uint8)
    return dict(
        height=height, width=width, encoding=encoding, is_bigendian=bool(is_bigendian), step=step, data=rows.tobytes()
    )


def _cast(array: np.ndarray, dtype: np.dtype, encoding: str) -> np.ndarray:
    """`array` as `dtype`, refusing values the encoding cannot hold."""
    if dtype.kind == "f":
        if array.dtype.kind not in "biuf":
            raise ImageError(f"{encoding} needs numbers, got dtype {array.dtype}")
        return array.astype(np.float32)
    if array.dtype.kind not in "biu":
        raise ImageError(f"{encoding} needs integers, got dtype {array.dtype}")
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ImageError(f"{encoding} values must be in [{info.min}, {info.max}], got [{array.min()}, {array.max()}]")
    return array.astype(dtype.newbyteorder("="))


def mask_to_mono8_fields(mask: np.ndarray) -> dict:
    """The fields of a mono8 sensor_msgs/Image of a mask: 255 inside, 0 outside.

    Arguments:
      mask (np.ndarray [H,W]): bool (or anything, nonzero = inside).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ImageError(f"expected a [H,W] mask, got shape {mask.shape}")
    return rgb_to_image_fields(np.where(mask.astype(bool), np.uint8(255), np.uint8(0)), "mono8")


def encode_compressed(array: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """Compress an image as a sensor_msgs/CompressedImage would hold it.

    Arguments:
      array (np.ndarray uint8): [H,W,3] RGB or [H,W] gray.
      fmt (str): "jpeg" or "png".
      quality (int): JPEG quality, 1..95.

    Returns:
      (format, data): image_transport's format string ("rgb8; jpeg compressed bgr8",
        "mono8; png compressed ", ...) and the compressed bytes.
    """
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    array = np.asarray(array)
    gray_or_rgb = array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    if array.dtype != np.uint8 or not gray_or_rgb or 0 in array.shape:
        raise ImageError(f"expected a non-empty uint8 [H,W,3] or [H,W] array, got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "jpeg" else {}
    Image.fromarray(array).save(buffer, format=fmt.upper(), **options)
    # As image_transport's compressed plugin writes it: the colour target only for colour images.
    described = f"mono8; {fmt} compressed " if array.ndim == 2 else f"rgb8; {fmt} compressed bgr8"
    return described, buffer.getvalue()


# The outputs that also go out compressed (publish_compressed), and how: png keeps a mask exact.
COMPRESSED_OUTPUTS = {"mask": "png", "overlay": "jpeg"}


def compressed_image_fields(msg, fmt: str, quality: int = 90) -> dict:
    """The fields of a sensor_msgs/CompressedImage holding an rgb8 or mono8 image.

    Arguments:
      msg: a sensor_msgs/Image (rgb8 or mono8), or its fields as a dict (as
        lisa_ros.runtime.message_fields gives them).
      fmt (str): "jpeg" or "png".
      quality (int): JPEG quality, 1..95.

    Returns:
      dict(header: msg's, format: image_transport's format string, data: bytes).
    """
    image = SimpleNamespace(**msg) if isinstance(msg, dict) else msg
    encoding, pixels = _unpack(image, ("rgb8", "mono8"))
    described, data = encode_compressed(pixels[:, :, 0] if encoding == "mono8" else pixels, fmt, quality)
    return {"header": image.header, "format": described, "data": data}


def compressed_outputs(outputs) -> list[tuple[str, dict]]:
    """The compressed twins of the mask and overlay among `outputs` ((output name, Image message
    or fields) pairs): (`mask/compressed`, png fields), (`overlay/compressed`, jpeg fields),
    image_transport's topic names, in the order of `outputs`."""
    return [
        (f"{name}/compressed", compressed_image_fields(image, COMPRESSED_OUTPUTS[name]))
        for name, image in outputs
        if name in COMPRESSED_OUTPUTS
    ]
