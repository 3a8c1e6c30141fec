"""The runtime's values: camera frames, results and their statuses.

Stamps are integer nanoseconds (a ROS `builtin_interfaces/Time` as
`sec * 10**9 + nanosec`), so they round-trip exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

NS_PER_S = 1_000_000_000
REGION_UNAVAILABLE = "no 3D region: the command was not answered"
NO_MASK = "no 3D region: nothing was segmented"


class Status(enum.IntEnum):
    """A result's status; the values are SegmentationResult's STATUS_* constants."""

    OK = 0  # answered, with at least one mask
    NO_TARGET = 1  # answered in words, no [SEG] in the answer
    ERROR = 2  # not answered; Result.error says why


class Stage(str, enum.Enum):
    """Progress stages reported while a command is answered (action feedback)."""

    QUEUED = "queued"
    ENCODING_IMAGE = "encoding_image"
    GENERATING = "generating"
    MASK = "mask"  # an early result: a [SEG] was generated and its mask decoded (Pipeline.answer's on_early)
    DONE = "done"


@dataclass
class Frame:
    """One camera image, decoded now (`rgb`) or on first use (`decode`).

    stamp (int): the image's stamp, nanoseconds.
    frame_id (str): its coordinate frame.
    rgb (ndarray uint8 [H,W,3] | None): the decoded image.
    decode (callable | None): returns the decoded image; called at most once, on the
        thread that answers a command (so decoding never slows the subscriber down).
        A ValueError it raises (e.g. lisa_ros.runtime.codec.ImageError) makes the frame invalid.
    error (str): why the frame is invalid ("" when it is, or may be, valid).
    depth (ndarray float32 [h,W] | callable | None): depth in metres registered to the
        image (any resolution of the same aspect ratio; NaN or 0 where invalid), or a
        function returning it; None: the pipeline's cached depth matched by stamp.
    depth_frame_id (str): the depth's optical frame; "": frame_id.
    intrinsics (lisa_ros.geometry.CameraIntrinsics | None): of the depth image (scaled to
        the depth's size when they differ); needed with `depth`.
    pose (ndarray float [4,4] | None): camera-to-target_frame transform; None: the
        region stays in the camera frame (used only with `depth`).
    target_frame (str): the frame `pose` maps into.
    received (float): when the pipeline received it (time.perf_counter seconds; 0: unknown),
        to tell which frames came before a command.
    """

    stamp: int
    frame_id: str = ""
    rgb: np.ndarray | None = None
    decode: Callable[[], np.ndarray] | None = None
    error: str = ""
    depth: np.ndarray | Callable[[], np.ndarray] | None = None
    depth_frame_id: str = ""
    intrinsics: object = None
    pose: np.ndarray | None = None
    target_frame: str = ""
    received: float = 0.0

    def image(self) -> np.ndarray:
        """The decoded RGB image; raises ValueError with the reason when the frame is invalid."""
        if self.rgb is None and not self.error:
            try:
                if self.decode is None:
                    raise ValueError("the frame has no image data")
                self.rgb = _checked_rgb(self.decode())
            except ValueError as error:
                self.error = str(error)
            finally:
                self.decode = None
        if self.error:
            raise ValueError(self.error)
        return self.rgb


def _checked_rgb(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 [H,W,3] RGB image, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"the image is empty ({image.shape[1]}x{image.shape[0]} pixels)")
    return image


@dataclass
class Result:
    """The answer to one command.

    command_id (int): the caller's id of the command.
    session_id (str): the id of the node run that answered it (command ids restart with each run).
    command (str): the command as received.
    stamp (int): when the command was received, nanoseconds.
    frame_stamp (int): stamp of the image answered, nanoseconds; 0 when no image was used.
    frame_id (str): coordinate frame of that image.
    status (Status): OK, NO_TARGET or ERROR.
    error (str): why the command was not answered ("" unless status is ERROR).
    answer (str): the model's text answer, with its [SEG] tokens.
    masks (ndarray bool [N,H,W]): one mask per [SEG], at the image's size ([0,H,W] when
        none; [0,0,0] when no image was used).
    scores (ndarray float32 [N]): the mask decoder's predicted IoU of each mask.
    boxes (ndarray int32 [N,4]): x_min, y_min, x_max, y_max of each mask, inclusive
        pixel bounds; -1 for an empty mask.
    timings (dict[str, float]): seconds per stage (queue_wait, clip, sam_encoder,
        tokenize, prefill, decode, mask_decoder, postprocess, regions), from the start of the
        answer to its first mask (first_mask, with a mask) and to its end (total).
    image (ndarray uint8 [H,W,3] | None): the image answered (not a copy), for overlays.
    canceled (bool): the command was canceled before it was answered (status ERROR).
    regions (list[lisa_ros.geometry.TargetRegion | None]): one per mask when any region
        was computed (None for a mask without one), else empty.
    region_frame (str): the frame of the regions' coordinates (target_frame, or the
        depth camera's optical frame).
    region_status (str): why regions are missing ("" when every mask has one).
    depth_stamp (int): stamp of the depth image the regions came from, nanoseconds; 0 when none.
    truncated (bool): the answer was cut short because the model's context is full.
    conversation_reset (bool): the earlier turns were dropped so that the command fits the context.
    notice (str): what the two flags above mean for this answer, in words ("" when neither is set).
    targets (list[lisa_ros.runtime.tracking.TrackedTarget]): the live targets this answer
        started (one per mask, with tracking on) and the ones it ended.
    early (bool): an early result, sent the moment a [SEG] is generated: the answer so far
        (ending with that [SEG]), the masks so far (the final result's first ones, equal), no 3D
        regions, timings first_mask and mask (to this mask). The final result follows.
    """

    command_id: int
    command: str
    stamp: int
    frame_stamp: int = 0
    frame_id: str = ""
    status: Status = Status.ERROR
    error: str = ""
    answer: str = ""
    masks: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), bool))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int32))
    timings: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = None
    canceled: bool = False
    regions: list = field(default_factory=list)
    region_frame: str = ""
    region_status: str = REGION_UNAVAILABLE
    depth_stamp: int = 0
    truncated: bool = False
    conversation_reset: bool = False
    notice: str = ""
    targets: list = field(default_factory=list)
    session_id: str = ""
    early: bool = False

    @property
    def ok(self) -> bool:
        return self.status != Status.ERROR


def error_result(
    command_id: int, command: str, stamp: int, message: str, frame: Frame | None = None, **extra
) -> Result:
    """A Result with status ERROR and `message`."""
    result = Result(command_id=command_id, command=command, stamp=stamp, status=Status.ERROR, error=message, **extra)
    if frame is not None:
        result.frame_stamp, result.frame_id = frame.stamp, frame.frame_id
    return result


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Inclusive pixel boxes of masks.

    Arguments:
        masks (ndarray bool [N,H,W]).

    Returns:
        ndarray int32 [N,4]: x_min, y_min, x_max, y_max per mask; all -1 for an empty mask.
    """
    masks = np.asarray(masks, dtype=bool)
    boxes = np.full((masks.shape[0], 4), -1, np.int32)
    if masks.shape[0] == 0:
        return boxes
    rows = masks.any(axis=2)  # [N,H]
    cols = masks.any(axis=1)  # [N,W]
    present = rows.any(axis=1)
    height, width = masks.shape[1:]
    boxes[present, 0] = cols[present].argmax(axis=1)
    boxes[present, 1] = rows[present].argmax(axis=1)
    boxes[present, 2] = width - 1 - cols[present, ::-1].argmax(axis=1)
    boxes[present, 3] = height - 1 - rows[present, ::-1].argmax(axis=1)
    return boxes


def quote_command(command) -> str:
    """A command for a log line: repr, cut to 80 characters."""
    text = command if isinstance(command, str) else repr(command)
    return repr(text if len(text) <= 80 else text[:77] + "...")
