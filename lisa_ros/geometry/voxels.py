"""Voxel grids anchored at the origin: packed voxel keys and per-voxel means."""

from __future__ import annotations

import numpy as np

# Voxel indices are packed into one int64 key, 21 bits per axis: +-2^20 voxels, i.e.
# +-10 km at 1 cm, far more than a robot's map.
_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)


def voxel_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """int64 [N]: one key per point naming its voxel (equal keys = same voxel; keys sort like (x, y, z) indices).

    Raises ValueError for points more than 2^20 voxels from the origin.
    """
    index = np.floor(points / voxel_size).astype(np.int64) + _KEY_OFFSET
    if index.size and (index.min() < 0 or index.max() >= (1 << _KEY_BITS)):
        raise ValueError("points lie too far from the origin for this voxel size")
    return (index[:, 0] << (2 * _KEY_BITS)) | (index[:, 1] << _KEY_BITS) | index[:, 2]


def voxel_downsample(points: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per occupied voxel of a grid anchored at the origin: the mean of its points.

    Returns:
      (means float64 [M, 3], counts int64 [M]): how many input points each voxel holds.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    keys = voxel_keys(points, voxel_size)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, points[:, axis], minlength=counts.size) for axis in range(3)], axis=1)
    return sums / counts[:, None], counts
