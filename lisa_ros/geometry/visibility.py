"""Which world points a depth frame saw: the ScanNet 2D-3D visibility test."""

from __future__ import annotations

import numpy as np

from .camera import CameraIntrinsics, project_to_pixels
from .poses import transform_points


def visible_points(
    points_world: np.ndarray,
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    camera_to_world: np.ndarray,
    depth_tolerance: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which world points a depth frame saw (the ScanNet 2D-3D visibility test).

    A point is visible when it projects inside the image in front of the camera, the
    depth there is valid, and |its camera depth - the observed depth| <= depth_tolerance
    (metres). Points hidden behind something nearer fail the test.

    Arguments:
      points_world (np.ndarray): [N, 3] world frame, metres.
      depth_m (np.ndarray): float32 HxW metres, NaN invalid.
      intrinsics (CameraIntrinsics): of the depth image (scaled to its size if need be).
      camera_to_world (np.ndarray): 4x4 pose of the frame.

    Returns:
      (visible bool [N], rows int [N], cols int [N]): the pixel each point projects to
      (nearest pixel; meaningful only where visible).
    """
    depth_m = np.asarray(depth_m)
    intrinsics = intrinsics.scaled(depth_m.shape[1], depth_m.shape[0])
    world_to_camera = np.linalg.inv(np.asarray(camera_to_world, dtype=np.float64))
    camera = transform_points(np.asarray(points_world, dtype=np.float64), world_to_camera)
    z = camera[:, 2]
    in_front = np.all(np.isfinite(camera), axis=1) & (z > 1e-6)
    safe = np.where(in_front[:, None], camera, 1.0)  # no NaN or division by zero below
    rows, cols = project_to_pixels(safe, intrinsics)
    inside = in_front & (cols >= 0) & (cols < depth_m.shape[1]) & (rows >= 0) & (rows < depth_m.shape[0])
    rows, cols = np.where(inside, rows, 0), np.where(inside, cols, 0)
    observed = depth_m[rows, cols]
    with np.errstate(invalid="ignore"):  # NaN observed depth: not visible
        visible = inside & (np.abs(z - observed) <= depth_tolerance)
    return visible, rows, cols
