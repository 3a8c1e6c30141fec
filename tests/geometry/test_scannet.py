"""lisa_ros.geometry.scannet: a synthetic scene written in the ScanNet export layout, read back and lifted."""

import logging

import numpy as np
import pytest

from lisa_ros.geometry import accuracy_at, backproject_mask, box_iou_3d, extract_region, point_iou, transform_points
from lisa_ros.geometry.scannet import ScanNetScene, lift_masks_to_vertices
from tests.helpers.synthetic_scenes import COLOR_INTRINSICS, DEPTH_INTRINSICS, orbit, table_scene, write_scannet_scene

INVALID_FRAME = 2  # its pose file is all -inf


def rotation_z(angle: float, translation) -> np.ndarray:
    transform = np.eye(4)
    c, s = np.cos(angle), np.sin(angle)
    transform[:2, :2] = [[c, -s], [s, c]]
    transform[:3, 3] = translation
    return transform


ALIGNMENT = rotation_z(0.3, (0.5, -0.2, 0.0))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The table scene seen by six cameras around it, in the ScanNet layout (frames 0, 20, ..., 100)."""
    poses = orbit((0.0, 0.0, 0.1), 1.3, 1.0, [-70, -10, 50, 110, 170, 230])
    root = tmp_path_factory.mktemp("scannet")
    info = write_scannet_scene(
        root, table_scene(), poses, invalid_pose_frames=(INVALID_FRAME,), axis_alignment=ALIGNMENT
    )
    info["poses"] = poses
    return info


@pytest.fixture(scope="module")
def scene(written):
    return ScanNetScene(written["scene_dir"])


def masks_of(written, label, shift=0):
    """Per-frame colour-resolution masks of one object, optionally shifted right by `shift` pixels."""
    return [np.roll(labels == label, shift, axis=1) for labels in written["color_labels"]]


def test_scene_reads_back(scene, written, caplog):
    assert scene.scene_id == "scene0000_00"
    assert scene.frame_ids == [0, 20, 40, 60, 80, 100] == written["frame_ids"]
    color = scene.color(20)
    assert color.shape == (968, 1296, 3) and color.dtype == np.uint8
    assert scene.depth_raw(20).dtype == np.uint16
    depth = scene.depth_m(20)
    assert depth.shape == (480, 640) and depth.dtype == np.float32
    expected = written["depth"][1]
    np.testing.assert_allclose(depth[expected > 0], expected[expected > 0], atol=5e-4)  # millimetre PNG
    assert np.isnan(depth[expected == 0]).all()
    np.testing.assert_allclose(scene.pose(20), written["poses"][1], atol=1e-7)
    with caplog.at_level(logging.WARNING, logger="lisa_ros.geometry.scannet"):
        assert scene.pose(40) is None
    assert "frame 40" in caplog.text
    assert scene.depth_intrinsics == DEPTH_INTRINSICS
    for name in ("fx", "fy", "cx", "cy", "width", "height"):
        assert getattr(scene.color_intrinsics, name) == pytest.approx(getattr(COLOR_INTRINSICS, name))
    np.testing.assert_allclose(scene.axis_alignment, ALIGNMENT, atol=1e-8)
    with pytest.raises(KeyError):
        scene.depth_m(1)


def test_mesh_vertices_in_file_order(scene, written):
    vertices = scene.vertices()
    labels = written["labels"]
    assert vertices.shape == (len(labels), 3)
    # Object 1 is the box centred at (0, 0, 0.125) with size (0.3, 0.2, 0.25).
    box = vertices[labels == 1]
    np.testing.assert_allclose(box.min(axis=0), [-0.15, -0.1, 0.0], atol=0.02)
    np.testing.assert_allclose(box.max(axis=0), [0.15, 0.1, 0.25], atol=1e-6)
    np.testing.assert_allclose(scene.vertices(aligned=True), transform_points(vertices, ALIGNMENT), atol=1e-9)


@pytest.mark.parametrize("label", [1, 2, 3])
def test_perfect_masks_lift_to_the_object(scene, written, label):
    # (A background vertex lying exactly on an object's outline in one view can be read as
    # inside the mask there: the majority over the other views that see it decides.)
    gt = written["labels"] == label
    lifted = lift_masks_to_vertices(scene, scene.frame_ids, masks_of(written, label))
    assert point_iou(lifted, gt) == 1.0


def test_shifted_masks_lift_worse(scene, written):
    gt = written["labels"] == 1
    lifted = [lift_masks_to_vertices(scene, scene.frame_ids, masks_of(written, 1, shift)) for shift in (0, 30, 90)]
    ious = [point_iou(selection, gt) for selection in lifted]
    assert ious[0] == 1.0 > ious[1] > ious[2]
    assert ious[2] < 0.9


def test_depth_resolution_masks_and_any_view_aggregation(scene, written):
    gt = written["labels"] == 2
    from lisa_ros.geometry import resample_mask

    small = [resample_mask(mask, 480, 640) for mask in masks_of(written, 2)]
    assert point_iou(lift_masks_to_vertices(scene, scene.frame_ids, small), gt) > 0.95
    # One frame whose mask covers the whole image: a majority of the other views overrules it,
    # "any view" (min_ratio=0) does not.
    masks = masks_of(written, 2)
    masks[0] = np.ones_like(masks[0])
    majority = point_iou(lift_masks_to_vertices(scene, scene.frame_ids, masks), gt)
    any_view = point_iou(lift_masks_to_vertices(scene, scene.frame_ids, masks, min_ratio=0.0), gt)
    # What stays wrong is background that only one other frame sees (a 1:1 tie is kept).
    assert majority > 0.75 and any_view < 0.2
    with pytest.raises(ValueError):
        lift_masks_to_vertices(scene, scene.frame_ids, masks[:2])


def test_region_from_frames_against_the_mesh_box(scene, written):
    """The evaluator's path: masks -> regions in the aligned frame -> box IoU with the mesh's box."""
    gt = scene.vertices(aligned=True)[written["labels"] == 1]
    gt_center, gt_size = gt.min(axis=0) / 2 + gt.max(axis=0) / 2, gt.max(axis=0) - gt.min(axis=0)
    ious = []
    for frame_id, mask in zip(scene.frame_ids, masks_of(written, 1)):
        pose = scene.pose(frame_id)
        if pose is None:
            continue
        points = backproject_mask(mask, scene.depth_m(frame_id), scene.depth_intrinsics, erode_pixels=1)
        region = extract_region(transform_points(points, ALIGNMENT @ pose))
        ious.append(box_iou_3d(region.aabb_center, region.aabb_size, gt_center, gt_size))
    assert len(ious) == 5
    # The box is rotated by 0.3 rad in the aligned frame, so the axis-aligned boxes of one
    # view's surface and of the whole mesh differ; each still overlaps well.
    assert accuracy_at(ious, 0.25) == 1.0 and min(ious) > 0.5


def test_point_iou_hand_cases():
    a = np.array([1, 1, 0, 0], bool)
    assert point_iou(a, a) == 1.0
    assert point_iou(a, np.array([0, 1, 1, 0], bool)) == pytest.approx(1 / 3)
    assert point_iou(a, ~a) == 0.0
    assert point_iou(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    with pytest.raises(ValueError):
        point_iou(a, a[:3])


def test_box_iou_hand_cases():
    assert box_iou_3d([0, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 1]) == pytest.approx(1.0)
    assert box_iou_3d([0, 0, 0], [1, 1, 1], [0.5, 0, 0], [1, 1, 1]) == pytest.approx(1 / 3)  # half overlaps
    assert box_iou_3d([0, 0, 0], [2, 2, 2], [0, 0, 0], [1, 1, 1]) == pytest.approx(1 / 8)  # contained
    assert box_iou_3d([0, 0, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]) == 0.0  # touching faces
    assert box_iou_3d([0, 0, 0], [1, 1, 1], [5, 5, 5], [1, 1, 1]) == 0.0
    assert box_iou_3d([0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]) == 0.0
    # Overlap in x and y (0.5 x 0.5) and in z (1): 0.25 / (1 + 1 - 0.25).
    assert box_iou_3d([0, 0, 0], [1, 1, 1], [0.5, 0.5, 0], [1, 1, 1]) == pytest.approx(0.25 / 1.75)


def test_accuracy_at_thresholds():
    ious = [0.1, 0.25, 0.3, 0.5, 0.7]
    assert accuracy_at(ious, 0.25) == pytest.approx(4 / 5)  # >= counts, as ScanRefer's Acc@0.25
    assert accuracy_at(ious, 0.5) == pytest.approx(2 / 5)
    assert np.isnan(accuracy_at([], 0.5))


def test_scene_without_metadata_falls_back(written, tmp_path, caplog):
    """No <scene>.txt (ScanNet's test scenes have no alignment): identity alignment, sizes from the images."""
    import shutil

    copy = tmp_path / written["scene_dir"].name
    shutil.copytree(written["scene_dir"], copy)
    (copy / f"{copy.name}.txt").unlink()
    (copy / "pose" / "20.txt").rename(copy / "pose" / "000020.txt")  # zero-padded names pair by stem
    (copy / "depth" / "20.png").rename(copy / "depth" / "000020.png")
    (copy / "color" / "20.jpg").rename(copy / "color" / "000020.jpg")
    scene = ScanNetScene(copy)
    assert scene.frame_ids == [0, 20, 40, 60, 80, 100]
    assert scene.color(20).shape == (968, 1296, 3)
    with caplog.at_level(logging.WARNING, logger="lisa_ros.geometry.scannet"):
        np.testing.assert_array_equal(scene.axis_alignment, np.eye(4))
    assert "no axisAlignment" in caplog.text
    assert scene.depth_intrinsics == DEPTH_INTRINSICS
    assert (scene.color_intrinsics.width, scene.color_intrinsics.height) == (1296, 968)
