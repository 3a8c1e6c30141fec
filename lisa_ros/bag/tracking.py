"""Live-target tracking over a bag: what each tracked image gave, scored against the script's `track` truth.

The runner records one `TrackedFrame` per tracked image (the pipeline's TrackingUpdate,
and optionally the masks of answering each target's command again on that image: the
baseline tracking must match). `tracking_metrics` scores, per command with a `track`
truth, its first target on every later image with ground truth: the mask's IoU (an image
where the target was not found scores 0), the fused 3D region's box IoU and centroid
error after k views against the single view of the answer, re-asks, and per-image
latency. `write_strips` draws each command's tracked images side by side for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lisa_ros.runtime.tracking import TargetStatus, TrackingUpdate
from lisa_ros.runtime.types import NS_PER_S

from .metrics import Answer, box_iou_of_region, stats

# Images per command in the report's strip (evenly spread over its tracked images).
STRIP_IMAGES = 8


@dataclass
class TrackedFrame:
    """One tracked image: the update, its log time (ns) and the re-answer baseline's mask per target id."""

    update: TrackingUpdate
    log_time: int
    baseline_masks: dict[int, np.ndarray] = field(default_factory=dict)


def _iou(mask: np.ndarray | None, truth: np.ndarray) -> tuple[float, int, int]:
    """(IoU, intersection, union) of a mask (None: nothing found) with a truth mask."""
    if mask is None:
        return 0.0, 0, int(truth.sum())
    inter, union = int(np.logical_and(mask, truth).sum()), int(np.logical_or(mask, truth).sum())
    return (inter / union if union else 1.0), inter, union


def tracking_metrics(answers: list[Answer], tracked: list[TrackedFrame], start: int, voxel_size: float) -> dict | None:
    """metrics.json's "tracking" section (None when no command has a `track` truth).

    Arguments:
        answers: the evaluated commands (their truth's `track` lists the later images).
        tracked: every tracked image, in order.
        start: the bag's start (ns); a truth's time is seconds from it.
        voxel_size: metres (a region's box is grown by one voxel, as for answers).
    """
    by_stamp = {frame.update.stamp: frame for frame in tracked}
    rows, ious, baseline_ious, inter_sum, union_sum = [], [], [], 0, 0
    by_views: dict[int, list[float]] = {}
    fused_last, single = [], []
    for item in answers:
        truth, result = item.truth, item.result
        if truth is None or not truth.track or not result.targets:
            continue
        target_id = min(t.target_id for t in result.targets if t.command_id == result.command_id)
        row = {"id": int(result.command_id), "command": result.command, "frames": 0, "found": 0, "ious": []}
        last_3d = None
        reasks, dropped = 0, ""
        for frame_truth in truth.track:
            frame = by_stamp.get(start + round(frame_truth.time * NS_PER_S))
            target = None
            if frame is not None:
                target = next((t for t in frame.update.targets if t.target_id == target_id), None)
            if target is not None:
                reasks = max(reasks, target.reasks)
                if target.status == TargetStatus.DROPPED and not dropped:
                    dropped = target.status_message
            if frame_truth.mask_path is not None:
                gt = frame_truth.mask(0, 0)
                iou, inter, union = _iou(target.mask if target is not None else None, gt)
                ious.append(iou)
                row["ious"].append(iou)
                inter_sum, union_sum = inter_sum + inter, union_sum + union
                row["frames"] += 1
                row["found"] += target is not None and target.mask is not None
                if frame is not None and target_id in frame.baseline_masks:
                    baseline_ious.append(_iou(frame.baseline_masks[target_id], gt)[0])
            if target is not None and target.region is not None and frame_truth.box_center is not None:
                box = frame_truth.box_center, frame_truth.box_size
                box_iou, error = box_iou_of_region(target.region, *box, voxel_size)
                by_views.setdefault(target.views_fused, []).append(box_iou)
                last_3d = (box_iou, error, target.views_fused)
        row["giou"] = float(np.mean(row.pop("ious"))) if row["frames"] else None
        row["reasks"] = reasks
        row["dropped"] = dropped
        if last_3d is not None:
            row["fused_box_iou"], row["fused_centroid_error_m"], row["views_fused"] = last_3d
            fused_last.append(last_3d[0])
        if item.iou_3d is not None:
            row["single_view_box_iou"] = item.iou_3d
            single.append(item.iou_3d)
        rows.append(row)
    if not rows:
        return None
    frames = sum(row["frames"] for row in rows)
    latencies = [frame.update.timings.get("total", 0.0) for frame in tracked if frame.update.image is not None]
    from lisa_ros.geometry import accuracy_at

    return {
        "commands": len(rows),
        "commands_lost": sum(bool(row["dropped"]) for row in rows),
        "frames_with_truth": frames,
        "frames_found": sum(row["found"] for row in rows),
        "fraction_found": sum(row["found"] for row in rows) / frames if frames else None,
        "giou": float(np.mean(ious)) if ious else None,
        "ciou": inter_sum / union_sum if union_sum else None,
        "reanswer_giou": float(np.mean(baseline_ious)) if baseline_ious else None,
        "reasks": sum(row["reasks"] for row in rows),
        "fused_3d": {
            "count": len(fused_last),
            "mean_box_iou": float(np.mean(fused_last)) if fused_last else None,
            "acc_at_0.25": accuracy_at(fused_last, 0.25) if fused_last else None,
            "acc_at_0.5": accuracy_at(fused_last, 0.5) if fused_last else None,
            "single_view_mean_box_iou": float(np.mean(single)) if single else None,
            "box_iou_by_views": {str(k): float(np.mean(v)) for k, v in sorted(by_views.items())},
        },
        "latency_s": stats(latencies),
        "per_command": rows,
    }


def write_strips(output: Path, answers: list[Answer], tracked: list[TrackedFrame]) -> dict[int, str]:
    """strips/command_NNNN.png per command that started targets: up to STRIP_IMAGES of its tracked
    images side by side (the node's overlay, the status in the corner). Returns command id -> path."""
    import cv2

    from lisa_model.visualize import save_png
    from lisa_ros.runtime import message_fields as fields

    strips = {}
    for item in answers:
        ids = {t.target_id for t in item.result.targets if t.command_id == item.result.command_id}
        frames = [f for f in tracked if f.update.image is not None and ids & {t.target_id for t in f.update.targets}]
        if not frames:
            continue
        picked = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, STRIP_IMAGES).round().astype(int))]
        tiles = []
        for frame in picked:
            overlay = fields.overlay_image(fields.tracked_frame_result(frame.update))
            tile = cv2.resize(overlay, (160, round(160 * overlay.shape[0] / overlay.shape[1])))
            status = next(t for t in frame.update.targets if t.target_id in ids).status.name.lower()
            cv2.putText(tile, status, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
            tiles.append(tile)
        path = f"strips/command_{int(item.result.command_id):04d}.png"
        save_png(output / path, np.concatenate(tiles, axis=1))
        strips[int(item.result.command_id)] = path
    return strips
