"""Depth images in metres: the one conversion of raw depth (16UC1 / 32FC1 arrays) that everything uses."""

from __future__ import annotations

import numpy as np


def depth_to_meters(depth: np.ndarray, depth_scale: float = 1000.0) -> np.ndarray:
    """A depth image in metres, float32 HxW, NaN where there is no measurement.

    Arguments:
      depth (np.ndarray): HxW (or HxWx1). Integer types (16UC1, ScanNet PNGs) are divided by
        `depth_scale` (units per metre; 1000 = millimetres) and 0 means invalid.
        Floating types (32FC1) are already metres; NaN, +-inf and values <= 0 are invalid.
      depth_scale (float): units per metre of integer depth.
    """
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise ValueError(f"depth must be HxW, got shape {depth.shape}")
    if np.issubdtype(depth.dtype, np.integer):
        if depth_scale <= 0:
            raise ValueError(f"depth_scale must be positive, got {depth_scale}")
        meters = depth.astype(np.float32) / np.float32(depth_scale)
        meters[depth <= 0] = np.nan
        return meters
    if np.issubdtype(depth.dtype, np.floating):
        meters = depth.astype(np.float32, copy=True)
        with np.errstate(invalid="ignore"):
            meters[~(np.isfinite(meters) & (meters > 0))] = np.nan
        return meters
    raise ValueError(f"unsupported depth dtype {depth.dtype}")
