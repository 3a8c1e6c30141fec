"""lisa_ros.runtime.pipeline's 3D stage without ROS: masks + depth + intrinsics + pose -> target regions.

A synthetic scene with known geometry: a 64x64 camera (fx = fy = 80, cx = cy = 32)
looking at a plane 1.0 m away with a box whose front face (the target's pixels) is
0.8 m away, so one pixel on the face is 1 cm wide. A scripted predictor answers every
command with the target's mask; no model runs.
"""

import types

import numpy as np
import pytest

from lisa_model import Prediction
from lisa_ros import geometry
from lisa_ros.geometry import CameraIntrinsics, TargetRegion
from lisa_ros.runtime.pipeline import Pipeline
from lisa_ros.runtime.types import NO_MASK, NS_PER_S, REGION_UNAVAILABLE, Frame, Status

T0 = 1_700_000_000 * NS_PER_S
MS = NS_PER_S // 1000
SIZE = 64
FX = FY = 80.0
CX = CY = 32.0
PLANE, FACE = 1.0, 0.8
TOP, LEFT, SIDE = 8, 8, 16  # the target's pixels: rows and columns 8..23


class ScriptedPredictor:
    """Answers every command with `text` and `masks` (no model)."""

    def __init__(self, text, masks):
        self.model = types.SimpleNamespace(config=types.SimpleNamespace(conversation_template="llava_v1"))
        self.text, self.masks = text, np.asarray(masks, bool)
        self.image_timings = {"clip": 0.0, "sam_encoder": 0.0}

    def set_image(self, image, **kwargs):
        pass

    def predict(self, command, conversation=None, **kwargs):
        conversation.append(command, self.text, False)
        scores = np.full(len(self.masks), 0.9, np.float32)
        return Prediction(self.text, self.masks, self.masks.astype(np.float32), scores, {"decode": 0.0})


def target_mask(size=SIZE, top=TOP, left=LEFT, side=SIDE):
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def scene_depth(size=SIZE, top=TOP, left=LEFT, side=SIDE):
    """Depth in metres at `size`x`size` (the same scene at any resolution)."""
    scale = size / SIZE
    depth = np.full((size, size), PLANE, np.float32)
    r0, c0, s = round(top * scale), round(left * scale), round(side * scale)
    depth[r0 : r0 + s, c0 : c0 + s] = FACE
    return depth


def intrinsics(size=SIZE):
    return CameraIntrinsics.from_k([FX, 0, CX, 0, FY, CY, 0, 0, 1], size, size)


def face_points(erosion=0):
    """The truth: camera-frame points of the target's face, one per (eroded) mask pixel."""
    rows, cols = np.nonzero(target_mask(top=TOP + erosion, left=LEFT + erosion, side=SIDE - 2 * erosion))
    z = np.full(rows.shape, FACE)
    return np.stack([(cols - CX) * z / FX, (rows - CY) * z / FY, z], axis=1)


def rgb():
    return np.full((SIZE, SIZE, 3), 128, np.uint8)


def make_pipeline(masks=None, text="It is [SEG].", **settings):
    masks = target_mask()[None] if masks is None else masks
    settings.setdefault("mask_erosion", 0)
    # Voxels finer than the 1 cm pixel spacing: every point keeps its own voxel, so the
    # truth is exact (at 1 cm, voxel borders on the pixel grid shift centroids by ~1 cm).
    settings.setdefault("voxel_size", 0.005)
    return Pipeline(ScriptedPredictor(text, masks), max_image_age=0, **settings)


def assert_region_is_the_face(region, erosion=0, offset=(0.0, 0.0, 0.0)):
    truth = face_points(erosion) + np.asarray(offset)
    assert isinstance(region, TargetRegion)
    assert np.linalg.norm(np.asarray(region.centroid) - truth.mean(axis=0)) < 0.01
    extent = truth.max(axis=0) - truth.min(axis=0)  # 15 cm x 15 cm x 0 without erosion
    assert np.allclose(region.aabb_size, np.abs(extent), atol=0.02), (region.aabb_size, extent)
    points = np.asarray(region.points)
    assert 0 < len(points) <= region.point_count <= len(truth)
    # The oriented box holds every point; a flat face gives it no depth. (Its in-plane
    # axes are open3d's choice: for a square face not necessarily the tightest box.)
    local = (points - np.asarray(region.obb_center)) @ np.asarray(region.obb_rotation)
    assert np.all(np.abs(local) <= np.asarray(region.obb_size) / 2 + 1e-3)
    assert min(region.obb_size) < 0.01 and max(region.obb_size) <= np.linalg.norm(extent) + 0.02
    assert np.all(np.abs(points[:, 2] - (FACE + offset[2])) < 0.01)
    low, high = truth.min(axis=0) - 0.011, truth.max(axis=0) + 0.011
    assert np.all((points >= low) & (points <= high))


def test_frame_with_its_own_depth():
    pipeline = make_pipeline()
    pipeline.set_frame(rgb(), T0, "color", depth=scene_depth(), depth_frame_id="depth", intrinsics=intrinsics())
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.status == Status.OK
    assert result.region_status == "" and result.region_frame == "depth"
    assert len(result.regions) == 1
    assert_region_is_the_face(result.regions[0])
    assert "regions" in result.timings and result.timings["total"] >= result.timings["regions"]


def test_cached_depth_and_camera_info_matched_by_stamp():
    pipeline = make_pipeline()
    pipeline.set_frame(rgb(), T0, "camera")
    far = np.full((SIZE, SIZE), 3.0, np.float32)
    pipeline.set_depth(far, T0 - 200 * MS, "camera")  # older: not the nearest
    pipeline.set_depth(lambda: scene_depth(), T0 + 10 * MS, "camera")  # decoded when used
    pipeline.set_depth(far, T0 + 300 * MS, "camera")  # newer: not the nearest either
    pipeline.set_camera_info(intrinsics(), T0 + 10 * MS, "camera")
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.region_status == "" and result.region_frame == "camera"
    assert_region_is_the_face(result.regions[0])


def test_depth_too_far_apart_in_time():
    pipeline = make_pipeline(max_depth_skew=0.05)
    pipeline.set_frame(rgb(), T0, "camera")
    pipeline.set_depth(scene_depth(), T0 + 80 * MS, "camera")
    pipeline.set_camera_info(intrinsics(), T0, "camera")
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.status == Status.OK and result.masks.shape[0] == 1  # the 2D answer stands
    assert result.regions == [] and result.region_frame == ""
    assert "depth image is 0.080 s apart" in result.region_status and "max_depth_skew" in result.region_status
    pipeline.lifter.max_depth_skew = 0.0  # any skew: the nearest
    assert pipeline.answer(2, "segment the red square", T0).region_status == ""


def test_camera_info_too_far_apart_in_time():
    pipeline = make_pipeline(max_depth_skew=0.05)
    pipeline.set_frame(rgb(), T0, "camera")
    pipeline.set_depth(scene_depth(), T0, "camera")
    pipeline.set_camera_info(intrinsics(), T0 - NS_PER_S, "camera")
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.regions == [] and "camera_info is 1.000 s apart" in result.region_status


@pytest.mark.parametrize(
    "inputs, message",
    [
        ((), "no depth image received"),
        (("depth",), "no camera_info received"),
        (("bad depth", "info"), "invalid depth image: unsupported encoding"),
        (("depth", "bad info"), "invalid camera_info: K is all zeros"),
        (("depth", "zero info"), "invalid camera_info: no calibration"),
        (("small depth", "info"), "different aspect ratios"),
    ],
)
def test_why_there_is_no_region(inputs, message):
    pipeline = make_pipeline()
    pipeline.set_frame(rgb(), T0, "camera")
    if "depth" in inputs:
        pipeline.set_depth(scene_depth(), T0, "camera")
    if "small depth" in inputs:
        pipeline.set_depth(scene_depth()[:, :40], T0, "camera")
    if "bad depth" in inputs:

        def decode():
            raise ValueError("unsupported encoding 8UC3")

        pipeline.set_depth(decode, T0, "camera")
    if "info" in inputs:
        pipeline.set_camera_info(intrinsics(), T0, "camera")
    if "bad info" in inputs:
        pipeline.set_camera_info(None, T0, "camera", error="K is all zeros")
    if "zero info" in inputs:
        pipeline.set_camera_info(CameraIntrinsics(0.0, 0.0, 0.0, 0.0, SIZE, SIZE), T0, "camera")
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.status == Status.OK and result.regions == []
    assert result.region_status.startswith("no 3D region: ") and message in result.region_status


def test_no_region_without_masks_or_answer():
    pipeline = make_pipeline(np.zeros((0, SIZE, SIZE), bool), text="The table is gray.")
    pipeline.set_frame(rgb(), T0, "camera", depth=scene_depth(), intrinsics=intrinsics())
    result = pipeline.answer(1, "what colour is the table?", T0)
    assert result.status == Status.NO_TARGET and result.regions == [] and result.region_status == NO_MASK
    error = pipeline.answer(2, "", T0)
    assert error.status == Status.ERROR and error.regions == [] and error.region_status == REGION_UNAVAILABLE


def test_a_mask_without_valid_depth():
    masks = np.stack([target_mask(), target_mask(top=40, left=40)])
    depth = scene_depth()
    depth[36:, 36:] = np.nan  # no reading under the second mask
    depth[40:44, 40:44] = 0.0
    pipeline = make_pipeline(masks, text="[SEG] and [SEG].")
    pipeline.set_frame(rgb(), T0, "camera", depth=depth, intrinsics=intrinsics())
    result = pipeline.answer(1, "both", T0)
    assert len(result.regions) == 2 and result.regions[1] is None
    assert_region_is_the_face(result.regions[0])
    assert result.region_status == "mask 1: no valid depth under the mask"


def test_depth_out_of_range_is_skipped():
    pipeline = make_pipeline(min_depth=0.9)  # the face (0.8 m) is too near
    pipeline.set_frame(rgb(), T0, "camera", depth=scene_depth(), intrinsics=intrinsics())
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.regions == [] and "mask 0: no valid depth" in result.region_status


def test_mask_erosion_keeps_edges_off_the_background():
    depth = scene_depth()
    depth[TOP : TOP + SIDE, LEFT] = PLANE  # the mask's left column sees the background
    pipeline = make_pipeline(mask_erosion=2)
    pipeline.set_frame(rgb(), T0, "camera", depth=depth, intrinsics=intrinsics())
    region = pipeline.answer(1, "segment the red square", T0).regions[0]
    assert_region_is_the_face(region, erosion=2)


def test_half_resolution_depth_with_full_resolution_camera_info():
    """Depth registered to the image at half its size; camera_info of the image: scaled."""
    pipeline = make_pipeline()
    pipeline.set_frame(rgb(), T0, "camera")
    pipeline.set_depth(scene_depth(SIZE // 2), T0, "camera")
    pipeline.set_camera_info(intrinsics(), T0, "camera")
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.region_status == ""
    region = result.regions[0]
    assert np.linalg.norm(np.asarray(region.centroid) - face_points().mean(axis=0)) < 0.015
    assert np.all(np.abs(np.asarray(region.points)[:, 2] - FACE) < 0.01)


def pose(translation, yaw=0.0):
    c, s = np.cos(yaw), np.sin(yaw)
    matrix = np.eye(4)
    matrix[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    matrix[:3, 3] = translation
    return matrix


def test_frame_pose_moves_the_region_into_the_target_frame():
    pipeline = make_pipeline()
    camera_to_map = pose((1.0, -2.0, 0.5))
    pipeline.set_frame(
        rgb(), T0, "camera", depth=scene_depth(), intrinsics=intrinsics(), pose=camera_to_map, target_frame="map"
    )
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.region_status == "" and result.region_frame == "map"
    assert_region_is_the_face(result.regions[0], offset=(1.0, -2.0, 0.5))


def test_invalid_pose_is_skipped():
    pipeline = make_pipeline()
    bad = np.full((4, 4), -np.inf)  # ScanNet's marker of a frame without a pose
    pipeline.set_frame(rgb(), T0, "camera", depth=scene_depth(), intrinsics=intrinsics(), pose=bad, target_frame="map")
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.status == Status.OK and result.regions == [] and "camera pose is invalid" in result.region_status


def live_pipeline(**settings):
    pipeline = make_pipeline(**settings)
    pipeline.set_frame(rgb(), T0, "camera")
    pipeline.set_depth(scene_depth(), T0, "camera")
    pipeline.set_camera_info(intrinsics(), T0, "camera")
    return pipeline


def test_cached_poses_from_a_pose_topic():
    pipeline = live_pipeline(target_frame="map")
    pipeline.lifter.pose_lookup = pipeline.lifter.cached_pose
    no_pose = pipeline.answer(1, "segment the red square", T0)
    assert no_pose.regions == [] and "no camera pose received" in no_pose.region_status
    pipeline.set_camera_pose(pose((5.0, 0.0, 0.0)), T0 - 500 * MS, "map")
    pipeline.set_camera_pose(pose((0.0, 0.0, 2.0), yaw=np.pi / 2), T0 + 5 * MS, "map")
    result = pipeline.answer(2, "segment the red square", T0)
    assert result.region_status == "" and result.region_frame == "map"
    truth = geometry.transform_points(face_points(), pose((0.0, 0.0, 2.0), yaw=np.pi / 2))
    assert np.linalg.norm(np.asarray(result.regions[0].centroid) - truth.mean(axis=0)) < 0.01
    pipeline.set_camera_pose(pose((0.0, 0.0, 0.0)), T0, "odom")  # the nearest now, but in another frame
    wrong = pipeline.answer(3, "segment the red square", T0)
    assert wrong.regions == [] and "'odom', not target_frame 'map'" in wrong.region_status
    pipeline.set_camera_pose(pose((0.0, 0.0, 0.0)), T0 + NS_PER_S, "map")
    pipeline.set_frame(rgb(), T0 + NS_PER_S, "camera")  # depth now 1 s away too; allow any skew for it
    pipeline.set_depth(scene_depth(), T0 + NS_PER_S, "camera")
    pipeline.set_camera_info(intrinsics(), T0 + NS_PER_S, "camera")
    assert pipeline.answer(4, "segment the red square", T0 + NS_PER_S).region_status == ""


def test_pose_lookup_failure_and_frame():
    pipeline = live_pipeline(target_frame="map")
    seen = []

    def lookup(camera_frame, stamp):
        seen.append((camera_frame, stamp))
        if len(seen) == 1:
            raise LookupError("extrapolation into the future")
        return pose((0.0, 1.0, 0.0)), "map"

    pipeline.lifter.pose_lookup = lookup
    failed = pipeline.answer(1, "segment the red square", T0)
    assert failed.regions == [] and "no camera pose in map" in failed.region_status
    assert "extrapolation" in failed.region_status
    result = pipeline.answer(2, "segment the red square", T0)
    assert seen == [("camera", T0), ("camera", T0)]
    assert result.region_frame == "map"
    assert_region_is_the_face(result.regions[0], offset=(0.0, 1.0, 0.0))


def test_unreachable_target_frame_says_so():
    pipeline = live_pipeline(target_frame="map")
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.region_frame == "camera" and len(result.regions) == 1
    assert "target_frame 'map' is unreachable" in result.region_status


def test_geometry_failure_keeps_the_answer(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("open3d exploded")

    monkeypatch.setattr(geometry, "extract_region", broken)
    pipeline = live_pipeline()
    result = pipeline.answer(1, "segment the red square", T0)
    assert result.status == Status.OK and result.masks.shape[0] == 1
    assert result.regions == [] and "RuntimeError: open3d exploded" in result.region_status


def test_frame_with_depth_but_no_intrinsics():
    pipeline = make_pipeline()
    result = pipeline.answer(1, "segment the red square", T0, image=Frame(stamp=T0, rgb=rgb(), depth=scene_depth()))
    assert result.regions == [] and "no intrinsics" in result.region_status


def test_from_parameters_passes_the_geometry_settings():
    from lisa_ros.runtime.parameters import defaults

    values = dict(defaults(), device="cpu", max_new_tokens=2, min_depth=0.2, max_depth=4.0, mask_erosion=3)
    values.update(max_depth_skew=0.1, voxel_size=0.02, target_frame="map")
    pipeline = Pipeline.from_parameters(values)
    lifter = pipeline.lifter
    assert (lifter.min_depth, lifter.max_depth, lifter.mask_erosion, lifter.max_depth_skew) == (0.2, 4.0, 3, 0.1)
    assert (lifter.voxel_size, lifter.target_frame, lifter.pose_lookup) == (0.02, "map", None)
