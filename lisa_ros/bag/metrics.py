"""Scores of a bag's answers against the script's ground truth, and latency statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lisa_ros.runtime.types import NS_PER_S, Result, Status

from .script import Truth


@dataclass
class Answer:
    """One command's result (answered at `log_time`, ns) with its ground truth and scores."""

    result: Result
    log_time: int
    truth: Truth | None = None
    iou: float | None = None
    iou_3d: float | None = None
    centroid_error: float | None = None  # metres
    overlay: str = ""  # the overlay PNG's path relative to the output folder ("" when none)


def prediction_mask(result: Result, height: int, width: int) -> np.ndarray:
    """bool [H,W]: the union of a result's masks (all false when it has none or is an error)."""
    if result.masks.ndim == 3 and result.masks.shape[0] and result.masks.shape[1:] == (height, width):
        return result.masks.any(axis=0)
    return np.zeros((height, width), bool)


def latency_values(answers: list[Answer]) -> dict[str, list[float]]:
    """Seconds per stage (stage -> one value per answer that is not an error), in answer order."""
    stages: dict[str, list[float]] = {}
    for item in answers:
        if item.result.status != Status.ERROR:
            for stage, seconds in item.result.timings.items():
                stages.setdefault(stage, []).append(float(seconds))
    return stages


def compute_metrics(answers: list[Answer], counts: dict, voxel_size: float, image_size: tuple[int, int]) -> dict:
    """gIoU/cIoU (lisa_model.metrics) over commands with 2D truth; over those with a 3D box,
    the IoU of the first region's axis-aligned box (grown by one voxel, metres) with it and the
    centroid error; latency statistics per stage (first_mask: to the first mask, total: to the
    whole answer, each from the start of answering); counts (with the answers cut at the context
    limit and the conversations dropped to make room). Fills each Answer's scores.

    `image_size` (H, W): the bag's images', the size of an answer without an image (an error).
    """
    from lisa_model.metrics import SegmentationMeter
    from lisa_ros.geometry import accuracy_at

    meter = SegmentationMeter()
    ious_3d, centroid_errors, missing_3d = [], [], 0
    for item in answers:
        if item.truth is None:
            continue
        if item.truth.has_2d:
            _score_2d(item, meter, image_size)
        if item.truth.has_3d:
            if _score_3d(item, voxel_size):
                centroid_errors.append(item.centroid_error)
            else:
                missing_3d += 1
            ious_3d.append(item.iou_3d)
    metrics = {"counts": dict(counts)}
    metrics["counts"].pop("messages_in", None)
    metrics["counts"]["answers_truncated"] = sum(item.result.truncated for item in answers)
    metrics["counts"]["conversation_resets"] = sum(item.result.conversation_reset for item in answers)
    metrics["segmentation_2d"] = meter.as_dict() if meter.count else None
    metrics["regions_3d"] = (
        {
            "count": len(ious_3d),
            "mean_box_iou": float(np.mean(ious_3d)),
            "acc_at_0.25": accuracy_at(ious_3d, 0.25),
            "acc_at_0.5": accuracy_at(ious_3d, 0.5),
            "without_region": missing_3d,
            "centroid_error_m": stats(centroid_errors),
        }
        if ious_3d
        else None
    )
    metrics["latency_s"] = {stage: stats(values) for stage, values in latency_values(answers).items()}
    metrics["commands"] = [_command_row(item) for item in answers]
    return metrics


def _score_2d(item: Answer, meter, image_size: tuple[int, int]) -> None:
    """The answer's mask IoU against its 2D truth, at the answered image's size (`image_size`
    without one); adds it to `meter`."""
    from lisa_model.metrics import mask_iou

    truth, result = item.truth, item.result
    height, width = result.image.shape[:2] if result.image is not None else image_size
    gt = truth.mask(height, width)
    pred = prediction_mask(result, height, width)
    meter.update(pred, gt)
    item.iou = float(mask_iou(pred, gt))


def _score_3d(item: Answer, voxel_size: float) -> bool:
    """The first region's box IoU and centroid error against the 3D truth; False (IoU 0) without a region."""
    region = next((r for r in item.result.regions if r is not None), None)
    if region is None:
        item.iou_3d = 0.0
        return False
    item.iou_3d, item.centroid_error = box_iou_of_region(region, item.truth.box_center, item.truth.box_size, voxel_size)
    return True


def box_iou_of_region(region, center, size, voxel_size: float) -> tuple[float, float]:
    """(IoU of the region's axis-aligned box with the box `center`, `size`; centroid error, metres)."""
    from lisa_ros.geometry import box_iou_3d

    # The points are voxel centres: the box they fill reaches half a voxel past them
    # (a flat face seen from one view still has a volume).
    grown = np.asarray(region.aabb_size, np.float64) + voxel_size
    iou = float(box_iou_3d(region.aabb_center, grown, center, size))
    return iou, float(np.linalg.norm(np.asarray(region.centroid) - center))


def _command_row(item: Answer) -> dict:
    """metrics.json's entry of one command."""
    result = item.result
    return {
        "id": int(result.command_id),
        "time_s": item.log_time / NS_PER_S,
        "command": result.command,
        "status": Status(result.status).name,
        "answer": result.answer,
        "error": result.error,
        "masks": int(result.masks.shape[0]),
        "iou": item.iou,
        "box_iou_3d": item.iou_3d,
        "centroid_error_m": item.centroid_error,
        "region_status": result.region_status,
        "truncated": result.truncated,
        "conversation_reset": result.conversation_reset,
        "first_mask_s": result.timings.get("first_mask"),
        "total_s": result.timings.get("total"),
    }


def stats(values) -> dict:
    """count, median, p90, max and mean of `values` (None each when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"count": 0, "median": None, "p90": None, "max": None, "mean": None}
    return {
        "count": int(values.size),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }
