"""What the node publishes for a result, as plain field values: ROS-free.

The one place that decides the content of every output message (SegmentationResult,
the union mask and overlay images, the explanation, the target cloud, the markers) and
which of them a result gets. Each function returns the message as nested dicts keyed by
the message's field names (nested messages are dicts, sequences of messages lists of
dicts, numeric sequences lists, uint8[] data bytes); fields left out keep the message's
default. Two thin builders turn them into messages: `lisa_ros.node.messages` (rclpy, the live
node) and `lisa_ros.bag.typestore.build` (rosbags, the output bag), so both carry the same content.

Also the ROS-free conversions the other way (duck-typed: rclpy and rosbags messages
alike): stamps, poses and transforms -> 4x4 matrices, CameraInfo -> intrinsics, image
messages -> lazily decoded pipeline Frames.
"""

from __future__ import annotations

import numpy as np

from . import codec
from .tracking import TrackedTarget, TrackingUpdate
from .types import NS_PER_S, Frame, Result, Status

# visualization_msgs/Marker and sensor_msgs/PointField constants used here.
MARKER_ADD, MARKER_DELETEALL = 0, 3
MARKER_CUBE, MARKER_SPHERE, MARKER_TEXT_VIEW_FACING = 1, 2, 9
POINT_FIELD_FLOAT32 = 7

# The outputs of a result, by name (the node's relative topic; /lisa/<name> in output bags) and message type.
OUTPUT_TYPES = {
    "result": "lisa_ros/msg/SegmentationResult",
    "explanation": "std_msgs/msg/String",
    "mask": "sensor_msgs/msg/Image",
    "overlay": "sensor_msgs/msg/Image",
    "target_cloud": "sensor_msgs/msg/PointCloud2",
    "markers": "visualization_msgs/msg/MarkerArray",
    "targets": "lisa_ros/msg/TargetArray",
}


# --- stamps, poses, frames (messages in) ----------------------------------------------


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def time_fields(nanoseconds: int) -> dict:
    """Integer nanoseconds -> builtin_interfaces/Time fields."""
    sec, nanosec = divmod(int(nanoseconds), NS_PER_S)
    return {"sec": sec, "nanosec": nanosec}


def header_fields(nanoseconds: int, frame_id: str) -> dict:
    return {"stamp": time_fields(nanoseconds), "frame_id": frame_id}


def frame_from_msg(msg, compressed: bool, fallback_stamp: int) -> Frame:
    """A pipeline Frame that decodes `msg` (sensor_msgs/Image or CompressedImage) when first used.

    The frame's stamp is the header's, or `fallback_stamp` (nanoseconds) when the
    header's is zero (publishers that leave it unset).
    """
    stamp = stamp_ns(msg.header.stamp) or int(fallback_stamp)
    decode = codec.compressed_to_rgb if compressed else codec.image_to_rgb
    return Frame(stamp=stamp, frame_id=msg.header.frame_id, decode=lambda: decode(msg))


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


def camera_info_intrinsics(msg):
    """lisa_ros.geometry.CameraIntrinsics of a sensor_msgs/CameraInfo (K and size)."""
    from lisa_ros.geometry import CameraIntrinsics

    return CameraIntrinsics.from_k([float(v) for v in msg.k], int(msg.width), int(msg.height))


# --- results (messages out) --------------------------------------------------------------


def _header(result: Result) -> dict:
    return header_fields(result.frame_stamp, result.frame_id)


def _image(fields: dict, header: dict) -> dict:
    return {"header": header, **fields}


def point_fields(values) -> dict:
    x, y, z = (float(v) for v in values)
    return {"x": x, "y": y, "z": z}


def pose_fields(position, quaternion=(0.0, 0.0, 0.0, 1.0)) -> dict:
    x, y, z, w = (float(v) for v in quaternion)
    return {"position": point_fields(position), "orientation": {"x": x, "y": y, "z": z, "w": w}}


def box_pose_fields(region) -> dict:
    """geometry_msgs/Pose of a region's oriented box (the markers, SegmentationResult.box_poses, detections)."""
    return pose_fields(region.obb_center, quaternion_from_matrix(region.obb_rotation))


def result_fields(result: Result) -> dict:
    """lisa_ros/SegmentationResult of a pipeline Result (masks as mono8 images).

    The per-mask 3D fields are empty when no region was computed, else one entry per
    mask (a mask without a region: NaN centroid and box centre, zero size and point count).
    """
    header = _header(result)
    fields = {
        "header": header,
        "command_stamp": time_fields(result.stamp),
        "command_id": int(result.command_id),
        "session_id": result.session_id,
        "command": result.command,
        "answer": result.answer,
        "status": int(result.status),
        "error_message": result.error,
        "truncated": bool(result.truncated),
        "conversation_reset": bool(result.conversation_reset),
        "notice": result.notice,
        "early": bool(result.early),
        "masks": [_image(codec.mask_to_mono8_fields(mask), header) for mask in result.masks],
        "scores": [float(v) for v in np.asarray(result.scores, np.float32)],
        "boxes": [dict(zip(("x_min", "y_min", "x_max", "y_max"), (int(v) for v in b))) for b in result.boxes],
        "region_status": result.region_status,
        "region_frame": result.region_frame,
        "depth_stamp": time_fields(result.depth_stamp),
        "timing_stages": list(result.timings),
        "timing_seconds": [float(value) for value in result.timings.values()],
    }
    if any(region is not None for region in result.regions):
        nan = float("nan")
        regions = result.regions
        fields["centroids"] = [point_fields(r.centroid) if r is not None else point_fields((nan,) * 3) for r in regions]
        fields["box_poses"] = [box_pose_fields(r) if r is not None else pose_fields((nan,) * 3) for r in regions]
        fields["box_sizes"] = [point_fields(r.obb_size) if r is not None else point_fields((0.0,) * 3) for r in regions]
        fields["point_counts"] = [int(r.point_count) if r is not None else 0 for r in regions]
    return fields


def union_mask_fields(result: Result) -> dict | None:
    """mono8 image of every mask together (255 inside any); None when no image was answered."""
    if result.image is None:
        return None
    union = result.masks.any(axis=0) if result.masks.shape[0] else np.zeros(result.image.shape[:2], bool)
    return _image(codec.mask_to_mono8_fields(union), _header(result))


def overlay_image(result: Result) -> np.ndarray | None:
    """The image answered with the masks drawn on it (uint8 RGB); None when no image was answered."""
    if result.image is None:
        return None
    masks = result.masks if result.masks.shape[0] else np.zeros((0,) + result.image.shape[:2], bool)
    from lisa_model.visualize import overlay_masks  # lazily: lisa_model loads torch

    return overlay_masks(result.image, masks)


def overlay_fields(result: Result) -> dict | None:
    """rgb8 image answered with the masks drawn on it; None when no image was answered."""
    image = overlay_image(result)
    if image is None:
        return None
    return _image(codec.rgb_to_image_fields(image, "rgb8"), _header(result))


def explanation_fields(result: Result) -> dict:
    return {"data": result.answer}


def region_header(result: Result) -> dict:
    """Header of the 3D outputs: the image's stamp, the regions' frame (the image's frame when none)."""
    return header_fields(result.frame_stamp, result.region_frame or result.frame_id)


def point_cloud_fields(points, header: dict) -> dict:
    """sensor_msgs/PointCloud2 of xyz float32 points [N,3] (unorganised, little endian)."""
    points = np.ascontiguousarray(np.asarray(points, dtype="<f4").reshape(-1, 3))
    return {
        "header": header,
        "height": 1,
        "width": len(points),
        "fields": [
            {"name": name, "offset": 4 * index, "datatype": POINT_FIELD_FLOAT32, "count": 1}
            for index, name in enumerate("xyz")
        ],
        "is_bigendian": False,
        "point_step": 12,
        "row_step": 12 * len(points),
        "data": points.tobytes(),
        "is_dense": bool(np.isfinite(points).all()),
    }


def target_cloud_fields(result: Result) -> dict:
    """Every region's points together (an empty cloud when there is none, clearing RViz)."""
    clouds = [np.asarray(r.points, np.float32).reshape(-1, 3) for r in result.regions if r is not None]
    points = np.concatenate(clouds) if clouds else np.zeros((0, 3), np.float32)
    return point_cloud_fields(points, region_header(result))


def _color(r, g, b, a) -> dict:
    return {"r": float(r), "g": float(g), "b": float(b), "a": float(a)}


def markers_fields(result: Result, namespace: str = "lisa") -> dict:
    """MarkerArray: DELETEALL (old markers vanish), then per region a CUBE (oriented box),
    a SPHERE at the centroid and a TEXT_VIEW_FACING label with the command."""
    header = region_header(result)
    markers = [{"header": header, "ns": namespace, "action": MARKER_DELETEALL}]
    regions = [(i, r) for i, r in enumerate(result.regions) if r is not None]
    for index, region in regions:
        label = result.command if len(regions) == 1 else f"{index}: {result.command}"
        common = {"header": header, "ns": namespace, "action": MARKER_ADD}
        sx, sy, sz = (max(float(v), 0.005) for v in region.obb_size)
        markers.append(
            {
                **common,
                "id": 3 * index,
                "type": MARKER_CUBE,
                "pose": box_pose_fields(region),
                "scale": {"x": sx, "y": sy, "z": sz},
                "color": _color(0.1, 0.9, 0.2, 0.4),
            }
        )
        markers.append(
            {
                **common,
                "id": 3 * index + 1,
                "type": MARKER_SPHERE,
                "pose": pose_fields(region.centroid),
                "scale": {"x": 0.03, "y": 0.03, "z": 0.03},
                "color": _color(1.0, 0.2, 0.1, 0.9),
            }
        )
        markers.append(
            {
                **common,
                "id": 3 * index + 2,
                "type": MARKER_TEXT_VIEW_FACING,
                "pose": pose_fields(region.obb_center),
                "scale": {"x": 0.0, "y": 0.0, "z": 0.05},
                "color": _color(1.0, 1.0, 1.0, 1.0),
                "text": label,
            }
        )
    return {"markers": markers}


def _region_fields(region) -> dict:
    """Target's 3D fields of a TargetRegion (NaN centroid and box position, zeros, when None)."""
    if region is None:
        nan = (float("nan"),) * 3
        return {"centroid": point_fields(nan), "box_pose": pose_fields(nan), "box_size": point_fields((0.0,) * 3),
                "point_count": 0}  # fmt: skip
    return {
        "centroid": point_fields(region.centroid),
        "box_pose": box_pose_fields(region),
        "box_size": point_fields(region.obb_size),
        "point_count": int(region.point_count),
    }


def targets_fields(stamp: int, frame_id: str, targets: list[TrackedTarget]) -> dict:
    """lisa_ros/TargetArray of live targets (lisa_ros.runtime.tracking.TrackedTarget) on one image."""
    return {
        "header": header_fields(stamp, frame_id),
        "targets": [
            {
                "id": int(target.target_id),
                "command_id": int(target.command_id),
                "command": target.command,
                "answer": target.answer,
                "status": int(target.status),
                "status_message": target.status_message,
                "score": float(target.score),
                "box": dict(zip(("x_min", "y_min", "x_max", "y_max"), (int(v) for v in target.box))),
                **_region_fields(target.region),
                "region_frame": target.region_frame,
                "views_fused": int(target.views_fused),
                "age_seconds": float(target.age),
                "reasks": int(target.reasks),
            }
            for target in targets
        ],
    }


def tracked_frame_result(update: TrackingUpdate) -> Result:
    """A tracked image as a Result (the found targets' masks and fused regions), for the
    outputs a result has too: mask, overlay, target_cloud and markers."""
    found = [target for target in update.targets if target.mask is not None]
    shape = update.image.shape[:2] if update.image is not None else (0, 0)
    masks = np.stack([target.mask for target in found]) if found else np.zeros((0, *shape), bool)
    regions = [target.region for target in found]
    frames = {target.region_frame for target in found if target.region is not None}
    return Result(
        command_id=0,
        command="; ".join(target.command for target in found),
        stamp=update.stamp,
        frame_stamp=update.stamp,
        frame_id=update.frame_id,
        status=Status.OK if found else Status.NO_TARGET,
        masks=masks,
        image=update.image,
        regions=regions if any(region is not None for region in regions) else [],
        region_frame=frames.pop() if len(frames) == 1 else "",
    )


def tracking_outputs(update: TrackingUpdate, publish_overlay: bool = True) -> list[tuple[str, dict]]:
    """Every message the node publishes for a tracked image, in publishing order: the
    targets, then (for an image) its mask, overlay and 3D outputs as for a result."""
    outputs = [("targets", targets_fields(update.stamp, update.frame_id, update.targets))]
    if update.image is None:
        return outputs
    result = tracked_frame_result(update)
    outputs.append(("mask", union_mask_fields(result)))
    if publish_overlay:
        outputs.append(("overlay", overlay_fields(result)))
    outputs.append(("target_cloud", target_cloud_fields(result)))
    outputs.append(("markers", markers_fields(result)))
    if result.targets:
        outputs.append(("targets", targets_fields(result.frame_stamp, result.frame_id, result.targets)))
    return outputs


def result_outputs(result: Result, publish_overlay: bool = True) -> list[tuple[str, dict]]:
    """Every message the node publishes for a result, in publishing order: (output name, fields).

    Every command gets a result; an answered one (not ERROR) also its explanation, mask,
    overlay (with publish_overlay) and its 3D outputs (an empty cloud and no markers when
    it has no region: every answer replaces them).
    """
    outputs = [("result", result_fields(result))]
    if result.status == Status.ERROR:
        return outputs
    outputs.append(("explanation", explanation_fields(result)))
    mask = union_mask_fields(result)
    if mask is not None:
        outputs.append(("mask", mask))
    if publish_overlay:
        overlay = overlay_fields(result)
        if overlay is not None:
            outputs.append(("overlay", overlay))
    outputs.append(("target_cloud", target_cloud_fields(result)))
    outputs.append(("markers", markers_fields(result)))
    if result.targets:
        outputs.append(("targets", targets_fields(result.frame_stamp, result.frame_id, result.targets)))
    return outputs
