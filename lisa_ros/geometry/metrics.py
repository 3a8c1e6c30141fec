"""3D grounding metrics: point IoU of vertex selections, 3D box IoU, accuracy at an IoU threshold."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def point_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two vertex selections (bool [V] each); 1.0 when both are empty."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {gt.shape}")
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def box_iou_3d(center_a, size_a, center_b, size_b) -> float:
    """IoU of two axis-aligned 3D boxes given as centre [3] and size [3] (metres)."""
    boxes = (center_a, size_a, center_b, size_b)
    center_a, size_a, center_b, size_b = (np.asarray(v, dtype=np.float64).reshape(3) for v in boxes)
    if np.any(size_a < 0) or np.any(size_b < 0):
        raise ValueError("box sizes must be non-negative")
    low = np.maximum(center_a - size_a / 2, center_b - size_b / 2)
    high = np.minimum(center_a + size_a / 2, center_b + size_b / 2)
    intersection = float(np.prod(np.clip(high - low, 0, None)))
    union = float(np.prod(size_a) + np.prod(size_b)) - intersection
    return intersection / union if union > 0 else 0.0


def accuracy_at(ious: Sequence[float], threshold: float) -> float:
    """Fraction of IoUs >= threshold (Acc@0.25, Acc@0.5 as in ScanRefer); NaN for no IoUs."""
    ious = np.asarray(ious, dtype=np.float64).reshape(-1)
    return float(np.mean(ious >= threshold)) if ious.size else float("nan")
