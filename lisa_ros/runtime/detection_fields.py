"""vision_msgs outputs of a result or a tracked image, as plain field values: ROS-free.

Downstream perception nodes (grasp planners, MoveIt, FoundationPose, navigation goals)
read `vision_msgs`; these functions give the fields of its `Detection2DArray` and
`Detection3DArray` in the style of lisa_ros.runtime.message_fields (nested dicts keyed by
field names), for `lisa_ros.node.messages` to build when vision_msgs is installed.

Field names and types are those of the released vision_msgs 4.x (Humble, Jazzy, Kilted):
`BoundingBox2D.center` is a `vision_msgs/Pose2D` (`position.x`, `position.y`, `theta`),
`ObjectHypothesisWithPose.hypothesis` holds `class_id` (string) and `score` (float64),
and `Detection2D`/`Detection3D` carry a string `id`.

Choices:
- class_id is the command: LISA has no fixed class list; the command is what was asked
  for, so a consumer filters detections by the query it sent.
- score is the mask decoder's predicted IoU (SegmentationResult.scores, Target.score).
- id is the live target's id (as on `targets`) when tracking started one for the mask,
  so the same object keeps its id from the answer through every tracked image; "" when
  no target was started (tracking off): vision_msgs allows an empty id.
- The 2D box is the mask's axis-aligned box in pixels (theta 0): centre
  ((x_min + x_max) / 2, (y_min + y_max) / 2), size x_max - x_min + 1 (pixel centres at
  integer coordinates, inclusive bounds). An empty mask has no detection.
- The 3D box is the region's oriented box (`bbox.center` pose, `bbox.size` extents) and
  the hypothesis pose is the region's centroid (identity orientation), both in the
  region's frame (`target_frame` when reached), stamped like the image.
"""

from __future__ import annotations

import numpy as np

from .message_fields import box_pose_fields, header_fields, point_fields, pose_fields, region_header
from .tracking import TargetStatus, TrackingUpdate
from .types import Result, Status

# Output name (the node's relative topic) -> message type.
DETECTION_OUTPUT_TYPES = {
    "detections": "vision_msgs/msg/Detection2DArray",
    "detections_3d": "vision_msgs/msg/Detection3DArray",
}


def box2d_fields(box) -> dict | None:
    """vision_msgs/BoundingBox2D of an inclusive pixel box (x_min, y_min, x_max, y_max); None for an empty one."""
    x_min, y_min, x_max, y_max = (int(v) for v in box)
    if x_min < 0 or x_max < x_min or y_max < y_min:
        return None
    return {
        "center": {"position": {"x": (x_min + x_max) / 2.0, "y": (y_min + y_max) / 2.0}, "theta": 0.0},
        "size_x": float(x_max - x_min + 1),
        "size_y": float(y_max - y_min + 1),
    }


def _hypothesis(command: str, score: float, centroid=None) -> dict:
    hypothesis = {"hypothesis": {"class_id": command, "score": float(score)}}
    if centroid is not None:
        hypothesis["pose"] = {"pose": pose_fields(centroid)}
    return hypothesis


def _detection2d(header: dict, detection_id: str, command: str, score: float, box) -> dict | None:
    bbox = box2d_fields(box)
    if bbox is None:
        return None
    return {"header": header, "results": [_hypothesis(command, score)], "bbox": bbox, "id": detection_id}


def _detection3d(header: dict, detection_id: str, command: str, score: float, region) -> dict:
    return {
        "header": header,
        "results": [_hypothesis(command, score, region.centroid)],
        "bbox": {"center": box_pose_fields(region), "size": point_fields(region.obb_size)},
        "id": detection_id,
    }


def result_target_ids(result: Result) -> list[str]:
    """The live target id of each mask of `result` ("" each when no target was started).

    The tracker reports the targets an answer started last in result.targets, one per
    mask in mask order (after those it ended, which belong to earlier commands).
    """
    count = len(result.masks)
    started = result.targets[-count:] if count else []
    if len(started) == count and all(target.command_id == result.command_id for target in started):
        return [str(target.target_id) for target in started]
    return [""] * count


def result_detections_2d(result: Result) -> dict:
    """vision_msgs/Detection2DArray of an answered result: one detection per non-empty mask."""
    header = header_fields(result.frame_stamp, result.frame_id)
    ids = result_target_ids(result)
    scores = np.asarray(result.scores, np.float64)
    detections = [
        _detection2d(header, ids[index], result.command, scores[index], box) for index, box in enumerate(result.boxes)
    ]
    return {"header": header, "detections": [d for d in detections if d is not None]}


def result_detections_3d(result: Result) -> dict:
    """vision_msgs/Detection3DArray of an answered result: one detection per mask with a 3D region."""
    header = region_header(result)
    ids = result_target_ids(result)
    scores = np.asarray(result.scores, np.float64)
    detections = [
        _detection3d(header, ids[index], result.command, scores[index], region)
        for index, region in enumerate(result.regions)
        if region is not None
    ]
    return {"header": header, "detections": detections}


def _found(update: TrackingUpdate) -> list:
    """The targets found on the tracked image (a mask, not dropped)."""
    return [t for t in update.targets if t.mask is not None and t.status != TargetStatus.DROPPED]


def _labels(target) -> tuple[str, str, float]:
    """A tracked target's detection id, class id (its command) and score."""
    return str(target.target_id), target.command, float(target.score)


def tracking_detections_2d(update: TrackingUpdate) -> dict:
    """vision_msgs/Detection2DArray of a tracked image: one detection per target found on it."""
    header = header_fields(update.stamp, update.frame_id)
    detections = [_detection2d(header, *_labels(t), t.box) for t in _found(update)]
    return {"header": header, "detections": [d for d in detections if d is not None]}


def tracking_detections_3d(update: TrackingUpdate) -> dict:
    """vision_msgs/Detection3DArray of a tracked image: one detection per found target with a
    fused 3D region, each in its region's frame (the array's frame: theirs when they share one,
    else the image's)."""
    found = [t for t in _found(update) if t.region is not None]
    frames = {t.region_frame for t in found}
    array_frame = frames.pop() if len(frames) == 1 else update.frame_id
    detections = [
        _detection3d(header_fields(update.stamp, t.region_frame or update.frame_id), *_labels(t), t.region)
        for t in found
    ]
    return {"header": header_fields(update.stamp, array_frame), "detections": detections}


def result_detection_outputs(result: Result) -> list[tuple[str, dict]]:
    """The vision_msgs messages of a result: (output name, fields); none for an unanswered (ERROR) one.

    Every answer gets both arrays (empty when nothing was found), so a consumer sees that
    the earlier detections are gone.
    """
    if result.status == Status.ERROR:
        return []
    return [("detections", result_detections_2d(result)), ("detections_3d", result_detections_3d(result))]


def tracking_detection_outputs(update: TrackingUpdate) -> list[tuple[str, dict]]:
    """The vision_msgs messages of a tracked image; none for an event without an image (clear, ...)."""
    if update.image is None:
        return []
    return [("detections", tracking_detections_2d(update)), ("detections_3d", tracking_detections_3d(update))]
