"""The tracker: a pipeline's live targets, found on each new frame with the mask decoder alone.

An answered command's masks become live targets (lisa_ros.runtime.tracking.LiveTarget, one
per [SEG], holding its projected embedding). `Tracker.track` computes the newest frame's
SAM embedding once, decodes every live target with it, judges each mask (tracking.judge),
fuses the found views in 3D, and re-asks the command of a lost target on the frame; the
pipeline's predictor, 3D stage and conversation template are the ones it uses.
"""

from __future__ import annotations

import threading
import time
import traceback

import numpy as np

from .regions import View
from .tracking import (
    LiveTarget,
    TargetStatus,
    TrackedTarget,
    TrackingSettings,
    TrackingUpdate,
    ViewWindow,
    judge,
    median_distance,
    out_of_view,
)
from .types import NS_PER_S, Frame, Result, Status, mask_boxes

# Seconds a frame to track waits for its depth and camera_info when they come after the image.
AWAIT_INPUTS_S = 0.2
# Images closer than this fraction of 1 / tracking_max_rate to the last one tracked are skipped.
RATE_SLACK = 0.8


class Tracker:
    """The live targets of one pipeline and the tracking of them; thread-safe.

    `start` (called by the pipeline when it answers) and `track` run on the answering
    thread; `clear`, `due` and `count_skipped` may come from any thread.

    Arguments:
        pipeline (lisa_ros.runtime.pipeline.Pipeline): its predictor, lifter and conversation
            template serve the tracking and the re-asks.
        settings (TrackingSettings): may be replaced at any time (live parameters).
    """

    def __init__(self, pipeline, settings: TrackingSettings):
        self.pipeline = pipeline
        self.settings = settings
        self._lock = threading.RLock()
        self.targets: list[LiveTarget] = []
        self._last_target_id = 0
        self._tracked: Frame | None = None  # the last frame tracked or answered
        self._awaiting: tuple[Frame, float] | None = None  # a frame waiting for its depth, since when
        self._embedded: tuple[Frame, object] | None = None  # the last frame tracked, SAM's embedding of it
        self.frames_tracked = 0
        self.frames_skipped = 0  # frames replaced by newer ones before they were tracked

    def count_skipped(self, replaced: Frame | None) -> None:
        """The pipeline's newest frame `replaced` gives way to a newer one."""
        if self.targets and replaced is not None and replaced is not self._tracked:
            self.frames_skipped += 1

    def start(self, result: Result, embeddings, frame: Frame, view, lifted) -> list[TrackedTarget]:
        """An answered command's masks become live targets (replacing the live ones unless
        keep_targets). Returns the targets to report: the new ones and those it ended."""
        settings = self.settings
        with self._lock:
            ended = [] if settings.keep_targets else self._end_targets(self.targets, "replaced by a new command")
            self._tracked = frame
            if not settings.enabled or result.status != Status.OK or embeddings is None:
                return [TrackedTarget.of(target, frame.stamp) for target in ended]
            new = []
            for index, mask in enumerate(result.masks):
                self._last_target_id += 1
                target = LiveTarget(
                    target_id=self._last_target_id,
                    command_id=result.command_id,
                    command=result.command,
                    answer=result.answer,
                    seg_index=index,
                    embedding=embeddings[index],
                    created_ns=frame.stamp,
                    found_ns=frame.stamp,
                    views=ViewWindow(settings.max_views, self.pipeline.lifter.voxel_size),
                )
                target.found(mask, float(result.scores[index]), result.boxes[index], frame.stamp)
                if lifted:
                    self._add_view(target, view, *lifted[index][:2])
                new.append(target)
            self.targets += new
            while len(self.targets) > settings.max_targets:
                reason = f"more than tracking_max_targets ({settings.max_targets})"
                ended += self._end_targets([self.targets[0]], reason)
            return [TrackedTarget.of(target, frame.stamp) for target in ended + new]

    def _end_targets(self, targets: list[LiveTarget], reason: str) -> list[LiveTarget]:
        for target in targets:
            target.status, target.status_message, target.mask = TargetStatus.DROPPED, reason, None
        self.targets = [target for target in self.targets if target.status != TargetStatus.DROPPED]
        return list(targets)

    @staticmethod
    def _add_view(target: LiveTarget, view: View | None, points, region) -> None:
        target.single_region = region
        if view is not None and view.pose is not None and len(points):
            target.views.add(points, view)

    def clear(self, stamp: int) -> TrackingUpdate | None:
        """End every live target (the `clear` service); thread-safe. Returns the update that
        reports them dropped, or None when none was live."""
        with self._lock:
            ended = self._end_targets(self.targets, "cleared")
        if not ended:
            return None
        return TrackingUpdate(int(stamp), "", None, [TrackedTarget.of(target, stamp) for target in ended])

    @property
    def due(self) -> bool:
        """True when a live target waits for a frame newer than the last one tracked or answered."""
        with self._lock:
            return bool(self.targets) and self.pipeline.latest_frame is not self._tracked

    def track(self, wait_for_inputs: bool = True) -> TrackingUpdate | None:
        """Find every live target on the newest frame; never raises.

        Arguments:
            wait_for_inputs (bool): put off a frame whose depth, camera_info (or pose) may
                still arrive (call again when they do); False: the caller has fed everything
                of the frame's time already (the bag tools).

        Returns None when there is nothing to do (no live target, no new frame, the frame
        comes sooner than tracking_max_rate allows, or it waits for its inputs); else the update.
        """
        with self._lock:
            frame = self.pipeline.latest_frame
            if not self.targets or frame is None or frame is self._tracked:
                return None
            last = self._tracked
            # Stamps jitter: a camera at exactly max_rate must not lose every other image.
            period = RATE_SLACK * NS_PER_S / self.settings.max_rate
            if last is not None and 0 <= frame.stamp - last.stamp < period:
                return None  # the next tracked frame will be a newer one
            if wait_for_inputs and self._awaits_inputs(frame):
                return None  # tracked when its depth arrives (the caller tries again then)
            self._tracked = frame
            self.frames_tracked += 1
            start = time.perf_counter()
            timings: dict[str, float] = {}
            try:
                rgb = self._track_frame(frame, timings)
            except Exception as error:  # a model failure must not end tracking silently
                self.pipeline.logger.error(f"tracking failed: {traceback.format_exc()}")
                rgb = None
                for target in self.targets:
                    target.lost(f"tracking failed: {type(error).__name__}: {error}")
            self._expire(frame.stamp)
            timings["total"] = time.perf_counter() - start
            reported = [TrackedTarget.of(target, frame.stamp) for target in self.targets]
            self.targets = [target for target in self.targets if target.status != TargetStatus.DROPPED]
            return TrackingUpdate(frame.stamp, frame.frame_id, rgb, reported, timings)

    def embedding_of(self, frame: Frame):
        """SAM's embedding (lisa_model.ImageEmbedding) of `frame` when the last tracking step
        computed it, else None: pre-encoding the frame then needs CLIP only."""
        with self._lock:
            embedded = self._embedded
        return embedded[1] if embedded is not None and embedded[0] is frame else None

    def _awaits_inputs(self, frame: Frame) -> bool:
        """True while the frame's own depth or camera_info may still arrive, for at most
        AWAIT_INPUTS_S seconds of wall time (the camera may have stopped sending depth)."""
        if not self.pipeline.lifter.inputs_awaited(frame):
            return False
        now = time.monotonic()
        if self._awaiting is None or self._awaiting[0] is not frame:
            self._awaiting = (frame, now)
        return now - self._awaiting[1] < AWAIT_INPUTS_S

    def _track_frame(self, frame: Frame, timings: dict) -> np.ndarray | None:
        """Decode every live target's mask on `frame`, judge it, fuse it, re-ask the lost ones."""
        import torch

        try:
            rgb = self.pipeline.checked_image(frame)
        except ValueError as error:
            for target in self.targets:
                target.lost(f"invalid image: {error}")
            return None
        step = time.perf_counter()
        embedded = self.pipeline.predictor.embed_image(rgb)
        self._embedded = (frame, embedded)
        timings["sam_encoder"] = time.perf_counter() - step
        step = time.perf_counter()
        embeddings = torch.stack([target.embedding for target in self.targets])
        masks, _, scores = self.pipeline.predictor.decode(embeddings, embedded)
        boxes = mask_boxes(masks)
        timings["mask_decoder"] = time.perf_counter() - step
        step = time.perf_counter()
        view, note = self.pipeline.lifter.view(frame, rgb)
        no_3d = f"no 3D on this frame: {note}" if view is None else note
        lost = []
        fusable = view is not None and view.pose is not None  # then a view needs its points only
        for target, mask, score, box in zip(self.targets, masks, scores, boxes):
            points, region, why = self.pipeline.lifter.lift(mask, view, not fusable) if view else ((), None, "")
            comparable = fusable and view.region_frame == target.region_frame
            reason = judge(target, mask, float(score), box, points if comparable else None, self.settings)
            if out_of_view(target, view, rgb.shape[:2]):
                target.lost(f"the fused target is out of view: waiting for it ({reason or 'its mask passed'})")
                target.unseen = True
                continue
            if target.unseen:
                reason = "back in view after being out of view: asking again"
            if reason:
                target.lost(reason, float(score))
                lost.append(target)
                continue
            was_lost = target.status == TargetStatus.LOST
            target.found(mask, float(score), box, frame.stamp)
            self._add_view(target, view, points, region)
            target.status = TargetStatus.REACQUIRED if was_lost else TargetStatus.TRACKING
            target.status_message = "; ".join(
                filter(None, ["found again with the kept embedding" if was_lost else "", no_3d, why])
            )
        timings["regions"] = time.perf_counter() - step
        due = [target for target in lost if target.reask_due(frame.stamp, self.settings.reask_interval)]
        if due:
            step = time.perf_counter()
            self._reask(frame, rgb, view, due)
            timings["reask"] = time.perf_counter() - step
        return rgb

    def _reask(self, frame: Frame, rgb: np.ndarray, view: View | None, lost: list[LiveTarget]) -> None:
        """Ask each lost target's command again on this frame (a new conversation, so the
        user's is unchanged) and take the new [SEG] embedding when its mask passes."""
        from lisa_model import Conversation

        self.pipeline.encode(frame, rgb)
        answers = {}
        for target in lost:
            target.reasks += 1
            target.last_reask_ns = frame.stamp
            if target.command not in answers:
                fresh = Conversation(self.pipeline.conversation.template)
                answers[target.command] = self.pipeline.predictor.predict(target.command, fresh)
            prediction = answers[target.command]
            found = self._reacquire(target, prediction, frame, view)
            if found:
                continue
            target.failed_reasks += 1
            if target.failed_reasks >= self.settings.max_reasks:
                target.status = TargetStatus.DROPPED
                target.status_message = f"dropped: {target.failed_reasks} re-asks in a row did not find it"

    def _reacquire(self, target: LiveTarget, prediction, frame: Frame, view: View | None) -> bool:
        count = len(prediction.masks)
        if count == 0:
            target.status_message += f"; re-ask {target.reasks}: the answer has no [SEG]"
            return False
        index = min(target.seg_index, count - 1)
        mask, score = np.asarray(prediction.masks[index], bool), float(prediction.scores[index])
        area = int(mask.sum())
        if (self.settings.min_score > 0 and score < self.settings.min_score) or area < self.settings.min_area:
            target.status_message += f"; re-ask {target.reasks}: its mask did not pass (score {score:.2f}, {area} px)"
            return False
        points, region, _ = self.pipeline.lifter.lift(mask, view) if view is not None else ((), None, "")
        message = f"re-acquired by re-ask {target.reasks}"
        fused = target.views.points
        if len(fused) and len(points) and view.region_frame == target.region_frame:
            if median_distance(points, fused) > self.settings.max_region_distance:
                # The model points at the same object somewhere else: it moved, and the old
                # views would smear the fused region between the two places.
                message += f"; the target moved: its {target.views.count} earlier views dropped"
                target.views.reset()
        target.embedding = prediction.seg_embeddings[index]
        target.answer = prediction.text
        target.areas.clear()
        target.found(mask, score, mask_boxes(mask[None])[0], frame.stamp)
        self._add_view(target, view, points, region)
        target.status, target.status_message, target.failed_reasks = TargetStatus.REACQUIRED, message, 0
        target.unseen = False
        return True

    def _expire(self, stamp: int) -> None:
        for target in self.targets:
            if target.status != TargetStatus.DROPPED and stamp - target.found_ns > self.settings.expiry * NS_PER_S:
                target.status = TargetStatus.DROPPED
                target.status_message = f"expired: not found for {self.settings.expiry:g} s (tracking_expiry)"
