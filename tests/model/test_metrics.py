import numpy as np
import pytest

from lisa_model.metrics import (
    IGNORE_LABEL,
    SegmentationMeter,
    intersection_union,
    mask_iou,
)


def _mask(shape, rows, cols, value=1, dtype=np.uint8):
    m = np.zeros(shape, dtype=dtype)
    m[rows, cols] = value
    return m


def test_identical_masks():
    gt = _mask((4, 4), slice(1, 3), slice(0, 3))
    assert intersection_union(gt.astype(bool), gt) == (6, 6)
    assert mask_iou(gt.astype(bool), gt) == pytest.approx(1.0, abs=1e-5)


def test_disjoint_masks():
    pred = _mask((4, 4), slice(0, 2), slice(0, 4), dtype=bool)
    gt = _mask((4, 4), slice(2, 4), slice(0, 4))
    assert intersection_union(pred, gt) == (0, 16)
    assert mask_iou(pred, gt) == 0.0


def test_partial_overlap():
    # pred: rows 0-1, cols 0-2 (6 px); gt: rows 0-1, cols 1-3 (6 px); overlap cols 1-2.
    pred = _mask((4, 4), slice(0, 2), slice(0, 3), dtype=bool)
    gt = _mask((4, 4), slice(0, 2), slice(1, 4))
    assert intersection_union(pred, gt) == (4, 8)
    assert mask_iou(pred, gt) == 4 / (8 + 1e-5)


def test_integer_prediction_accepted():
    pred = _mask((3, 3), 0, slice(0, 2), dtype=np.int64)
    gt = _mask((3, 3), 0, slice(1, 3))
    assert intersection_union(pred, gt) == (1, 3)


def test_empty_prediction_and_target_is_perfect():
    empty = np.zeros((5, 5), dtype=np.uint8)
    assert intersection_union(empty.astype(bool), empty) == (0, 0)
    assert mask_iou(empty.astype(bool), empty) == 1.0


def test_empty_prediction_with_object_scores_zero():
    gt = _mask((5, 5), 2, 2)
    assert mask_iou(np.zeros((5, 5), dtype=bool), gt) == 0.0


def test_ignore_label_excluded():
    gt = _mask((4, 4), 0, slice(0, 4))  # object: row 0
    gt[3, :] = IGNORE_LABEL
    pred = np.zeros((4, 4), dtype=bool)
    pred[0, :] = True
    pred[3, :] = True  # covers ignored pixels only: no penalty
    assert intersection_union(pred, gt) == (4, 4)
    assert mask_iou(pred, gt) == pytest.approx(1.0, abs=1e-5)
    # Ignored pixels are not object pixels either: leaving them out costs nothing.
    pred[3, :] = False
    assert intersection_union(pred, gt) == (4, 4)


def test_only_ignored_target_with_empty_prediction_is_perfect():
    gt = np.full((3, 3), IGNORE_LABEL, dtype=np.uint8)
    pred = np.ones((3, 3), dtype=bool)
    assert mask_iou(pred, gt) == 1.0


@pytest.mark.parametrize(
    "pred_shape, gt_shape",
    [((4, 4), (4, 5)), ((2, 4, 4), (2, 4, 4)), ((4,), (4,))],
)
def test_bad_shapes_raise(pred_shape, gt_shape):
    with pytest.raises(ValueError, match=r"pred .* gt "):
        intersection_union(np.zeros(pred_shape, bool), np.zeros(gt_shape, np.uint8))


def _two_mask_case():
    # Mask A: a perfect 1-pixel hit (I=1, U=1). Mask B: a 9-pixel miss (I=0, U=9).
    pred_a = _mask((3, 3), 0, 0, dtype=bool)
    gt_a = _mask((3, 3), 0, 0)
    pred_b = np.zeros((3, 3), dtype=bool)
    gt_b = np.ones((3, 3), dtype=np.uint8)
    return np.stack([pred_a, pred_b]), np.stack([gt_a, gt_b])


def test_meter_giou_is_mean_ciou_is_pooled():
    preds, gts = _two_mask_case()
    meter = SegmentationMeter()
    meter.update(preds, gts)
    assert meter.count == 2
    assert meter.giou == pytest.approx((1 / (1 + 1e-5) + 0.0) / 2)
    assert meter.ciou == pytest.approx(1 / 10)
    assert meter.as_dict() == {"giou": meter.giou, "ciou": meter.ciou, "count": 2}


def test_meter_single_pair_update():
    preds, gts = _two_mask_case()
    meter = SegmentationMeter()
    meter.update(preds[0], gts[0])
    meter.update(preds[1], gts[1])
    assert meter.count == 2
    assert meter.ciou == pytest.approx(0.1)


def test_empty_meter():
    meter = SegmentationMeter()
    assert meter.count == 0
    assert meter.giou == 0.0
    assert meter.ciou == 0.0


def test_meter_count_mismatch_raises():
    preds, gts = _two_mask_case()
    with pytest.raises(ValueError, match="2 target"):
        SegmentationMeter().update(preds[:1], gts)


def test_state_round_trip_and_merge():
    preds, gts = _two_mask_case()
    extra_pred = _mask((3, 3), slice(0, 2), 0, dtype=bool)
    extra_gt = _mask((3, 3), 0, slice(0, 3))

    full = SegmentationMeter()
    full.update(preds, gts)
    full.update(extra_pred, extra_gt)

    first, second = SegmentationMeter(), SegmentationMeter()
    first.update(preds, gts)
    second.update(extra_pred, extra_gt)

    state = first.state()
    assert state.dtype == np.float64 and state.shape == (4,)
    # What an all-reduce (sum) of the per-rank states would produce.
    reduced = SegmentationMeter.from_state(first.state() + second.state())
    merged = SegmentationMeter.from_state(state).merge(second)

    for meter in (reduced, merged):
        np.testing.assert_allclose(meter.state(), full.state())
        assert meter.as_dict() == pytest.approx(full.as_dict())
    assert full.count == 3
    assert full.state().tolist() == pytest.approx([2, 14, 1 / (1 + 1e-5) + 1 / (4 + 1e-5), 3])
