"""Warm-up of the 3D stage: one region extraction on synthetic data when the node is configured
(measured before it existed: the first command's 3D stage took 1.43 s, later ones 5 ms)."""

from __future__ import annotations

import numpy as np

from lisa_ros import geometry

from .regions import View


def warm_up_regions(lifter, image_size: tuple[int, int]) -> None:
    """Lift one mask to a 3D region (back-projection, open3d's down-sampling, outlier removal,
    clustering and oriented box) with `lifter` (a RegionLifter): a dome one metre away."""
    height, width = image_size
    rows, columns = np.mgrid[0:height, 0:width]
    radius = ((rows / height - 0.5) ** 2 + (columns / width - 0.5) ** 2) ** 0.5
    depth = (1.0 - 0.3 * np.clip(0.5 - radius, 0, None)).astype(np.float32)
    mask = np.zeros((height, width), bool)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
    focal = float(max(height, width))
    intrinsics = geometry.CameraIntrinsics(focal, focal, (width - 1) / 2, (height - 1) / 2, width, height)
    lifter.lift(mask, View(depth, intrinsics, None, "warm_up"))
