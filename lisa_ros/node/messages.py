"""Pipeline results <-> ROS messages: thin conversions, no logic.

The content of every output message (SegmentationResult, the union mask and overlay
images, the explanation, the target cloud, the markers) and which a result gets come
from the ROS-free `lisa_ros.runtime.message_fields` (the bag evaluator writes the same content
with rosbags); this module only builds rclpy messages from those fields, and diagnostics.
Input messages go the other way through lisa_ros.runtime.inputs.
"""

from __future__ import annotations

import array
import importlib

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from ..msg import SegmentationResult, Target, TargetArray
from ..runtime import codec, detection_fields
from ..runtime import message_fields as fields
from ..runtime.tracking import TargetStatus, TrackingUpdate
from ..runtime.types import Result

# SegmentationResult.STATUS_* and pipeline.Status share their values, as Target.STATUS_* and TargetStatus.
assert (SegmentationResult.STATUS_OK, SegmentationResult.STATUS_NO_TARGET, SegmentationResult.STATUS_ERROR) == (0, 1, 2)
assert [Target.STATUS_TRACKING, Target.STATUS_LOST, Target.STATUS_REACQUIRED, Target.STATUS_DROPPED] == [
    int(status) for status in TargetStatus
]

MESSAGE_CLASSES = {
    "result": SegmentationResult,
    "explanation": String,
    "mask": Image,
    "overlay": Image,
    "target_cloud": PointCloud2,
    "markers": MarkerArray,
    "targets": TargetArray,
}


def _element_class(cls, name: str):
    """The message class of the elements of `cls`'s sequence field `name` ("sequence<pkg/Type>")."""
    kind = cls.get_fields_and_field_types()[name]
    element = kind[kind.index("<") + 1 : kind.rindex(">")].split(",")[0]
    package, type_name = element.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), type_name)


def build(cls, values: dict):
    """An rclpy message of class `cls` from lisa_ros.runtime.message_fields' nested dicts."""
    msg = cls()
    for name, value in values.items():
        if isinstance(value, dict):
            value = build(type(getattr(msg, name)), value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            element = _element_class(cls, name)
            value = [build(element, item) for item in value]
        elif isinstance(value, (bytes, bytearray)):
            value = array.array("B", value)  # the message's fast path for uint8[]
        setattr(msg, name, value)
    return msg


def result_to_msg(result: Result) -> SegmentationResult:
    """The SegmentationResult message of a pipeline Result (masks as mono8 images)."""
    return build(SegmentationResult, fields.result_fields(result))


def union_mask_msg(result: Result) -> Image | None:
    """mono8 image of every mask together (255 inside any); None when no image was answered."""
    values = fields.union_mask_fields(result)
    return None if values is None else build(Image, values)


def overlay_msg(result: Result) -> Image | None:
    """rgb8 image answered with the masks drawn on it; None when no image was answered."""
    values = fields.overlay_fields(result)
    return None if values is None else build(Image, values)


def explanation_msg(result: Result) -> String:
    return build(String, fields.explanation_fields(result))


def result_messages(result: Result, publish_overlay: bool = True) -> list[tuple[str, object]]:
    """Every message the node publishes for a result: (output name, message), in order."""
    return [
        (name, build(MESSAGE_CLASSES[name], values))
        for name, values in fields.result_outputs(result, publish_overlay)
    ]


def tracking_messages(update: TrackingUpdate, publish_overlay: bool = True) -> list[tuple[str, object]]:
    """Every message the node publishes for a tracked image: (output name, message), in order."""
    return [
        (name, build(MESSAGE_CLASSES[name], values))
        for name, values in fields.tracking_outputs(update, publish_overlay)
    ]


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


# --- 3D regions -----------------------------------------------------------------------


def region_header(result: Result) -> Header:
    """Header of the 3D outputs: the image's stamp, the regions' frame (the image's frame when none)."""
    return build(Header, fields.region_header(result))


def point_cloud_msg(points, header: Header) -> PointCloud2:
    """sensor_msgs/PointCloud2 of xyz float32 points [N,3] (unorganised, little endian)."""
    values = fields.point_cloud_fields(points, {})
    values.pop("header")
    msg = build(PointCloud2, values)
    msg.header = header
    return msg


def target_cloud_msg(result: Result) -> PointCloud2:
    """Every region's points together (an empty cloud when there is none, clearing RViz)."""
    return build(PointCloud2, fields.target_cloud_fields(result))


def markers_msg(result: Result, namespace: str = "lisa") -> MarkerArray:
    """DELETEALL (old markers vanish), then per region: a CUBE (oriented box), a SPHERE
    at the centroid and a TEXT_VIEW_FACING label with the command."""
    return build(MarkerArray, fields.markers_fields(result, namespace))


# --- vision_msgs (optional) -------------------------------------------------------------

VISION_MSGS_MISSING = (
    "vision_msgs is not installed: no detections/detections_3d outputs "
    "(on a robot: apt install ros-$ROS_DISTRO-vision-msgs)"
)


def vision_msgs_classes() -> dict | None:
    """{output name: vision_msgs message class} for the detection outputs, or None when
    vision_msgs is not installed (the node then logs VISION_MSGS_MISSING once and has no such outputs)."""
    try:
        vision = importlib.import_module("vision_msgs.msg")
    except ImportError:
        return None
    return {"detections": vision.Detection2DArray, "detections_3d": vision.Detection3DArray}


def detection_messages(result: Result, classes: dict) -> list[tuple[str, object]]:
    """The vision_msgs messages of a result: (output name, message); `classes` from vision_msgs_classes()."""
    return [(name, build(classes[name], values)) for name, values in detection_fields.result_detection_outputs(result)]


def tracking_detection_messages(update: TrackingUpdate, classes: dict) -> list[tuple[str, object]]:
    """The vision_msgs messages of a tracked image: (output name, message)."""
    return [
        (name, build(classes[name], values)) for name, values in detection_fields.tracking_detection_outputs(update)
    ]


# --- compressed images (optional: publish_compressed) -----------------------------------


def compressed_messages(messages: list[tuple[str, object]]) -> list[tuple[str, CompressedImage]]:
    """`mask/compressed` (png) and `overlay/compressed` (jpeg) of the mask and overlay among
    `messages` (result_messages' or tracking_messages' pairs), image_transport's topic names."""
    return [(name, build(CompressedImage, values)) for name, values in codec.compressed_outputs(messages)]
