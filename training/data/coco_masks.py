"""COCO-style segmentations (polygons and RLE) to binary masks, and image reading.

Shared by the PACO-LVIS / PASCAL-Part readers (semantic_seg) and the refCOCO-family
reader (refer_seg).

- Polygons are rasterised by pycocotools (`pycocotools.mask.frPyObjects`), the
  official COCO code, so polygon masks match the datasets' own API pixel for
  pixel. It is imported on first use; a missing install raises an ImportError
  saying how to get it. Only polygons need it.
- RLE is decoded here (`rle_counts_from_string`, `mask_from_rle_counts`): COCO's
  compressed string is the run lengths, each written as 5-bit groups (low bits
  first, 0x20 = another group follows, 0x10 in the last group = negative), offset
  by 48, and from the fourth run on stored as the difference to the run two
  before; the runs alternate 0 and 1, start with 0, and go over the pixels in
  column-major (Fortran) order. pycocotools' own decode is not used because with
  NumPy 2 it warns that its `__array__` lacks the `copy` argument (a
  DeprecationWarning that a later NumPy may turn into an error); the tests check
  this decoder against pycocotools'.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _mask_api():
    try:
        from pycocotools import mask as mask_api
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "rasterising COCO-style polygon annotations needs pycocotools: pip install pycocotools"
        ) from error
    return mask_api


def segmentation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Rasterise one annotation's `segmentation` to a uint8 (height, width) 0/1 mask.

    Accepted forms (all that COCO, LVIS/PACO, PASCAL-Part and refCOCO/refCLEF use):
      - polygons: a list of flat [x0, y0, x1, y1, ...] lists in pixel coordinates;
        a polygon with integer corners covers the half-open box [x0, x1) x [y0, y1);
      - one RLE dict {"size": [h, w], "counts": ...} with "counts" either the
        compressed string (str or bytes) or the uncompressed run-length list
        (column-major runs starting with zeros, as COCO's iscrowd annotations);
      - a list of RLE dicts (refCLEF), unioned.
    An empty list gives an all-zero mask. Several parts are unioned (clipped to 1,
    not summed).
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    if segmentation is None or (isinstance(segmentation, list) and len(segmentation) == 0):
        return mask
    if isinstance(segmentation, dict):
        rles = [segmentation]
    elif isinstance(segmentation, list) and all(isinstance(part, dict) for part in segmentation):
        rles = list(segmentation)
    elif isinstance(segmentation, list) and all(isinstance(part, (list, tuple)) for part in segmentation):
        polygons = [[float(v) for v in part] for part in segmentation if len(part) >= 6]
        if not polygons:
            return mask
        rles = _mask_api().frPyObjects(polygons, height, width)
    else:
        raise ValueError(f"unrecognised segmentation of type {type(segmentation).__name__}")
    for rle in rles:
        if [int(v) for v in rle["size"]] != [height, width]:
            raise ValueError(f"RLE size {rle['size']} does not match the image ({height}, {width})")
        counts = rle["counts"]
        if not isinstance(counts, list):  # compressed string (str or bytes)
            counts = rle_counts_from_string(counts)
        mask |= mask_from_rle_counts(counts, height, width)
    return mask


def rle_counts_from_string(encoded) -> list[int]:
    """Run lengths of a compressed COCO RLE string (str or bytes); see the module doc."""
    data = encoded.encode("ascii") if isinstance(encoded, str) else bytes(encoded)
    counts: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise ValueError("truncated RLE string")
            group = data[position] - 48
            position += 1
            value |= (group & 0x1F) << shift
            shift += 5
            more = bool(group & 0x20)
            if not more and group & 0x10:
                value -= 1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def mask_from_rle_counts(counts: list[int], height: int, width: int) -> np.ndarray:
    """uint8 (height, width) 0/1 mask from uncompressed COCO RLE run lengths (column-major, zeros first)."""
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any() or counts.sum() != height * width:
        raise ValueError(f"RLE runs sum to {int(counts.sum())}, expected {height * width} pixels")
    values = (np.arange(len(counts)) % 2).astype(np.uint8)
    return np.repeat(values, counts).reshape(width, height).T.copy()


def read_rgb(path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_label_map(path) -> np.ndarray:
    """A label PNG (8-bit greyscale or palette indices) as an integer (H, W) array of raw values."""
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: expected a single-channel label PNG, got mode {image.mode}")
        return np.asarray(image).astype(np.int32)
