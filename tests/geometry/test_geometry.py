"""lisa_ros.geometry against synthetic scenes with known geometry (tests/helpers/synthetic_scenes.py)."""

import logging

import numpy as np
import pytest

from lisa_ros.geometry import (
    CameraIntrinsics,
    RegionFusion,
    axis_aligned_box,
    backproject_mask,
    depth_to_meters,
    extract_region,
    is_valid_pose,
    resample_mask,
    transform_points,
    visible_points,
    voxel_downsample,
)
from tests.helpers.synthetic_scenes import COLOR_INTRINSICS, DEPTH_INTRINSICS, Box, Cylinder, Scene, orbit

# Object surfaces sit off the 1 cm voxel grid, as real ones do: a face lying exactly on
# a voxel boundary splits into two voxel layers and would count twice in the centroid.
TARGET = Box(center=(0.013, -0.006, 0.1215), size=(0.30, 0.20, 0.243))
CYLINDER = Cylinder(center_xy=(0.517, 0.383), radius=0.063, z_min=0.0, z_max=0.217)
OCCLUDER = Box(center=(0.093, -0.301, 0.1505), size=(0.10, 0.10, 0.301))


def single_object_scene():
    return Scene(objects=[TARGET, CYLINDER])


def occluded_scene():
    return Scene(objects=[TARGET, CYLINDER, OCCLUDER])


def observe(scene, pose, label=1, intrinsics=DEPTH_INTRINSICS):
    """(depth float32 metres, NaN where nothing; the object's mask) seen from `pose`."""
    depth, labels = scene.render(intrinsics, pose)
    return depth_to_meters(depth), labels == label


def world_points(scene, pose, label=1):
    depth_m, mask = observe(scene, pose, label)
    return transform_points(backproject_mask(mask, depth_m, DEPTH_INTRINSICS), pose), depth_m


def assert_matches_truth(region, truth):
    """Centroid within 1 cm and box extents within 2 cm of the visible surface's."""
    truth_center, truth_size = axis_aligned_box(truth)
    assert np.linalg.norm(region.centroid - truth.mean(axis=0)) <= 0.01
    assert np.all(np.abs(region.aabb_size - truth_size) <= 0.02)
    assert np.all(np.abs(region.aabb_center - truth_center) <= 0.01)


# Intrinsics, depth, back-projection.


def test_intrinsics_from_camera_info_k_and_scannet_matrix():
    k = [577.87, 0, 319.5, 0, 577.87, 239.5, 0, 0, 1]
    from_k = CameraIntrinsics.from_k(k, 640, 480)
    scannet = np.eye(4)
    scannet[:3, :3] = np.reshape(k, (3, 3))
    assert CameraIntrinsics.from_matrix(scannet, 640, 480) == from_k == DEPTH_INTRINSICS
    np.testing.assert_allclose(from_k.matrix(), np.reshape(k, (3, 3)))
    with pytest.raises(ValueError):
        CameraIntrinsics.from_k([0.0] * 9, 640, 480)  # an uncalibrated CameraInfo
    with pytest.raises(ValueError):
        CameraIntrinsics.from_k([1.0] * 6, 640, 480)


def test_scaled_intrinsics_keep_pixel_areas():
    color = DEPTH_INTRINSICS.scaled(1296, 968)
    assert (color.width, color.height) == (1296, 968)
    assert color.fx == pytest.approx(577.87 * 1296 / 640)
    # The image centre stays the image centre; ScanNet's colour file says cx 647.75 (ours 647.5).
    assert color.cx == pytest.approx((1296 - 1) / 2) and color.cy == pytest.approx((968 - 1) / 2)
    back = color.scaled(640, 480)
    assert back.fx == pytest.approx(DEPTH_INTRINSICS.fx) and back.cx == pytest.approx(DEPTH_INTRINSICS.cx)
    assert DEPTH_INTRINSICS.scaled(640, 480) is DEPTH_INTRINSICS


def test_depth_to_meters_16uc1_and_32fc1():
    millimetres = np.array([[0, 1000], [1500, 65535]], dtype=np.uint16)
    meters = depth_to_meters(millimetres)
    assert meters.dtype == np.float32
    assert np.isnan(meters[0, 0])
    np.testing.assert_allclose(meters[[0, 1, 1], [1, 0, 1]], [1.0, 1.5, 65.535])
    np.testing.assert_allclose(depth_to_meters(millimetres, depth_scale=5000.0)[0, 1], 0.2)
    floats = np.array([[np.nan, np.inf], [-1.0, 0.0], [1.25, -np.inf]], dtype=np.float32)
    converted = depth_to_meters(floats)
    assert np.isnan(converted[:2]).all() and np.isnan(converted[2, 1]) and converted[2, 0] == np.float32(1.25)
    assert np.isnan(floats[0, 0]) and floats[0, 1] == np.inf  # the input is not modified
    with pytest.raises(ValueError):
        depth_to_meters(np.zeros((2, 2, 3), np.uint16))


def test_backprojection_of_known_pixels():
    depth = np.full((480, 640), np.nan, np.float32)
    depth[239, 329] = 2.0
    depth[100, 319] = 1.0
    mask = np.ones((480, 640), bool)
    points = backproject_mask(mask, depth, DEPTH_INTRINSICS)
    assert points.dtype == np.float32 and points.shape == (2, 3)
    # Row-major order: (100, 319) first. x right, y down, z forward.
    np.testing.assert_allclose(points[0], [(319 - 319.5) / 577.87, (100 - 239.5) / 577.87, 1.0], rtol=1e-6)
    np.testing.assert_allclose(points[1], [(329 - 319.5) * 2 / 577.87, (239 - 239.5) * 2 / 577.87, 2.0], rtol=1e-6)
    # The range limits drop the 2 m pixel.
    assert len(backproject_mask(mask, depth, DEPTH_INTRINSICS, max_depth=1.5)) == 1
    assert len(backproject_mask(mask, depth, DEPTH_INTRINSICS, min_depth=1.5)) == 1


def test_invalid_depths_are_skipped():
    scene = single_object_scene()
    pose = orbit(TARGET.center, 1.2, 1.0, [-60])[0]
    depth_m, mask = observe(scene, pose)
    clean = backproject_mask(mask, depth_m, DEPTH_INTRINSICS)
    broken = depth_m.copy()
    rows, cols = np.nonzero(mask)
    bad = [(rows[i], cols[i]) for i in range(0, 50)]
    for index, (row, col) in enumerate(bad):  # NaN, inf, negative, too near, too far
        broken[row, col] = [np.nan, np.inf, -1.0, 0.05, 42.0][index % 5]
    points = backproject_mask(mask, broken, DEPTH_INTRINSICS)
    assert len(points) == len(clean) - len(bad)
    assert np.isfinite(points).all()
    # 16UC1 zeros too.
    millimetres = np.round(np.nan_to_num(depth_m) * 1000).astype(np.uint16)
    millimetres[rows[:50], cols[:50]] = 0
    assert len(backproject_mask(mask, depth_to_meters(millimetres), DEPTH_INTRINSICS)) == len(clean) - 50


def test_erosion_drops_mask_edges():
    depth = np.full((48, 64), 1.0, np.float32)
    mask = np.zeros((48, 64), bool)
    mask[10:30, 20:40] = True
    assert len(backproject_mask(mask, depth, DEPTH_INTRINSICS.scaled(64, 48), erode_pixels=2)) == 16 * 16
    # The image border does not erode a mask that touches it.
    mask[:] = False
    mask[:10, :10] = True
    assert len(backproject_mask(mask, depth, DEPTH_INTRINSICS.scaled(64, 48), erode_pixels=1)) == 9 * 9


def test_resample_mask_nearest_on_pixel_centres():
    mask = np.zeros((968, 1296), bool)
    mask[100:300, 200:500] = True
    small = resample_mask(mask, 480, 640)
    assert small.shape == (480, 640)
    rows, cols = np.nonzero(small)
    # Depth pixel c covers colour pixels [c * 2.025, (c + 1) * 2.025).
    assert rows.min() == int(np.ceil((100 + 0.5) / (968 / 480) - 0.5))
    assert cols.min() == int(np.ceil((200 + 0.5) / 2.025 - 0.5))


# Poses and transforms.


def test_poses_and_transforms():
    pose = orbit((0, 0, 0), 1.0, 0.5, [30])[0]
    assert is_valid_pose(pose)
    assert not is_valid_pose(np.full((4, 4), -np.inf))
    assert not is_valid_pose(np.eye(3)) and not is_valid_pose(None)
    assert not is_valid_pose(np.diag([2.0, 2.0, 2.0, 1.0]))  # not a rotation
    points = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    moved = transform_points(points, pose)
    assert moved.dtype == np.float32
    np.testing.assert_allclose(moved, points @ pose[:3, :3].T + pose[:3, 3], atol=1e-5)
    np.testing.assert_allclose(transform_points(moved, np.linalg.inv(pose)), points, atol=1e-5)


# One frame.


def test_unoccluded_object_region_matches_truth():
    scene = single_object_scene()
    pose = orbit(TARGET.center, 1.2, 1.0, [-60])[0]
    points, _ = world_points(scene, pose)
    region = extract_region(points)
    truth = scene.visible_surface(1, [pose], DEPTH_INTRINSICS)
    assert_matches_truth(region, truth)
    # The camera sees the top and two sides, so the oriented box is the whole box.
    np.testing.assert_allclose(np.sort(region.obb_size), np.sort(TARGET.size), atol=0.02)
    np.testing.assert_allclose(np.linalg.det(region.obb_rotation), 1.0, atol=1e-6)
    local = (region.points - region.obb_center) @ region.obb_rotation
    assert np.all(np.abs(local) <= region.obb_size / 2 + 1e-4)
    assert region.points.dtype == np.float32 and region.points.shape[1] == 3
    assert len(region.points) < region.point_count <= len(points)  # down-sampled; counts mask points


def test_cylinder_region_matches_truth():
    scene = single_object_scene()
    pose = orbit(CYLINDER.center, 0.9, 0.8, [200])[0]
    points, _ = world_points(scene, pose, label=2)
    region = extract_region(points)
    assert_matches_truth(region, scene.visible_surface(2, [pose], DEPTH_INTRINSICS))


def test_region_in_camera_frame_is_the_same_surface():
    scene = single_object_scene()
    pose = orbit(TARGET.center, 1.2, 1.0, [-60])[0]
    depth_m, mask = observe(scene, pose)
    region = extract_region(backproject_mask(mask, depth_m, DEPTH_INTRINSICS))
    truth = scene.visible_surface(1, [pose], DEPTH_INTRINSICS)
    # Voxels not aligned with the faces weigh them slightly differently: 1.5 cm here.
    centroid = transform_points(region.centroid[None], pose)[0]
    assert np.linalg.norm(centroid - truth.mean(axis=0)) <= 0.015
    np.testing.assert_allclose(np.sort(region.obb_size), np.sort(TARGET.size), atol=0.02)


def test_color_resolution_mask_gives_the_same_region():
    scene = single_object_scene()
    pose = orbit(TARGET.center, 1.2, 1.0, [-60])[0]
    depth_m, depth_mask = observe(scene, pose)
    _, color_labels = scene.render(COLOR_INTRINSICS, pose)
    color_mask = color_labels == 1
    assert color_mask.shape == (968, 1296)
    # Resampled onto the depth grid, the colour mask is the depth-resolution mask but for edge pixels.
    assert np.count_nonzero(resample_mask(color_mask, 480, 640) != depth_mask) < 0.01 * depth_mask.sum()
    # Nearest resampling reads the colour label up to half a colour pixel away from the depth
    # pixel's centre, so along the outline some depth pixels see the floor: one pixel of
    # erosion, which real (soft-edged) masks need anyway, removes that bleed.
    a = extract_region(backproject_mask(depth_mask, depth_m, DEPTH_INTRINSICS, erode_pixels=1))
    b = extract_region(backproject_mask(color_mask, depth_m, DEPTH_INTRINSICS, erode_pixels=1))
    np.testing.assert_allclose(a.centroid, b.centroid, atol=0.002)
    np.testing.assert_allclose(a.aabb_size, b.aabb_size, atol=0.005)
    np.testing.assert_allclose(np.sort(a.obb_size), np.sort(b.obb_size), atol=0.005)
    assert abs(a.point_count - b.point_count) < 0.01 * a.point_count
    # Colour intrinsics work too: they are scaled to the depth grid.
    c = extract_region(backproject_mask(color_mask, depth_m, COLOR_INTRINSICS, erode_pixels=1))
    np.testing.assert_allclose(b.centroid, c.centroid, atol=1e-6)


def test_16uc1_and_32fc1_give_the_same_region():
    scene = single_object_scene()
    pose = orbit(TARGET.center, 1.2, 1.0, [-60])[0]
    depth, labels = scene.render(DEPTH_INTRINSICS, pose)
    mask = labels == 1
    millimetres = np.round(depth * 1000).astype(np.uint16)  # the 16UC1 message
    meters = millimetres.astype(np.float32) / 1000  # the same depth as 32FC1
    meters[millimetres == 0] = np.nan
    a = extract_region(backproject_mask(mask, depth_to_meters(millimetres), DEPTH_INTRINSICS))
    b = extract_region(backproject_mask(mask, depth_to_meters(meters), DEPTH_INTRINSICS))
    np.testing.assert_allclose(a.centroid, b.centroid, atol=1e-4)
    np.testing.assert_allclose(a.aabb_size, b.aabb_size, atol=1e-4)
    assert a.point_count == b.point_count


def test_extraction_keeps_the_cluster_with_most_mask_points():
    rng = np.random.default_rng(0)
    target = rng.uniform([0, 0, 1.0], [0.2, 0.2, 1.01], size=(4000, 3))
    bleed = rng.uniform([0.5, 0, 2.0], [0.6, 0.1, 2.01], size=(500, 3))  # background behind the edge
    outliers = rng.uniform(-3, 3, size=(5, 3))
    region = extract_region(np.concatenate([target, bleed, outliers]))
    np.testing.assert_allclose(region.centroid, [0.1, 0.1, 1.005], atol=0.005)
    assert region.aabb_size[0] < 0.21 and region.point_count <= 4000
    # Clusters are compared by the mask points they hold, not by their voxels: a patch of a
    # quarter of the target's area holding more of the points wins.
    dense = rng.uniform([0.5, 0, 2.0], [0.6, 0.1, 2.01], size=(6000, 3))
    region = extract_region(np.concatenate([target, dense]))
    np.testing.assert_allclose(region.centroid, [0.55, 0.05, 2.005], atol=0.005)


def test_fast_clustering_finds_the_same_clusters_as_dbscan_on_voxels():
    rng = np.random.default_rng(1)
    target = rng.uniform([0, 0, 1.0], [0.2, 0.2, 1.01], size=(4000, 3))
    far = rng.uniform([0.3, 0, 1.0], [0.35, 0.05, 1.01], size=(600, 3))  # 10 cm away
    noise = rng.uniform([-1, -1, 0.5], [1, 1, 0.6], size=(8, 3))  # isolated points: DBSCAN noise
    points = np.concatenate([target, far, noise])
    exact = extract_region(points, fast_clustering=False)
    fast = extract_region(points)
    assert fast.point_count == exact.point_count
    np.testing.assert_allclose(fast.centroid, exact.centroid, atol=1e-9)
    # The far patch alone (fewer mask points) is its own cluster in both.
    alone = extract_region(np.concatenate([far, noise, target[:300]]))
    assert alone.centroid[0] > 0.3 and alone.point_count <= 600


def test_extraction_of_nothing():
    assert extract_region(np.zeros((0, 3))) is None
    assert extract_region(np.full((10, 3), np.nan)) is None
    assert extract_region(np.random.default_rng(0).uniform(-5, 5, size=(8, 3))) is None  # DBSCAN noise only
    line = np.array([[0, 0, 1.0], [0.01, 0, 1.0], [0.02, 0, 1.0]])
    few = extract_region(line, cluster_min_points=1, outlier_neighbors=0)
    assert few.point_count == 3 and np.isfinite(few.obb_size).all()


def test_flat_target_gets_a_thin_oriented_box():
    """A poster on a wall, tilted in the frame: one plane, no volume."""
    rng = np.random.default_rng(2)
    u, v = rng.uniform(0, 0.4, 3000), rng.uniform(0, 0.3, 3000)
    pose = orbit((0, 0, 0), 1.0, 0.4, [25])[0]
    points = transform_points(np.stack([u, v, np.full_like(u, 1.5)], 1), pose)
    region = extract_region(points)
    np.testing.assert_allclose(np.sort(region.obb_size), [0.0, 0.3, 0.4], atol=0.012)


def test_voxel_downsample_means_and_counts():
    points = np.array([[0.001, 0.001, 0.001], [0.003, 0.005, 0.007], [0.5, 0.5, 0.5]])
    means, counts = voxel_downsample(points, 0.01)
    order = np.argsort(counts)
    np.testing.assert_allclose(means[order], [[0.5, 0.5, 0.5], [0.002, 0.003, 0.004]])
    np.testing.assert_array_equal(counts[order], [1, 2])


# Several frames.


def fusion_views():
    """Three views of the target; in the first two the occluder hides part of it."""
    return orbit(TARGET.center, 1.2, 0.9, [-110, -60, 30])


def test_occluder_hides_part_of_the_target():
    scene, poses = occluded_scene(), fusion_views()
    clear = Scene(objects=[TARGET, CYLINDER])
    for pose in poses[:2]:
        hidden = observe(clear, pose)[1] & (observe(scene, pose, label=3)[1])
        assert hidden.sum() > 0.05 * observe(clear, pose)[1].sum()


def test_fused_region_with_partial_occlusion_matches_truth():
    scene, poses = occluded_scene(), fusion_views()
    fusion = RegionFusion()
    for pose in poses:
        points, depth_m = world_points(scene, pose)
        assert fusion.add_view(points, depth_m, DEPTH_INTRINSICS, pose)
    region = fusion.region()
    assert_matches_truth(region, scene.visible_surface(1, poses, DEPTH_INTRINSICS))
    np.testing.assert_allclose(np.sort(region.obb_size), np.sort(TARGET.size), atol=0.02)


def coverage(points, truth, radius=0.01):
    """Fraction of the true visible surface samples within `radius` of some fused point."""
    import open3d as o3d

    tree = o3d.geometry.KDTreeFlann(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64))))
    return np.mean([tree.search_radius_vector_3d(sample, radius)[0] > 0 for sample in truth[::7]])


def test_coverage_improves_with_more_views():
    scene, poses = occluded_scene(), fusion_views()
    truth = scene.visible_surface(1, poses, DEPTH_INTRINSICS)
    fusion = RegionFusion()
    covered = []
    for pose in poses:
        points, depth_m = world_points(scene, pose)
        fusion.add_view(points, depth_m, DEPTH_INTRINSICS, pose)
        covered.append(coverage(fusion.points(), truth))
    assert covered[0] < covered[1] < covered[2]
    assert covered[2] > 0.95


def voxels(points, size=0.01):
    """The set of voxel indices occupied by points (fused points are voxel means: one each)."""
    return {tuple(index) for index in np.floor(points / size).astype(int)}


def test_occlusion_does_not_erase_fused_points():
    scene = occluded_scene()
    clear_view, blocked_view = orbit(TARGET.center, 1.2, 0.9, [30, -75])
    fusion = RegionFusion()
    points, depth_m = world_points(scene, clear_view)
    fusion.add_view(points, depth_m, DEPTH_INTRINSICS, clear_view)
    before = voxels(fusion.points())
    points, depth_m = world_points(scene, blocked_view)
    fusion.add_view(points, depth_m, DEPTH_INTRINSICS, blocked_view)
    after = voxels(fusion.points())
    # The blocked view sees under half of what the clear one saw and a quarter of its view of
    # the target is hidden; every voxel it cannot see, or sees inside its mask, stays.
    assert before <= after and len(after) > len(before)


def test_fusion_drops_mask_bleed_that_other_views_contradict():
    scene, poses = single_object_scene(), orbit(TARGET.center, 1.2, 0.9, [-60, -30, -90, 30])
    fusion = RegionFusion()
    floor_voxels = []
    for index, pose in enumerate(poses):
        depth_m, mask = observe(scene, pose)
        if index == 0:  # the first mask spills onto the floor around the box
            rows, cols = np.nonzero(mask)
            mask[max(rows.min() - 15, 0) : rows.max() + 15, max(cols.min() - 15, 0) : cols.max() + 15] = True
        points = transform_points(backproject_mask(mask, depth_m, DEPTH_INTRINSICS), pose)
        fusion.add_view(points, depth_m, DEPTH_INTRINSICS, pose)
        floor_voxels.append(np.count_nonzero(fusion.points()[:, 2] < 0.005))
    # Kept while only the first view has seen it (1 of 1, then 1 of 2 views), dropped once
    # most views that see the floor see it outside their masks. What stays is floor that
    # the box hides from the other views (or that lies within depth_tolerance behind it).
    assert floor_voxels[0] > 1000 and floor_voxels[1] >= 0.99 * floor_voxels[0]
    assert floor_voxels[3] < 0.2 * floor_voxels[0]
    # The box itself is all there.
    box = voxels(np.concatenate([world_points(scene, pose)[0] for pose in poses]))
    assert len(box - voxels(fusion.points())) < 0.01 * len(box)


def test_fusion_skips_invalid_poses_and_resets(caplog):
    scene = single_object_scene()
    pose = orbit(TARGET.center, 1.2, 0.9, [-60])[0]
    points, depth_m = world_points(scene, pose)
    fusion = RegionFusion()
    assert fusion.region() is None and len(fusion.points()) == 0
    with caplog.at_level(logging.WARNING, logger="lisa_ros.geometry"):
        assert not fusion.add_view(points, depth_m, DEPTH_INTRINSICS, np.full((4, 4), -np.inf))
    assert "invalid camera pose" in caplog.text
    assert fusion.view_count == 0 and fusion.voxel_count == 0
    assert fusion.add_view(points, depth_m, DEPTH_INTRINSICS, pose)
    assert fusion.view_count == 1 and len(fusion.points()) > 100
    fusion.add_view(np.zeros((0, 3)), depth_m, DEPTH_INTRINSICS, pose)  # an empty mask is a view too
    assert fusion.view_count == 2
    fusion.reset()
    assert fusion.view_count == 0 and len(fusion.points()) == 0


def test_visibility_test_respects_occlusion_and_tolerance():
    scene = occluded_scene()
    pose = orbit(TARGET.center, 1.2, 0.9, [-90])[0]
    depth_m, _ = observe(scene, pose)
    truth_all = TARGET.surface_samples(0.01)
    seen = scene.visible_surface(1, [pose], DEPTH_INTRINSICS, spacing=0.01)
    visible, _, _ = visible_points(truth_all, depth_m, DEPTH_INTRINSICS, pose, depth_tolerance=0.02)
    # Every sample the ray caster sees passes; the far faces (>= 20 cm behind) fail.
    seen_set = {tuple(p) for p in np.round(seen, 6)}
    is_seen = np.array([tuple(p) in seen_set for p in np.round(truth_all, 6)])
    assert visible[is_seen].mean() > 0.97
    assert visible[~is_seen].mean() < 0.1
