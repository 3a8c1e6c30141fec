"""Early results: each [SEG]'s mask sent the moment it is generated, before the final result.

`lisa_model.LisaPredictor.predict` decodes a [SEG]'s mask as soon as the [SEG] is generated
(its on_mask); `EarlyResults` turns each of those `lisa_model.EarlyMask`s into an early
`Result` (Result.early) with every mask so far, and keeps the time to the first mask for
the final result. The final result's masks are the same arrays, stacked by the predictor.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from .types import Frame, Result, Status, mask_boxes

EARLY_REGION_STATUS = "no 3D region yet: an early result has 2D masks only; the final result has the regions"


class Canceled(Exception):
    """The command was canceled while it was answered (raised from a predictor callback)."""


class EarlyResults:
    """The early results of one command, as its [SEG]s are generated.

    Arguments:
        command (Result): the command's result so far (command_id, command, stamp); the
            final result is built on it.
        frame (Frame), rgb (ndarray uint8 [H,W,3]): the frame answered and its image.
        start (float): when answering began (time.perf_counter seconds).
        on_early (callable(Result) | None): gets each early result.
    """

    def __init__(self, command: Result, frame: Frame, rgb: np.ndarray, start: float, on_early: Callable | None):
        self.command, self.frame, self.rgb, self.start = command, frame, rgb, start
        self.on_early = on_early
        self.masks: list = []  # lisa_model.EarlyMask, in answer order
        self.first_mask: float | None = None  # seconds from `start`

    def add(self, early_mask) -> None:
        """A [SEG] was generated: `early_mask` (lisa_model.EarlyMask) is its mask. Sends the early result."""
        seconds = time.perf_counter() - self.start
        if self.first_mask is None:
            self.first_mask = seconds
        self.masks.append(early_mask)
        if self.on_early is not None:
            self.on_early(self.result(seconds))

    def result(self, seconds: float) -> Result:
        """The early result with every mask so far; `seconds`: from the start to the latest mask."""
        masks = np.stack([m.mask for m in self.masks])
        return dataclasses.replace(
            self.command,
            frame_stamp=self.frame.stamp,
            frame_id=self.frame.frame_id,
            status=Status.OK,
            answer=self.masks[-1].text,
            masks=masks,
            scores=np.array([m.score for m in self.masks], np.float32),
            boxes=mask_boxes(masks),
            timings={"first_mask": self.first_mask, "mask": seconds},
            image=self.rgb,
            region_status=EARLY_REGION_STATUS,
            early=True,
        )

    def timings(self) -> dict[str, float]:
        """{"first_mask": seconds from the start to the first mask}, or {} without a mask."""
        return {} if self.first_mask is None else {"first_mask": self.first_mask}
