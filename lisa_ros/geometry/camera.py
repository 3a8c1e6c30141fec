"""The pinhole camera: intrinsics, and camera-frame points projected onto pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of one image size (no distortion: ScanNet and rectified ROS images).

    fx, fy (float): focal lengths in pixels; cx, cy (float): principal point in pixels
    (pixel centres at integer coordinates); width, height (int): the image size they hold for.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> "CameraIntrinsics":
        """From a row-major 3x3 K with 9 entries, as `sensor_msgs/CameraInfo.k`."""
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if k.size != 9:
            raise ValueError(f"K must have 9 entries (row-major 3x3), got {k.size}")
        return cls.from_matrix(k.reshape(3, 3), width, height)

    @classmethod
    def from_matrix(cls, matrix, width: int, height: int) -> "CameraIntrinsics":
        """From a 3x3 K or a ScanNet 4x4 intrinsic matrix (`intrinsic/intrinsic_depth.txt`)."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape not in ((3, 3), (4, 4)):
            raise ValueError(f"expected a 3x3 or 4x4 intrinsic matrix, got shape {m.shape}")
        intrinsics = cls(float(m[0, 0]), float(m[1, 1]), float(m[0, 2]), float(m[1, 2]), int(width), int(height))
        if not (intrinsics.fx > 0 and intrinsics.fy > 0 and intrinsics.width > 0 and intrinsics.height > 0):
            raise ValueError(f"invalid intrinsics {intrinsics} (a CameraInfo with an all-zero K is uncalibrated)")
        return intrinsics

    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """The same camera for an image resized to `width` x `height` (e.g. 1296x968 colour -> 640x480 depth).

        Pixel areas map onto each other, so centres move as c' = (c + 0.5) * s - 0.5.
        """
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, int(width), int(height)
        )

    def matrix(self) -> np.ndarray:
        """The 3x3 K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def project_to_pixels(points_camera: np.ndarray, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(rows int64 [N], cols int64 [N]): the nearest pixel of each camera-frame point [N, 3].

    The points must lie in front of the camera (z > 0); pixels may fall outside the image.
    """
    cols = np.rint(points_camera[:, 0] / points_camera[:, 2] * intrinsics.fx + intrinsics.cx).astype(np.int64)
    rows = np.rint(points_camera[:, 1] / points_camera[:, 2] * intrinsics.fy + intrinsics.cy).astype(np.int64)
    return rows, cols
