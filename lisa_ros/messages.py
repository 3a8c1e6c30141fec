"""Pipeline results <-> ROS messages: thin conversions, no logic.

SegmentationResult, the union mask and overlay images, the explanation, diagnostics,
the target cloud (PointCloud2) and markers (MarkerArray); and the other way, image
messages -> lazily decoded pipeline Frames, poses and transforms -> 4x4 matrices.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header, String
from visualization_msgs.msg import Marker, MarkerArray

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
    )
    msg.masks = [_image(codec.mask_to_mono8_fields(mask), header) for mask in result.masks]
    msg.scores = array.array("f", np.asarray(result.scores, np.float32).tolist())
    msg.boxes = [
        BoundingBox2D(x_min=int(b[0]), y_min=int(b[1]), x_max=int(b[2]), y_max=int(b[3])) for b in result.boxes
    ]
    _fill_regions(msg, result)
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


# --- 3D regions -----------------------------------------------------------------------


def quaternion_from_matrix(rotation) -> np.ndarray:
    """x, y, z, w of a 3x3 rotation matrix (unit, w >= 0). An improper matrix (det < 0,
    a reflection) has its third axis flipped first: a box is symmetric, so it is the same box."""
    r = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    if np.linalg.det(r) < 0:
        r = r * np.array([1.0, 1.0, -1.0])
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        s = 2.0 * np.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 1e-12))
        q = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] >= r[2, 2]:
        s = 2.0 * np.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 1e-12))
        q = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 1e-12))
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[3] < 0 else q


def matrix_from_pose(translation, quaternion) -> np.ndarray:
    """4x4 transform from a translation (x, y, z) and a quaternion (x, y, z, w; normalised here)."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / (np.linalg.norm(quaternion) or 1.0)
    matrix = np.eye(4)
    matrix[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    matrix[:3, 3] = translation
    return matrix


def pose_msg_to_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4."""
    p, q = pose.position, pose.orientation
    return matrix_from_pose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def transform_msg_to_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4."""
    t, q = transform.translation, transform.rotation
    return matrix_from_pose((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def _point(values) -> Point:
    x, y, z = (float(v) for v in values)
    return Point(x=x, y=y, z=z)


def _box_pose(region) -> Pose:
    x, y, z, w = (float(v) for v in quaternion_from_matrix(region.obb_rotation))
    return Pose(position=_point(region.obb_center), orientation=Quaternion(x=x, y=y, z=z, w=w))


def _fill_regions(msg: SegmentationResult, result: Result) -> None:
    """The per-mask 3D fields: empty when no region was computed, else one entry per mask
    (a mask without a region: NaN centroid and box centre, zero size and point count)."""
    msg.region_status = result.region_status
    msg.region_frame = result.region_frame
    if not any(region is not None for region in result.regions):
        return
    nan = float("nan")
    missing = Pose(position=Point(x=nan, y=nan, z=nan))
    msg.centroids = [_point(r.centroid) if r is not None else Point(x=nan, y=nan, z=nan) for r in result.regions]
    msg.box_poses = [_box_pose(r) if r is not None else missing for r in result.regions]
    msg.box_sizes = [
        Vector3(**dict(zip("xyz", (float(v) for v in r.obb_size)))) if r is not None else Vector3()
        for r in result.regions
    ]
    msg.point_counts = array.array("I", [int(r.point_count) if r is not None else 0 for r in result.regions])


def region_header(result: Result) -> Header:
    """Header of the 3D outputs: the image's stamp, the regions' frame (the image's frame when none)."""
    return Header(stamp=ns_to_stamp(result.frame_stamp), frame_id=result.region_frame or result.frame_id)


def point_cloud_msg(points, header: Header) -> PointCloud2:
    """sensor_msgs/PointCloud2 of xyz float32 points [N,3] (unorganised, little endian)."""
    points = np.ascontiguousarray(np.asarray(points, dtype="<f4").reshape(-1, 3))
    fields = [
        PointField(name=name, offset=4 * index, datatype=PointField.FLOAT32, count=1)
        for index, name in enumerate("xyz")
    ]
    msg = PointCloud2(
        header=header,
        height=1,
        width=len(points),
        fields=fields,
        is_bigendian=False,
        point_step=12,
        row_step=12 * len(points),
        is_dense=bool(np.isfinite(points).all()),
    )
    msg.data = array.array("B", points.tobytes())
    return msg


def target_cloud_msg(result: Result) -> PointCloud2:
    """Every region's points together (an empty cloud when there is none, clearing RViz)."""
    clouds = [np.asarray(r.points, np.float32).reshape(-1, 3) for r in result.regions if r is not None]
    points = np.concatenate(clouds) if clouds else np.zeros((0, 3), np.float32)
    return point_cloud_msg(points, region_header(result))


def _color(r, g, b, a) -> ColorRGBA:
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


def markers_msg(result: Result, namespace: str = "lisa") -> MarkerArray:
    """DELETEALL (old markers vanish), then per region: a CUBE (oriented box), a SPHERE
    at the centroid and a TEXT_VIEW_FACING label with the command."""
    header = region_header(result)
    markers = [Marker(header=header, ns=namespace, action=Marker.DELETEALL)]
    regions = [(i, r) for i, r in enumerate(result.regions) if r is not None]
    for index, region in regions:
        label = result.command if len(regions) == 1 else f"{index}: {result.command}"
        box = Marker(header=header, ns=namespace, id=3 * index, type=Marker.CUBE, action=Marker.ADD)
        box.pose = _box_pose(region)
        sx, sy, sz = (max(float(v), 0.005) for v in region.obb_size)
        box.scale = Vector3(x=sx, y=sy, z=sz)
        box.color = _color(0.1, 0.9, 0.2, 0.4)
        centroid = Marker(header=header, ns=namespace, id=3 * index + 1, type=Marker.SPHERE, action=Marker.ADD)
        centroid.pose = Pose(position=_point(region.centroid))
        centroid.pose.orientation.w = 1.0
        centroid.scale = Vector3(x=0.03, y=0.03, z=0.03)
        centroid.color = _color(1.0, 0.2, 0.1, 0.9)
        text = Marker(header=header, ns=namespace, id=3 * index + 2, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.pose = Pose(position=_point(region.obb_center))
        text.pose.orientation.w = 1.0
        text.scale.z = 0.05
        text.color = _color(1.0, 1.0, 1.0, 1.0)
        text.text = label
        markers += [box, centroid, text]
    return MarkerArray(markers=markers)


def camera_info_intrinsics(msg):
    """lisa_ros.geometry.CameraIntrinsics of a sensor_msgs/CameraInfo (K and size)."""
    from .geometry import CameraIntrinsics

    return CameraIntrinsics.from_k([float(v) for v in msg.k], int(msg.width), int(msg.height))
