"""Pipeline results <-> ROS messages: thin conversions, no logic.

SegmentationResult, the union mask and overlay images, the explanation, diagnostics;
and the other way, image messages -> lazily decoded pipeline Frames.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from lisa_model.visualize import overlay_masks

from . import codec
from .msg import BoundingBox2D, SegmentationResult
from .pipeline import NS_PER_S, Frame, Result

# SegmentationResult.STATUS_* and pipeline.Status share their values.
assert (SegmentationResult.STATUS_OK, SegmentationResult.STATUS_NO_TARGET, SegmentationResult.STATUS_ERROR) == (0, 1, 2)


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(nanoseconds: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time."""
    sec, nanosec = divmod(int(nanoseconds), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def frame_from_msg(msg, compressed: bool, fallback_stamp: int) -> Frame:
    """A pipeline Frame that decodes `msg` (sensor_msgs/Image or CompressedImage) when first used.

    The frame's stamp is the header's, or `fallback_stamp` (nanoseconds) when the
    header's is zero (publishers that leave it unset).
    """
    stamp = stamp_ns(msg.header.stamp) or int(fallback_stamp)
    decode = codec.compressed_to_rgb if compressed else codec.image_to_rgb
    return Frame(stamp=stamp, frame_id=msg.header.frame_id, decode=lambda: decode(msg))


def _header(result: Result) -> Header:
    return Header(stamp=ns_to_stamp(result.frame_stamp), frame_id=result.frame_id)


def _image(fields: dict, header: Header) -> Image:
    fields = dict(fields)
    fields["data"] = array.array("B", fields["data"])  # the message's fast path for uint8[]
    return Image(header=header, **fields)


def result_to_msg(result: Result) -> SegmentationResult:
    """The SegmentationResult message of a pipeline Result (masks as mono8 images)."""
    header = _header(result)
    msg = SegmentationResult(
        header=header,
        command_stamp=ns_to_stamp(result.stamp),
        command_id=int(result.command_id),
        command=result.command,
        answer=result.answer,
        status=int(result.status),
        error_message=result.error,
        region_status=result.region_status,
    )
    msg.masks = [_image(codec.mask_to_mono8_fields(mask), header) for mask in result.masks]
    msg.scores = array.array("f", np.asarray(result.scores, np.float32).tolist())
    msg.boxes = [
        BoundingBox2D(x_min=int(b[0]), y_min=int(b[1]), x_max=int(b[2]), y_max=int(b[3])) for b in result.boxes
    ]
    msg.timing_stages = list(result.timings)
    msg.timing_seconds = array.array("f", [float(value) for value in result.timings.values()])
    return msg


def union_mask_msg(result: Result) -> Image | None:
    """mono8 image of every mask together (255 inside any); None when no image was answered."""
    if result.image is None:
        return None
    union = result.masks.any(axis=0) if result.masks.shape[0] else np.zeros(result.image.shape[:2], bool)
    return _image(codec.mask_to_mono8_fields(union), _header(result))


def overlay_msg(result: Result) -> Image | None:
    """rgb8 image answered with the masks drawn on it; None when no image was answered."""
    if result.image is None:
        return None
    masks = result.masks if result.masks.shape[0] else np.zeros((0,) + result.image.shape[:2], bool)
    return _image(codec.rgb_to_image_fields(overlay_masks(result.image, masks), "rgb8"), _header(result))


def explanation_msg(result: Result) -> String:
    return String(data=result.answer)


def diagnostics_msg(
    name: str, hardware_id: str, stamp: Time, level: bytes, message: str, values: dict
) -> DiagnosticArray:
    """A DiagnosticArray with one status. level: DiagnosticStatus.OK, WARN, ERROR or STALE."""
    status = DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=str(key), value=str(value)) for key, value in values.items()],
    )
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
