"""Masked depth pixels -> 3D points in the camera optical frame (masks resampled onto the depth grid)."""

from __future__ import annotations

import numpy as np

from .camera import CameraIntrinsics


def resample_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resampling of a bool HxW mask onto a `height` x `width` grid.

    Each target pixel takes the source pixel under its centre (the same pixel-area
    convention as `CameraIntrinsics.scaled`), so a 1296x968 colour mask lands on a
    640x480 depth grid where the depth intrinsics put it.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == (height, width):
        return mask
    rows = np.minimum(((np.arange(height) + 0.5) * (mask.shape[0] / height)).astype(np.intp), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (mask.shape[1] / width)).astype(np.intp), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` eroded by a (2 * pixels + 1) square; the image border does not erode."""
    try:
        import cv2
    except ImportError:  # numpy: a box sum over an integral image, pixels outside count as set
        side = 2 * pixels + 1
        padded = np.pad(mask, pixels, constant_values=True).astype(np.int32)
        integral = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        box = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
        return box == side * side
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)


def backproject_mask(
    mask: np.ndarray,
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    min_depth: float = 0.1,
    max_depth: float = 10.0,
    erode_pixels: int = 0,
) -> np.ndarray:
    """The 3D points of the masked pixels that have valid depth, in the camera optical frame.

    Arguments:
      mask (np.ndarray): bool HxW at any resolution (e.g. the colour image's); it is
        resampled to the depth grid (nearest, `resample_mask`) when the sizes differ.
      depth_m (np.ndarray): float32 hxw depth in metres, NaN invalid (`depth_to_meters`).
      intrinsics (CameraIntrinsics): of the depth image; scaled to depth_m's size if
        they were given for another size (a colour CameraInfo with registered depth).
      min_depth, max_depth (float): metres; depths outside [min_depth, max_depth] are skipped.
      erode_pixels (int): erode the mask by this many depth pixels first, so that edge
        pixels, whose depth often belongs to the background, are not used.

    Returns:
      np.ndarray: float32 [N, 3] points (x right, y down, z forward; metres), in row-major
      pixel order.
    """
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2:
        raise ValueError(f"depth_m must be HxW, got shape {depth_m.shape}")
    height, width = depth_m.shape
    mask = resample_mask(mask, height, width)
    if erode_pixels > 0:
        mask = _erode(mask, int(erode_pixels))
    intrinsics = intrinsics.scaled(width, height)

    rows, cols = np.nonzero(mask)
    z = depth_m[rows, cols].astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):  # NaN compares False: invalid depth is dropped here
        keep = (z >= min_depth) & (z <= max_depth)
    rows, cols, z = rows[keep], cols[keep], z[keep]
    points = np.empty((z.size, 3), dtype=np.float32)
    points[:, 0] = (cols.astype(np.float32) - np.float32(intrinsics.cx)) * z / np.float32(intrinsics.fx)
    points[:, 1] = (rows.astype(np.float32) - np.float32(intrinsics.cy)) * z / np.float32(intrinsics.fy)
    points[:, 2] = z
    return points
