"""Mask evaluation following the ReasonSeg protocol of the LISA paper.

Two numbers are reported over a set of (prediction, target) mask pairs:

* gIoU: the mean of the per-mask IoUs.
* cIoU: cumulative intersection over cumulative union, pooled over all masks
  (the reference's foreground-class cIoU).

Targets are uint8 HxW arrays with 0 (background), 1 (object) and
``IGNORE_LABEL`` (255); ignored pixels count neither for nor against a
prediction. A mask pair whose union is empty (no object, nothing predicted)
scores IoU 1.0, the reference's "no-object" rule.

This module is numpy-only so evaluation never requires torch.
"""

from __future__ import annotations

import numpy as np

IGNORE_LABEL = 255

_IOU_EPS = 1e-5
_CIOU_EPS = 1e-10


def _check_pair(pred_mask: np.ndarray, gt_mask: np.ndarray) -> None:
    if pred_mask.ndim != 2 or gt_mask.ndim != 2 or pred_mask.shape != gt_mask.shape:
        raise ValueError(
            "expected two 2-D masks of the same shape, got pred "
            f"{pred_mask.shape} and gt {gt_mask.shape}"
        )


def intersection_union(pred_mask, gt_mask) -> tuple[int, int]:
    """Intersection and union of one mask pair, ignoring ``IGNORE_LABEL`` pixels.

    Args:
        pred_mask: HxW bool (or 0/1 integer) predicted mask.
        gt_mask: HxW uint8 target with values 0, 1 or 255 (ignore).

    Returns:
        ``(I, U)`` as ints, counted over pixels where ``gt_mask != 255``.
    """
    pred = np.asarray(pred_mask)
    gt = np.asarray(gt_mask)
    _check_pair(pred, gt)
    valid = gt != IGNORE_LABEL
    pred = (pred != 0) & valid
    target = (gt == 1) & valid
    inter = int(np.count_nonzero(pred & target))
    union = int(np.count_nonzero(pred)) + int(np.count_nonzero(target)) - inter
    return inter, union


def _iou(inter: int, union: int) -> float:
    if union == 0:
        return 1.0
    return inter / (union + _IOU_EPS)


def mask_iou(pred_mask, gt_mask) -> float:
    """IoU of one mask pair: ``I / (U + 1e-5)``, exactly 1.0 when ``U == 0``.

    Shapes and dtypes as in :func:`intersection_union`.
    """
    return _iou(*intersection_union(pred_mask, gt_mask))


class SegmentationMeter:
    """Accumulates gIoU / cIoU over many masks (ReasonSeg protocol of the LISA paper).

    The whole state is four numbers, exposed by :meth:`state` as a float64
    vector so distributed evaluation can all-reduce (sum) it and rebuild a
    meter with :meth:`from_state`.
    """

    def __init__(self) -> None:
        self.sum_intersection = 0.0
        self.sum_union = 0.0
        self.sum_iou = 0.0
        self._count = 0.0

    def update(self, pred_masks, gt_masks) -> None:
        """Add one HxW mask pair, or N pairs given as [N,H,W] stacks (paired in order)."""
        preds = np.asarray(pred_masks)
        gts = np.asarray(gt_masks)
        if preds.ndim == 2 and gts.ndim == 2:
            preds, gts = preds[None], gts[None]
        if preds.ndim != 3 or gts.ndim != 3:
            raise ValueError(
                "expected HxW masks or [N,H,W] stacks, got pred "
                f"{preds.shape} and gt {gts.shape}"
            )
        if preds.shape[0] != gts.shape[0]:
            raise ValueError(
                f"got {preds.shape[0]} predicted masks but {gts.shape[0]} target "
                f"masks (pred {preds.shape}, gt {gts.shape})"
            )
        for pred, gt in zip(preds, gts):
            inter, union = intersection_union(pred, gt)
            self.sum_intersection += inter
            self.sum_union += union
            self.sum_iou += _iou(inter, union)
            self._count += 1

    @property
    def count(self) -> int:
        return int(round(self._count))

    @property
    def giou(self) -> float:
        if self._count == 0:
            return 0.0
        return self.sum_iou / self._count

    @property
    def ciou(self) -> float:
        return self.sum_intersection / (self.sum_union + _CIOU_EPS)

    def state(self) -> np.ndarray:
        """``[sum_I, sum_U, sum_iou, count]`` as a 1-D float64 array."""
        return np.array(
            [self.sum_intersection, self.sum_union, self.sum_iou, self._count],
            dtype=np.float64,
        )

    @classmethod
    def from_state(cls, state) -> "SegmentationMeter":
        values = np.asarray(state, dtype=np.float64).reshape(-1)
        if values.shape != (4,):
            raise ValueError(f"expected a state of 4 values, got shape {np.shape(state)}")
        meter = cls()
        meter.sum_intersection, meter.sum_union, meter.sum_iou, meter._count = (
            float(v) for v in values
        )
        return meter

    def merge(self, other: "SegmentationMeter") -> "SegmentationMeter":
        """Add ``other``'s masks into this meter; returns ``self``."""
        self.sum_intersection += other.sum_intersection
        self.sum_union += other.sum_union
        self.sum_iou += other.sum_iou
        self._count += other._count
        return self

    def as_dict(self) -> dict:
        return {"giou": self.giou, "ciou": self.ciou, "count": self.count}
