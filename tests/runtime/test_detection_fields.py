"""lisa_ros.runtime.detection_fields (vision_msgs field values) and the compressed outputs (codec)."""

from types import SimpleNamespace

import numpy as np
import pytest

from lisa_ros.geometry import TargetRegion
from lisa_ros.runtime import codec, message_fields
from lisa_ros.runtime.detection_fields import (
    box2d_fields,
    result_detection_outputs,
    result_target_ids,
    tracking_detection_outputs,
)
from lisa_ros.runtime.tracking import TargetStatus, TrackedTarget, TrackingUpdate
from lisa_ros.runtime.types import Result, Status, mask_boxes

STAMP = 1_700_000_000_123_456_789
H, W = 48, 64


def _region(center, size=(0.1, 0.2, 0.3), yaw=np.pi / 2):
    rotation = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    center = np.asarray(center, float)
    return TargetRegion(
        points=np.asarray([center], np.float32),
        centroid=center + 0.01,
        aabb_center=center,
        aabb_size=np.asarray(size),
        obb_center=center,
        obb_size=np.asarray(size),
        obb_rotation=rotation,
        point_count=42,
    )


def _masks():
    masks = np.zeros((3, H, W), bool)
    masks[0, 10:20, 5:15] = True  # x 5..14, y 10..19
    masks[1, 30:31, 40:41] = True  # one pixel at (40, 30)
    return masks  # the third is empty


def _result(**extra):
    masks = _masks()
    values = dict(
        command_id=7,
        command="the red mug",
        stamp=STAMP + 5,
        frame_stamp=STAMP,
        frame_id="camera_color_optical_frame",
        status=Status.OK,
        masks=masks,
        scores=np.array([0.9, 0.5, 0.1], np.float32),
        boxes=mask_boxes(masks),
        image=np.zeros((H, W, 3), np.uint8),
    )
    return Result(**(values | extra))


def _target(target_id, command_id, mask=None, region=None, status=TargetStatus.TRACKING, frame="map"):
    box = mask_boxes(mask[None])[0] if mask is not None else np.full(4, -1, np.int32)
    return TrackedTarget(
        target_id=target_id,
        command_id=command_id,
        command=f"command {command_id}",
        answer="",
        status=status,
        status_message="",
        score=0.75,
        box=box,
        mask=mask,
        region=region,
        region_frame=frame if region is not None else "",
        views_fused=1,
        age=0.0,
        reasks=0,
    )


def test_box_is_the_masks_pixel_box_centre_and_size():
    assert box2d_fields((5, 10, 14, 19)) == {
        "center": {"position": {"x": 9.5, "y": 14.5}, "theta": 0.0},
        "size_x": 10.0,
        "size_y": 10.0,
    }
    assert box2d_fields((40, 30, 40, 30))["size_x"] == 1.0
    assert box2d_fields((-1, -1, -1, -1)) is None


def test_result_detections_2d_one_per_non_empty_mask_stamped_like_the_image():
    outputs = dict(result_detection_outputs(_result()))
    array = outputs["detections"]
    header = {"stamp": {"sec": 1_700_000_000, "nanosec": 123_456_789}, "frame_id": "camera_color_optical_frame"}
    assert array["header"] == header
    assert len(array["detections"]) == 2  # the empty third mask has no box
    first, second = array["detections"]
    assert first["header"] == header and first["id"] == ""  # no tracking: no target id
    assert first["results"] == [{"hypothesis": {"class_id": "the red mug", "score": pytest.approx(0.9)}}]
    assert first["bbox"]["center"]["position"] == {"x": 9.5, "y": 14.5}
    assert (first["bbox"]["size_x"], first["bbox"]["size_y"]) == (10.0, 10.0)
    assert second["bbox"]["center"]["position"] == {"x": 40.0, "y": 30.0}


def test_result_detections_3d_carry_the_oriented_box_and_centroid_in_the_region_frame():
    regions = [_region((1.0, 2.0, 3.0)), None, None]
    result = _result(regions=regions, region_frame="map")
    array = dict(result_detection_outputs(result))["detections_3d"]
    assert array["header"] == {"stamp": {"sec": 1_700_000_000, "nanosec": 123_456_789}, "frame_id": "map"}
    (detection,) = array["detections"]
    assert detection["header"] == array["header"]
    assert detection["bbox"]["center"]["position"] == {"x": 1.0, "y": 2.0, "z": 3.0}
    orientation = detection["bbox"]["center"]["orientation"]  # 90 degrees about z
    assert orientation == pytest.approx({"x": 0.0, "y": 0.0, "z": np.sqrt(0.5), "w": np.sqrt(0.5)})
    assert detection["bbox"]["size"] == pytest.approx({"x": 0.1, "y": 0.2, "z": 0.3})
    (hypothesis,) = detection["results"]
    assert hypothesis["hypothesis"] == {"class_id": "the red mug", "score": pytest.approx(0.9)}
    assert hypothesis["pose"]["pose"]["position"] == pytest.approx({"x": 1.01, "y": 2.01, "z": 3.01})
    # Without regions the array is empty (it replaces earlier detections), framed like the image.
    empty = dict(result_detection_outputs(_result()))["detections_3d"]
    assert empty["detections"] == [] and empty["header"]["frame_id"] == "camera_color_optical_frame"


def test_unanswered_results_and_events_have_no_detections():
    assert result_detection_outputs(_result(status=Status.ERROR)) == []
    assert tracking_detection_outputs(TrackingUpdate(STAMP, "", None, [])) == []
    no_target = _result(status=Status.NO_TARGET, masks=np.zeros((0, H, W), bool), scores=np.zeros(0, np.float32))
    no_target.boxes = np.zeros((0, 4), np.int32)
    assert [len(fields["detections"]) for _, fields in result_detection_outputs(no_target)] == [0, 0]


def test_ids_are_the_live_targets_the_answer_started():
    masks = _masks()
    ended = _target(3, command_id=6, status=TargetStatus.DROPPED)  # an earlier command's, ended by this one
    started = [_target(10 + i, command_id=7, mask=mask) for i, mask in enumerate(masks)]
    result = _result(targets=[ended, *started])
    assert result_target_ids(result) == ["10", "11", "12"]
    assert [d["id"] for d in dict(result_detection_outputs(result))["detections"]["detections"]] == ["10", "11"]
    assert result_target_ids(_result(targets=[ended])) == ["", "", ""]


def test_tracked_image_detections_keep_the_target_ids_and_frames():
    masks = _masks()
    found = _target(4, 2, mask=masks[0], region=_region((0.5, 0, 1)), frame="odom")
    flat = _target(5, 2, mask=masks[1])  # found, no 3D region
    lost = _target(6, 3, status=TargetStatus.LOST)
    update = TrackingUpdate(STAMP, "camera", np.zeros((H, W, 3), np.uint8), [found, flat, lost])
    outputs = dict(tracking_detection_outputs(update))
    two_d = outputs["detections"]
    assert two_d["header"]["frame_id"] == "camera"
    assert [(d["id"], d["results"][0]["hypothesis"]["class_id"]) for d in two_d["detections"]] == [
        ("4", "command 2"),
        ("5", "command 2"),
    ]
    three_d = outputs["detections_3d"]
    assert three_d["header"]["frame_id"] == "odom" and three_d["header"]["stamp"]["nanosec"] == 123_456_789
    assert [(d["id"], d["header"]["frame_id"]) for d in three_d["detections"]] == [("4", "odom")]


def _decode(fields):
    return codec.compressed_to_rgb(SimpleNamespace(**fields))


def test_compressed_mask_is_exactly_the_raw_mask_and_overlay_close():
    result = _result()
    result.image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    result.image[:] = 128  # smooth: jpeg is close on it
    outputs = message_fields.result_outputs(result, publish_overlay=True)
    compressed = dict(codec.compressed_outputs(outputs))
    assert list(compressed) == ["mask/compressed", "overlay/compressed"]
    raw = dict(outputs)
    mask = compressed["mask/compressed"]
    assert mask["header"] == raw["mask"]["header"] and mask["format"] == "mono8; png compressed "
    raw_mask = np.frombuffer(raw["mask"]["data"], np.uint8).reshape(H, W)
    np.testing.assert_array_equal(_decode(mask)[:, :, 0], raw_mask)
    overlay = compressed["overlay/compressed"]
    assert overlay["format"] == "rgb8; jpeg compressed bgr8" and overlay["header"] == raw["overlay"]["header"]
    raw_overlay = np.frombuffer(raw["overlay"]["data"], np.uint8).reshape(H, W, 3).astype(int)
    assert np.abs(_decode(overlay).astype(int) - raw_overlay).mean() < 3.0
    # Without the overlay only the mask goes out compressed.
    plain = message_fields.result_outputs(result, publish_overlay=False)
    assert [name for name, _ in codec.compressed_outputs(plain)] == ["mask/compressed"]


def test_compressed_fields_refuse_other_encodings():
    depth = codec.rgb_to_image_fields(np.zeros((2, 2), np.uint16), "16UC1") | {"header": {}}
    with pytest.raises(codec.ImageError, match="unsupported image encoding"):
        codec.compressed_image_fields(depth, "png")
