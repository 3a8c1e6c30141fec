"""Live targets: an answered command's masks kept alive on every later frame.

A `[SEG]` embedding is a prompt for SAM's mask decoder that does not depend on the
image, so once a command is answered each of its masks becomes a `LiveTarget` holding
its projected embedding; a new frame then costs one SAM image embedding and one mask
decoder call for all targets, not an LLM answer. This module holds the targets and
decides, frame by frame, whether each one is still found (`judge`), fusing its 3D
views (`ViewWindow`). The pipeline (lisa_ros.runtime.pipeline) runs the model and re-asks
the command when a target is lost.

ROS-free and torch-free (the embeddings are opaque here).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lisa_ros import geometry
from lisa_ros.geometry import extract_region

from .regions import View
from .types import NS_PER_S


class TargetStatus(enum.IntEnum):
    """A live target's status on the latest tracked frame; the values are Target's STATUS_* constants."""

    TRACKING = 0  # found on this frame with the kept embedding
    LOST = 1  # not found on this frame; status_message says why
    REACQUIRED = 2  # lost, then found again by re-asking the command
    DROPPED = 3  # ended (re-asks failed, expired, replaced, cleared): reported once, then forgotten


@dataclass(frozen=True)
class TrackingSettings:
    """How targets are tracked, judged lost, re-asked and fused (the node's tracking_* parameters).

    enabled: keep answered targets alive on later frames.
    max_rate: most tracked frames per second, with 20 % slack for stamp jitter (newer frames are
        skipped, never queued).
    keep_targets: a new command adds its targets instead of replacing the live ones.
    max_targets: most live targets (the oldest are dropped first).
    min_score: a mask whose decoder IoU score is lower is not the target (0: no check; the
        demo model's IoU head is untrained, the released LISA weights' scores are meaningful).
    min_area: pixels; a smaller mask is not the target.
    max_area_change: a mask whose area differs from the recent median by more than this factor is not the target.
    max_shift: a mask whose box centre jumps by more than this fraction of the image diagonal
        since the last found frame is not the target (used without 3D only: a moving camera
        shifts the image, the 3D check is the better judge).
    max_region_distance: metres; a view whose points' median is farther from the fused
        target's is a different object, or the target moved (a re-ask decides which).
    reask_interval: seconds between re-asks of a lost target.
    max_reasks: failed re-asks in a row before a target is dropped.
    expiry: seconds without a found frame before a target is dropped.
    max_views: views fused into one 3D target; older ones are forgotten.
    """

    enabled: bool = True
    max_rate: float = 15.0
    keep_targets: bool = False
    max_targets: int = 8
    min_score: float = 0.0
    min_area: int = 30
    max_area_change: float = 3.0
    max_shift: float = 0.25
    max_region_distance: float = 0.1
    reask_interval: float = 0.5
    max_reasks: int = 5
    expiry: float = 10.0
    max_views: int = 20


class ViewWindow:
    """A target's views fused in 3D (lisa_ros.geometry.RegionFusion), at most `max_views` of them.

    RegionFusion cannot forget a view, so the window keeps the last views' inputs and,
    once it holds twice `max_views`, rebuilds the fusion from the newest `max_views`:
    the cost of trimming is spread over max_views frames.
    """

    def __init__(self, max_views: int, voxel_size: float):
        self.max_views = max(1, int(max_views))
        self.voxel_size = float(voxel_size)
        self.frame = ""
        self.reset()

    def reset(self) -> None:
        self._views: deque = deque()
        self._fusion = geometry.RegionFusion(voxel_size=self.voxel_size)
        self.points = np.zeros((0, 3), np.float32)  # the fused voxels' points, before clustering
        self.region: geometry.TargetRegion | None = None

    @property
    def count(self) -> int:
        """Views in the fused region."""
        return len(self._views)

    def add(self, points: np.ndarray, view: View) -> None:
        """Fuse one view's target points (in `view.region_frame`); updates `region`."""
        if view.region_frame != self.frame:
            self.reset()  # another frame (target_frame changed): the old views do not fit
            self.frame = view.region_frame
        self._views.append((points, view))
        if len(self._views) >= 2 * self.max_views:
            while len(self._views) > self.max_views:
                self._views.popleft()
            self._fusion.reset()
            for old_points, old in self._views:
                self._fusion.add_view(old_points, old.depth, old.intrinsics, old.pose)
        else:
            self._fusion.add_view(points, view.depth, view.intrinsics, view.pose)
        self.points, hits = self._fusion.points_and_hits()
        # Each voxel counts once per view that hit it: the region is the cluster most views agree
        # on, not the largest surface (a mask that bled onto a bigger neighbour in a few views).
        weighted = np.repeat(self.points, hits, axis=0)
        self.region = extract_region(weighted, voxel_size=self.voxel_size) if len(weighted) else None


@dataclass
class LiveTarget:
    """One [SEG] of an answered command, tracked on later frames.

    target_id: unique in the pipeline. seg_index: which [SEG] of the answer.
    embedding: the projected [SEG] embedding (a torch tensor [C]), the mask decoder's prompt.
    created_ns / found_ns: stamps of the answer's frame and of the last frame it was found on.
    """

    target_id: int
    command_id: int
    command: str
    answer: str
    seg_index: int
    embedding: object
    created_ns: int
    found_ns: int
    status: TargetStatus = TargetStatus.TRACKING
    status_message: str = ""
    score: float = 0.0
    box: np.ndarray = field(default_factory=lambda: np.full(4, -1, np.int32))
    mask: np.ndarray | None = None  # this frame's mask (None when not found)
    areas: deque = field(default_factory=lambda: deque(maxlen=5))
    center: np.ndarray | None = None  # box centre on the last frame found, pixels
    single_region: geometry.TargetRegion | None = None  # this frame's own 3D region
    reasks: int = 0  # re-asks so far
    failed_reasks: int = 0  # failed re-asks in a row
    last_reask_ns: int | None = None
    unseen: bool = False  # lost out of view: coming back needs a re-ask (it may have moved meanwhile)
    frames_found: int = 0
    frames_lost: int = 0
    views: ViewWindow | None = None

    @property
    def region(self) -> geometry.TargetRegion | None:
        """The fused 3D region (the latest single view's where views cannot be fused)."""
        if self.views is not None and self.views.region is not None:
            return self.views.region
        return self.single_region

    @property
    def region_frame(self) -> str:
        return self.views.frame if self.views is not None else ""

    def age(self, stamp_ns: int) -> float:
        return (stamp_ns - self.created_ns) / NS_PER_S

    def found(self, mask: np.ndarray, score: float, box: np.ndarray, stamp_ns: int) -> None:
        """Record this frame's mask as the target."""
        self.mask, self.score, self.box = mask, float(score), np.asarray(box, np.int32)
        self.areas.append(int(mask.sum()))
        self.center = box_center(self.box)
        self.found_ns = stamp_ns
        self.frames_found += 1

    def lost(self, reason: str, score: float = 0.0) -> None:
        """Record that this frame does not show the target."""
        self.status, self.status_message = TargetStatus.LOST, reason
        self.mask, self.score = None, float(score)
        self.box = np.full(4, -1, np.int32)
        self.single_region = None
        self.frames_lost += 1

    def reask_due(self, stamp_ns: int, interval: float) -> bool:
        return self.last_reask_ns is None or (stamp_ns - self.last_reask_ns) >= interval * NS_PER_S


def box_center(box: np.ndarray) -> np.ndarray | None:
    """Centre (x, y) of an inclusive pixel box; None for an empty one."""
    if box[0] < 0:
        return None
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def median_distance(points: np.ndarray, fused: np.ndarray) -> float:
    """Metres between the medians of a view's target points and of the fused target's points.

    Medians of all the mask's points rather than the regions' centroids: a mask that bleeds
    onto a neighbour moves the median a little, while a region's largest cluster can flip
    from one object to the other between views.
    """
    return float(np.linalg.norm(np.median(points, axis=0) - np.median(fused, axis=0)))


def judge(
    target: LiveTarget,
    mask: np.ndarray,
    score: float,
    box: np.ndarray,
    points: np.ndarray | None,
    settings: TrackingSettings,
) -> str:
    """Why `mask` is not `target` on this frame ("" when it is).

    The checks, cheapest first: the decoder's IoU score, the area (absolute and against
    the recent median), then 3D (the mask's points against the fused target) when the
    frame has depth and a pose, else the 2D box centre's jump.

    Arguments:
        points (ndarray [N,3] | None): the mask's points in the fused target's frame; None
            when this frame has no 3D view that can be compared with the fused one.
    """
    if settings.min_score > 0 and score < settings.min_score:
        return f"mask score {score:.2f} is below tracking_min_score {settings.min_score:g}"
    area = int(mask.sum())
    if area < settings.min_area:
        return f"mask area {area} px is below tracking_min_area {settings.min_area}"
    if target.areas:
        median = float(np.median(target.areas))
        ratio = max(area / median, median / area)
        if ratio > settings.max_area_change:
            return (
                f"mask area {area} px is {ratio:.1f}x the recent {median:.0f} px "
                f"(tracking_max_area_change {settings.max_area_change:g})"
            )
    fused = target.views.points if target.views is not None else np.zeros((0, 3))
    if points is not None and len(points) and len(fused):
        distance = median_distance(points, fused)
        if distance > settings.max_region_distance:
            return (
                f"its 3D points are {distance:.2f} m from the fused target's "
                f"(tracking_max_region_distance {settings.max_region_distance:g} m): moved, or another object"
            )
    elif target.center is not None:
        center = box_center(box)
        diagonal = float(np.hypot(*mask.shape))
        shift = float(np.linalg.norm(center - target.center)) / diagonal
        if shift > settings.max_shift:
            return f"its box jumped {shift:.2f} of the image diagonal (tracking_max_shift {settings.max_shift:g})"
    return ""


def out_of_view(target: LiveTarget, view: View | None, image_shape: tuple[int, int]) -> bool:
    """True when the fused target's centroid projects outside this frame's image (or behind
    the camera): re-asking there cannot find it."""
    region = target.region
    if view is None or view.pose is None or region is None or target.region_frame != view.region_frame:
        return False
    camera = np.linalg.inv(view.pose) @ np.append(region.centroid, 1.0)
    if camera[2] <= 0:
        return True
    intrinsics = view.intrinsics.scaled(image_shape[1], image_shape[0])
    u = intrinsics.fx * camera[0] / camera[2] + intrinsics.cx
    v = intrinsics.fy * camera[1] / camera[2] + intrinsics.cy
    return not (-0.5 <= u < image_shape[1] - 0.5 and -0.5 <= v < image_shape[0] - 0.5)


@dataclass
class TrackedTarget:
    """A live target as one tracked frame reports it (a snapshot: later frames do not change it)."""

    target_id: int
    command_id: int
    command: str
    answer: str
    status: TargetStatus
    status_message: str
    score: float
    box: np.ndarray
    mask: np.ndarray | None
    region: geometry.TargetRegion | None
    region_frame: str
    views_fused: int
    age: float
    reasks: int

    @classmethod
    def of(cls, target: LiveTarget, stamp_ns: int) -> "TrackedTarget":
        return cls(
            target_id=target.target_id,
            command_id=target.command_id,
            command=target.command,
            answer=target.answer,
            status=target.status,
            status_message=target.status_message,
            score=target.score,
            box=target.box.copy(),
            mask=target.mask,
            region=target.region,
            region_frame=target.region_frame,
            views_fused=target.views.count if target.views is not None else 0,
            age=target.age(stamp_ns),
            reasks=target.reasks,
        )


@dataclass
class TrackingUpdate:
    """The outcome of one tracked frame (or of an event that ended targets: clear, a new command).

    stamp / frame_id: the frame tracked (the event's time and "" for an event).
    image: the frame's RGB image (None for an event or an invalid frame).
    targets: every target that was live, in id order (dropped ones for the last time).
    timings: seconds per stage (decode_image, sam_encoder, mask_decoder, regions, reask, total).
    """

    stamp: int
    frame_id: str
    image: np.ndarray | None
    targets: list[TrackedTarget]
    timings: dict[str, float] = field(default_factory=dict)
