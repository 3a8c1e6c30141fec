"""A target's points fused over several views in a world-frame voxel grid, with visibility votes."""

from __future__ import annotations

import logging

import numpy as np

from .camera import CameraIntrinsics, project_to_pixels
from .poses import is_valid_pose, transform_points
from .region import TargetRegion, extract_region
from .visibility import visible_points
from .voxels import voxel_keys

logger = logging.getLogger(__name__)


class RegionFusion:
    """A target's points accumulated over frames in a world-frame voxel grid.

    Each view adds the target's points (its mask back-projected and moved to the world
    frame) and votes on every voxel collected so far:
      * seen: the voxel passes the visibility test of that frame (`visible_points`: it
        projects into the image and its depth agrees with the observed depth within
        `depth_tolerance`). A voxel hidden behind something nearer is not seen, so
        occlusion does not erase it.
      * hit: seen and inside the view's target footprint (the pixels the view's own points
        project to), or holding some of the view's points.
    `points()` keeps the voxels hit in at least `min_ratio` of the views that saw them,
    which drops a mask's bleed onto the background once other views disagree.

    Limits: votes are cast when a view arrives (no depth images are kept), so a voxel
    first collected in view k was never checked against views 1..k-1; and the loose
    ScanNet tolerance (0.2 m) counts a surface up to 20 cm behind the observed one as
    seen, e.g. a thin object's back side (then inside the footprint: a hit) or the floor
    just behind an object.

    Arguments:
      voxel_size (float): grid size in metres.
      depth_tolerance (float): metres, for the visibility test (ScanNet lifting uses 0.2).
      min_ratio (float): fraction of seeing views that must hit a voxel, in (0, 1].
    """

    def __init__(self, voxel_size: float = 0.01, depth_tolerance: float = 0.2, min_ratio: float = 0.5):
        if voxel_size <= 0 or depth_tolerance <= 0 or not 0 < min_ratio <= 1:
            raise ValueError("voxel_size and depth_tolerance must be positive and min_ratio in (0, 1]")
        self.voxel_size = float(voxel_size)
        self.depth_tolerance = float(depth_tolerance)
        self.min_ratio = float(min_ratio)
        self.reset()

    def reset(self) -> None:
        """Forget every view (a new command or a new target)."""
        self._keys = np.zeros(0, dtype=np.int64)  # sorted voxel keys
        self._sums = np.zeros((0, 3), dtype=np.float64)  # sum of the points in each voxel
        self._counts = np.zeros(0, dtype=np.int64)  # points in each voxel
        self._hits = np.zeros(0, dtype=np.int32)
        self._seen = np.zeros(0, dtype=np.int32)
        self.view_count = 0

    @property
    def voxel_count(self) -> int:
        """Voxels collected so far, kept or not."""
        return int(self._keys.size)

    def add_view(
        self,
        points_world: np.ndarray,
        depth_m: np.ndarray,
        intrinsics: CameraIntrinsics,
        camera_to_world: np.ndarray,
    ) -> bool:
        """Add one frame.

        Arguments:
          points_world (np.ndarray): [N, 3] the target's points in this frame, world frame
            (`transform_points(backproject_mask(...), camera_to_world)`); may be empty.
          depth_m (np.ndarray): float32 HxW metres (NaN invalid) of this frame.
          intrinsics (CameraIntrinsics): of the depth image.
          camera_to_world (np.ndarray): 4x4 pose of this frame.

        Returns:
          bool: False when the view was skipped (invalid pose, logged).
        """
        if not is_valid_pose(camera_to_world):
            logger.warning("RegionFusion: skipping a view with an invalid camera pose")
            return False
        depth_m = np.asarray(depth_m)
        points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        points = points[np.all(np.isfinite(points), axis=1)]

        # 1. Merge this view's points into the grid.
        added = np.zeros(0, dtype=np.int64)
        if len(points):
            keys = voxel_keys(points, self.voxel_size)
            new_keys, inverse = np.unique(keys, return_inverse=True)
            sums = np.stack(
                [np.bincount(inverse, points[:, axis], minlength=new_keys.size) for axis in range(3)], axis=1
            )
            counts = np.bincount(inverse, minlength=new_keys.size)
            self._merge(new_keys)
            added = np.searchsorted(self._keys, new_keys)
            self._sums[added] += sums
            self._counts[added] += counts

        # 2. Every voxel votes: seen in this view? inside this view's footprint?
        if self._keys.size:
            visible, rows, cols = visible_points(
                self._means(), depth_m, intrinsics, camera_to_world, self.depth_tolerance
            )
            footprint = self._footprint(points, depth_m.shape, intrinsics, camera_to_world)
            hit = visible & footprint[rows, cols]
            hit[added] = True  # they hold this view's points: hit (and so seen) by definition
            self._seen += (visible | hit).astype(np.int32)
            self._hits += hit.astype(np.int32)
        self.view_count += 1
        return True

    def points(self) -> np.ndarray:
        """float32 [M, 3]: one point (the mean) per kept voxel, in the world frame."""
        return self.points_and_hits()[0]

    def points_and_hits(self) -> tuple[np.ndarray, np.ndarray]:
        """`points()` and, per point, the number of views that hit its voxel (int [M])."""
        keep = (self._hits > 0) & (self._hits >= self.min_ratio * self._seen)
        return self._means()[keep].astype(np.float32), self._hits[keep].astype(np.int64)

    def region(self, **extract_kwargs) -> TargetRegion | None:
        """`extract_region(self.points(), **extract_kwargs)`; None before any point."""
        points = self.points()
        return extract_region(points, **extract_kwargs) if len(points) else None

    def _means(self) -> np.ndarray:
        return self._sums / np.maximum(self._counts, 1)[:, None]

    def _merge(self, new_keys: np.ndarray) -> None:
        """Insert the keys not yet in the grid, keeping every array in key order."""
        fresh = np.setdiff1d(new_keys, self._keys, assume_unique=True)
        if fresh.size == 0:
            return
        keys = np.concatenate([self._keys, fresh])
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._sums = np.concatenate([self._sums, np.zeros((fresh.size, 3))])[order]
        self._counts = np.concatenate([self._counts, np.zeros(fresh.size, np.int64)])[order]
        self._hits = np.concatenate([self._hits, np.zeros(fresh.size, np.int32)])[order]
        self._seen = np.concatenate([self._seen, np.zeros(fresh.size, np.int32)])[order]

    @staticmethod
    def _footprint(points_world, shape, intrinsics, camera_to_world) -> np.ndarray:
        """bool HxW: the pixels this view's points project to, grown by one pixel (rounding)."""
        footprint = np.zeros(shape, dtype=bool)
        if len(points_world) == 0:
            return footprint
        intrinsics = intrinsics.scaled(shape[1], shape[0])
        camera = transform_points(points_world, np.linalg.inv(np.asarray(camera_to_world, dtype=np.float64)))
        camera = camera[camera[:, 2] > 1e-6]
        rows, cols = project_to_pixels(camera, intrinsics)
        inside = (cols >= 0) & (cols < shape[1]) & (rows >= 0) & (rows < shape[0])
        footprint[rows[inside], cols[inside]] = True
        grown = footprint.copy()
        grown[1:] |= footprint[:-1]
        grown[:-1] |= footprint[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        return grown
