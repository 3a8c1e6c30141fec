"""Frames and commands in, results out: the one code path behind the live node and the bag evaluator.

ROS-free (numpy; the model through `lisa_model`, imported when a model is loaded).
`Pipeline` owns the predictor and the conversation: it caches the newest frame,
validates each command and answers it on the newest frame (or on an image the
command carries). `CommandWorker` runs a pipeline on its own thread behind a
bounded queue and hands every result to a callback in submission order.

Nothing here raises for bad input: every command gets exactly one `Result`, whose
status is OK, NO_TARGET or ERROR (with a message).

Stamps are integer nanoseconds (a ROS `builtin_interfaces/Time` as
`sec * 10**9 + nanosec`), so they round-trip exactly.

3D regions: each mask of an OK result becomes a `lisa_ros.geometry.TargetRegion`
(back-projection with depth and intrinsics, then the camera pose, then region
extraction). A frame may carry its depth, intrinsics and camera pose itself (the bag
evaluator); otherwise the pipeline matches the ones it has cached (`set_depth`,
`set_camera_info`, `set_camera_pose`, or a `pose_lookup` such as tf2) to the image by
stamp, within `max_depth_skew` seconds. `Result.region_status` says why a region is
missing; the 2D answer stands either way.
"""

from __future__ import annotations

import collections
import enum
import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .parameters import defaults, validate

NS_PER_S = 1_000_000_000
REGION_UNAVAILABLE = "no 3D region: the command was not answered"
NO_MASK = "no 3D region: nothing was segmented"
HISTORY = 16  # depth, camera_info and pose messages kept for matching by stamp
# Node parameters that are Pipeline attributes of the same name (the 3D stage).
GEOMETRY_PARAMETERS = ("min_depth", "max_depth", "mask_erosion", "max_depth_skew", "voxel_size", "target_frame")


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
    DONE = "done"


@dataclass
class Frame:
    """One camera image, decoded now (`rgb`) or on first use (`decode`).

    stamp (int): the image's stamp, nanoseconds.
    frame_id (str): its coordinate frame.
    rgb (ndarray uint8 [H,W,3] | None): the decoded image.
    decode (callable | None): returns the decoded image; called at most once, on the
        thread that answers a command (so decoding never slows the subscriber down).
        A ValueError it raises (e.g. lisa_ros.codec.ImageError) makes the frame invalid.
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
class Stamped:
    """A stamped input kept for matching by stamp (depth, intrinsics, camera pose).

    value: the data, or None until `decode` (called at most once, by `get`) returns it.
    error: why the input is unusable ("" when it is, or may be, usable).
    """

    stamp: int
    frame_id: str = ""
    value: object = None
    decode: Callable[[], object] | None = None
    error: str = ""

    def get(self):
        """The value; raises ValueError with the reason when it is unusable."""
        if self.value is None and not self.error:
            try:
                if self.decode is None:
                    raise ValueError("no data")
                self.value = self.decode()
            except ValueError as error:
                self.error = str(error) or type(error).__name__
            finally:
                self.decode = None
        if self.error:
            raise ValueError(self.error)
        return self.value


class StampCache:
    """The newest few stamped inputs of one kind; thread-safe."""

    def __init__(self, size: int = HISTORY):
        self._items: collections.deque[Stamped] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def put(self, item: Stamped) -> Stamped:
        with self._lock:
            self._items.append(item)
        return item

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def nearest(self, stamp: int) -> Stamped | None:
        """The item whose stamp is closest to `stamp` (the newest on ties); None when empty."""
        with self._lock:
            items = list(self._items)
        best = None
        for item in items:
            if best is None or abs(item.stamp - stamp) <= abs(best.stamp - stamp):
                best = item
        return best


def _skew_error(what: str, item: Stamped, stamp: int, max_skew: float) -> str:
    skew = abs(item.stamp - int(stamp)) / NS_PER_S
    if max_skew > 0 and skew > max_skew:
        return (
            f"the nearest {what} is {skew:.3f} s apart from the image (max_depth_skew is {max_skew:g} s)"
        )
    return ""


@dataclass
class Result:
    """The answer to one command.

    command_id (int): the caller's id of the command.
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
        tokenize, prefill, decode, mask_decoder, postprocess, total).
    image (ndarray uint8 [H,W,3] | None): the image answered (not a copy), for overlays.
    canceled (bool): the command was canceled before it was answered (status ERROR).
    regions (list[lisa_ros.geometry.TargetRegion | None]): one per mask when any region
        was computed (None for a mask without one), else empty.
    region_frame (str): the frame of the regions' coordinates (target_frame, or the
        depth camera's optical frame).
    region_status (str): why regions are missing ("" when every mask has one).
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


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; other values unchanged."""
    if device != "auto":
        return device
    import torch  # lisa_model depends on it; only needed when a model is loaded

    return "cuda" if torch.cuda.is_available() else "cpu"


class Pipeline:
    """The predictor, the conversation and the newest frame; answers commands.

    `set_frame` may be called from any thread; `answer` from one thread at a time
    (the CommandWorker's). The image is encoded lazily: only when a command needs a
    frame that is not the one encoded last.
    """

    def __init__(
        self,
        predictor,
        *,
        max_image_age: float = 1.0,
        max_command_length: int = 1000,
        keep_conversation: bool = True,
        conversation_template: str = "",
        logger=None,
        min_depth: float = 0.1,
        max_depth: float = 10.0,
        mask_erosion: int = 2,
        max_depth_skew: float = 0.05,
        voxel_size: float = 0.01,
        target_frame: str = "",
        pose_lookup: Callable[[str, int], tuple[np.ndarray, str]] | None = None,
    ):
        """
        Arguments:
            predictor (lisa_model.LisaPredictor): the model; used only by `answer`.
            max_image_age (float): seconds the cached frame may be older than a command; 0: any age.
            max_command_length (int): longest command accepted, in characters.
            keep_conversation (bool): answer follow-ups in the context of earlier commands until
                a reset; False: every command starts a new conversation.
            conversation_template (str): prompt template name; "": the model's own.
            logger: anything with info/warning/error(str) methods; default: logging.
            min_depth, max_depth (float): metres; depth outside is ignored.
            mask_erosion (int): pixels eroded off each mask before back-projection, so that
                edge pixels do not pick up background depth.
            max_depth_skew (float): seconds the cached depth, camera_info and pose may be
                apart from the image; 0: any (the nearest is used).
            voxel_size (float): metres; the region's down-sampling grid.
            target_frame (str): the regions' frame; "": the camera frame. Reached through
                `pose_lookup`; without one the regions stay in the camera frame (and
                region_status says so).
            pose_lookup (callable(camera_frame, stamp) -> (4x4 camera-to-target, target frame)
                | None): e.g. tf2, or `cached_pose` (poses given to `set_camera_pose`);
                raises LookupError with the reason when it has no pose.
        """
        from lisa_model import Conversation

        self.predictor = predictor
        self.max_image_age = float(max_image_age)
        self.max_command_length = int(max_command_length)
        self.keep_conversation = bool(keep_conversation)
        template = conversation_template or predictor.model.config.conversation_template
        self.conversation = Conversation(template)
        self.logger = logger or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._latest: Frame | None = None
        self._encoded: Frame | None = None
        self._reset_pending = False
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.mask_erosion = int(mask_erosion)
        self.max_depth_skew = float(max_depth_skew)
        self.voxel_size = float(voxel_size)
        self.target_frame = str(target_frame)
        self.pose_lookup = pose_lookup
        self._depths = StampCache()
        self._camera_infos = StampCache()
        self._poses = StampCache()

    @classmethod
    def from_parameters(cls, params: dict, logger=None) -> "Pipeline":
        """Load the model the parameters name and build a pipeline around it.

        Arguments:
            params (dict): lisa_ros.parameters names -> values; missing ones take their
                defaults. model_path "" loads the built-in demo model (lisa_model.DEMO_MODEL_DIR).
            logger: as for the constructor.

        Raises:
            ValueError: a parameter value is invalid.
            Exception: whatever loading the model raises (missing files, no GPU, ...).
        """
        from lisa_model import DEMO_MODEL_DIR, LisaPredictor, load_lisa

        logger = logger or logging.getLogger(__name__)
        values = defaults()
        values.update(params)
        for name in defaults():
            values[name] = validate(name, values[name])
        device = resolve_device(values["device"])
        start = time.perf_counter()
        model_path = values["model_path"]
        if not model_path:
            logger.warning(
                f"model_path is empty: using the built-in demo model ({DEMO_MODEL_DIR}), a small LISA trained "
                "only on the synthetic table scenes of lisa_ros.demo_scenes. Set model_path to a LISA checkpoint."
            )
            model_path = DEMO_MODEL_DIR
        model, tokenizer = load_lisa(
            model_path,
            vision_tower=values["vision_tower_path"] or None,
            precision=None if values["precision"] == "auto" else values["precision"],
            device=device,
            conversation_template=values["conversation_template"] or None,
        )
        logger.info(f"loaded {model_path} on {device} in {time.perf_counter() - start:.1f} s")
        predictor = LisaPredictor(model, tokenizer, max_new_tokens=values["max_new_tokens"])
        return cls(
            predictor,
            max_image_age=values["max_image_age"],
            max_command_length=values["max_command_length"],
            keep_conversation=values["keep_conversation"],
            conversation_template=values["conversation_template"],
            logger=logger,
            **{name: values[name] for name in GEOMETRY_PARAMETERS},
        )

    # --- inputs ---------------------------------------------------------------------
    def set_frame(self, image, stamp: int, frame_id: str = "", **geometry) -> Frame:
        """Cache the newest camera frame (replacing the previous one).

        Arguments:
            image (ndarray uint8 [H,W,3] | callable): the RGB image, or a function that
                decodes it (called only if a command needs this frame).
            stamp (int): the image's stamp, nanoseconds.
            frame_id (str): its coordinate frame.
            **geometry: the frame's own depth, depth_frame_id, intrinsics, pose and
                target_frame (see Frame); without depth the cached ones are matched by stamp.
        """
        frame = Frame(stamp=int(stamp), frame_id=frame_id, **geometry)
        if callable(image):
            frame.decode = image
        else:
            frame.decode = lambda: image
        with self._lock:
            self._latest = frame
        return frame

    def set_frame_error(self, error: str, stamp: int, frame_id: str = "") -> Frame:
        """Record that the newest frame could not be read: commands get `error` until the next good frame."""
        frame = Frame(stamp=int(stamp), frame_id=frame_id, error=error)
        with self._lock:
            self._latest = frame
        return frame

    def set_depth(self, depth, stamp: int, frame_id: str = "") -> Stamped:
        """Cache a depth image registered to the camera images (the newest few are kept).

        Arguments:
            depth (ndarray float32 [h,w] | callable): metres (NaN or 0 where invalid), or a
                function returning them (called only if a command needs this depth); a
                ValueError it raises makes this depth unusable, with that reason.
            stamp (int): its stamp, nanoseconds.
            frame_id (str): its optical frame (the regions' frame without a target_frame).
        """
        item = Stamped(int(stamp), frame_id)
        if callable(depth):
            item.decode = depth
        else:
            item.value = depth
        return self._depths.put(item)

    def set_camera_info(self, intrinsics, stamp: int, frame_id: str = "", error: str = "") -> Stamped:
        """Cache the intrinsics of the depth image (lisa_ros.geometry.CameraIntrinsics), or
        `error` saying why a camera_info message was unusable."""
        return self._camera_infos.put(Stamped(int(stamp), frame_id, value=intrinsics, error=error))

    def set_camera_pose(self, pose, stamp: int, target_frame: str) -> Stamped:
        """Cache a camera pose: the 4x4 camera-to-`target_frame` transform at `stamp`
        (used by `cached_pose`)."""
        return self._poses.put(Stamped(int(stamp), target_frame, value=np.asarray(pose, dtype=np.float64)))

    def cached_pose(self, camera_frame: str, stamp: int) -> tuple[np.ndarray, str]:
        """A `pose_lookup` over the poses given to `set_camera_pose`: the nearest by stamp.

        Raises LookupError when none was received, it is too far from `stamp`
        (max_depth_skew), or it is in another frame than target_frame.
        """
        item = self._poses.nearest(int(stamp))
        if item is None:
            raise LookupError("no camera pose received yet (pose_topic)")
        if self.target_frame and item.frame_id != self.target_frame:
            raise LookupError(f"the camera poses are in {item.frame_id!r}, not target_frame {self.target_frame!r}")
        message = _skew_error("camera pose", item, stamp, self.max_depth_skew)
        if message:
            raise LookupError(message)
        return item.value, item.frame_id

    @property
    def latest_frame(self) -> Frame | None:
        with self._lock:
            return self._latest

    def reset_conversation(self) -> None:
        """Start a new conversation with the next command (thread-safe)."""
        with self._lock:
            self._reset_pending = True

    # --- answering ------------------------------------------------------------------
    def answer(
        self,
        command_id: int,
        command: str,
        stamp_now: int,
        image=None,
        reset: bool = False,
        progress: Callable[[Stage, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Result:
        """Answer one command; never raises for bad input or model failures.

        Arguments:
            command_id (int): the caller's id, copied to the result.
            command (str): what to segment or ask.
            stamp_now (int): when the command was received, nanoseconds (the image-age reference).
            image (ndarray uint8 [H,W,3] | Frame | None): answer on this image instead of the
                cached frame (no age check); an ndarray gets stamp_now as its stamp.
            reset (bool): start a new conversation first.
            progress (callable(stage, partial_answer) | None): called at each Stage.
            should_cancel (callable() -> bool | None): polled between stages; when it turns
                true the command stops with a canceled ERROR result.

        Returns:
            Result: status OK (masks), NO_TARGET (answer without [SEG]) or ERROR.
        """
        start = time.perf_counter()
        frame = None
        try:
            with self._lock:
                if reset or self._reset_pending or not self.keep_conversation:
                    self.conversation.reset()
                    self._reset_pending = False
                cached = self._latest
            message = self._command_error(command)
            if message:
                return self._failed(command_id, command, stamp_now, message)
            if image is None:
                frame = cached
                if frame is None:
                    return self._failed(command_id, command, stamp_now, "no image has been received yet")
                age = (int(stamp_now) - frame.stamp) / NS_PER_S
                if self.max_image_age > 0 and age > self.max_image_age:
                    return self._failed(
                        command_id,
                        command,
                        stamp_now,
                        f"no recent image: the newest is {age:.3f} s older than the command "
                        f"(max_image_age is {self.max_image_age:g} s)",
                        frame,
                    )
            elif isinstance(image, Frame):
                frame = image
            else:
                frame = Frame(stamp=int(stamp_now), decode=lambda: image)
            try:
                rgb = frame.image()
            except ValueError as error:
                return self._failed(command_id, command, stamp_now, f"invalid image: {error}", frame)
            return self._predict(command_id, command, stamp_now, frame, rgb, start, progress, should_cancel)
        except Exception as error:  # a model failure must not take the caller down
            self.logger.error(f"command {command_id} failed: {traceback.format_exc()}")
            self._encoded = None
            return self._failed(command_id, command, stamp_now, f"model failed: {type(error).__name__}: {error}", frame)

    def _command_error(self, command) -> str:
        if not isinstance(command, str):
            return f"the command must be text, got {type(command).__name__}"
        if not command.strip():
            return "the command is empty"
        if len(command) > self.max_command_length:
            limit = self.max_command_length
            return f"the command has {len(command)} characters; at most {limit} are accepted (max_command_length)"
        return ""

    def _failed(self, command_id, command, stamp, message, frame=None) -> Result:
        self.logger.warning(f"command {command_id} {_quote(command)}: {message}")
        return error_result(command_id, command if isinstance(command, str) else "", stamp, message, frame)

    def _predict(self, command_id, command, stamp, frame, rgb, start, progress, should_cancel) -> Result:
        report = progress or (lambda stage, text: None)
        cancelled = should_cancel or (lambda: False)
        timings: dict[str, float] = {}
        if cancelled():
            return self._canceled(command_id, command, stamp, frame)
        if self._encoded is not frame:
            report(Stage.ENCODING_IMAGE, "")
            self._encoded = None
            self.predictor.set_image(rgb)
            self._encoded = frame
            timings.update(self.predictor.image_timings)
        if cancelled():
            return self._canceled(command_id, command, stamp, frame)
        report(Stage.GENERATING, "")
        try:
            prediction = self.predictor.predict(command, self.conversation)
        except ValueError as error:
            if not self.conversation.turns or "context" not in str(error):
                raise
            # The conversation outgrew the model's context: start a new one and try again.
            self.logger.warning(f"the conversation outgrew the model's context ({error}); starting a new one")
            self.conversation.reset()
            prediction = self.predictor.predict(command, self.conversation)
        timings.update(prediction.timings)
        masks = np.asarray(prediction.masks, dtype=bool)
        region_start = time.perf_counter()
        regions, region_frame, region_status = self.regions(frame, rgb, masks)
        timings["regions"] = time.perf_counter() - region_start
        timings["total"] = time.perf_counter() - start
        result = Result(
            command_id=command_id,
            command=command,
            stamp=stamp,
            frame_stamp=frame.stamp,
            frame_id=frame.frame_id,
            status=Status.OK if masks.shape[0] else Status.NO_TARGET,
            answer=prediction.text,
            masks=masks,
            scores=np.asarray(prediction.scores, dtype=np.float32),
            boxes=mask_boxes(masks),
            timings=timings,
            image=rgb,
            regions=regions,
            region_frame=region_frame,
            region_status=region_status,
        )
        report(Stage.DONE, result.answer)
        return result

    # --- 3D regions -----------------------------------------------------------------
    def regions(self, frame: Frame, rgb: np.ndarray, masks: np.ndarray) -> tuple[list, str, str]:
        """The 3D region of each mask; never raises.

        Returns:
            (regions, region_frame, region_status): one TargetRegion or None per mask (an
            empty list when no region was computed), the frame of their coordinates, and
            why regions are missing ("" when every mask has one).
        """
        if masks.shape[0] == 0:
            return [], "", NO_MASK
        try:
            inputs, status = self._region_inputs(frame, rgb)
            if inputs is None:
                return [], "", f"no 3D region: {status}"
            depth, intrinsics, pose, region_frame = inputs
            from . import geometry

            regions, reasons = [], [status] if status else []
            for index, mask in enumerate(masks):
                points = geometry.backproject_mask(
                    mask, depth, intrinsics, self.min_depth, self.max_depth, self.mask_erosion
                )
                region = None
                if len(points) == 0:
                    reasons.append(f"mask {index}: no valid depth under the mask")
                else:
                    if pose is not None:
                        points = geometry.transform_points(points, pose)
                    region = geometry.extract_region(points, voxel_size=self.voxel_size)
                    if region is None:
                        reasons.append(f"mask {index}: no consistent cluster in its {len(points)} depth points")
                regions.append(region)
            if all(region is None for region in regions):
                regions = []
            return regions, region_frame, "; ".join(reasons)
        except Exception as error:  # a geometry failure must not lose the 2D answer
            self.logger.error(f"3D region failed: {traceback.format_exc()}")
            return [], "", f"no 3D region: failed: {type(error).__name__}: {error}"

    def _region_inputs(self, frame: Frame, rgb: np.ndarray):
        """((depth, intrinsics, pose | None, region frame), note) for `frame`, or (None, reason)."""
        if frame.depth is not None:  # the frame brings its own (bag evaluator, datasets)
            depth_item = Stamped(frame.stamp, frame.depth_frame_id or frame.frame_id)
            if callable(frame.depth):
                depth_item.decode = frame.depth
            else:
                depth_item.value = frame.depth
            if frame.intrinsics is None:
                return None, "the frame has depth but no intrinsics"
            info_item = Stamped(frame.stamp, depth_item.frame_id, value=frame.intrinsics)
        else:
            depth_item = self._depths.nearest(frame.stamp)
            if depth_item is None:
                return None, "no depth image received (depth_topic)"
            info_item = self._camera_infos.nearest(frame.stamp)
            if info_item is None:
                return None, "no camera_info received (camera_info_topic)"
            for what, item in (("depth image", depth_item), ("camera_info", info_item)):
                message = _skew_error(what, item, frame.stamp, self.max_depth_skew)
                if message:
                    return None, message
        try:
            depth = np.asarray(depth_item.get(), dtype=np.float32)
        except ValueError as error:
            return None, f"invalid depth image: {error}"
        try:
            intrinsics = info_item.get()
        except ValueError as error:
            return None, f"invalid camera_info: {error}"
        if depth.ndim != 2 or depth.size == 0:
            return None, f"invalid depth image: expected a 2D array, got shape {depth.shape}"
        height, width = depth.shape
        image_height, image_width = rgb.shape[:2]
        if abs(width * image_height - height * image_width) > 0.01 * width * image_height:
            return None, (
                f"the depth image ({width}x{height}) and the image ({image_width}x{image_height}) "
                "have different aspect ratios: depth must be registered to the image"
            )
        if not (intrinsics.width > 0 and intrinsics.height > 0 and intrinsics.fx > 0 and intrinsics.fy > 0):
            return None, "invalid camera_info: no calibration (zero K or size)"
        if (intrinsics.width, intrinsics.height) != (width, height):
            if abs(intrinsics.width * height - intrinsics.height * width) > 0.01 * intrinsics.width * height:
                return None, (
                    f"camera_info is for {intrinsics.width}x{intrinsics.height} images, "
                    f"the depth image is {width}x{height} (another aspect ratio)"
                )
            intrinsics = intrinsics.scaled(width, height)
        camera_frame = depth_item.frame_id or frame.frame_id
        if frame.depth is not None:
            if frame.pose is None:
                return (depth, intrinsics, None, camera_frame), ""
            pose, region_frame = np.asarray(frame.pose, dtype=np.float64), frame.target_frame
        elif self.pose_lookup is not None:
            try:
                pose, region_frame = self.pose_lookup(camera_frame, frame.stamp)
            except LookupError as error:
                target = self.target_frame or "the target frame"
                return None, f"no camera pose in {target} for the image: {error}"
            pose = np.asarray(pose, dtype=np.float64)
        else:
            note = ""
            if self.target_frame and self.target_frame != camera_frame:
                note = (
                    f"target_frame {self.target_frame!r} is unreachable (no tf2_ros and no pose_topic): "
                    f"regions are in the camera frame {camera_frame!r}"
                )
            return (depth, intrinsics, None, camera_frame), note
        from . import geometry

        if not geometry.is_valid_pose(pose):
            return None, "the camera pose is invalid (not a finite rigid transform)"
        return (depth, intrinsics, pose, region_frame), ""

    def _canceled(self, command_id, command, stamp, frame) -> Result:
        self.logger.info(f"command {command_id} {_quote(command)}: canceled")
        return error_result(command_id, command, stamp, "canceled", frame, canceled=True)

    def close(self) -> None:
        """Drop the model and free its memory (the CUDA cache too)."""
        model = getattr(self.predictor, "model", None)
        on_cuda = model is not None and getattr(getattr(model, "device", None), "type", "") == "cuda"
        self.predictor = None
        self._encoded = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()


def _quote(command) -> str:
    text = command if isinstance(command, str) else repr(command)
    return repr(text if len(text) <= 80 else text[:77] + "...")


# --- the worker thread --------------------------------------------------------------


class Job:
    """One submitted command: its arguments, state and (once done) its result."""

    QUEUED, RUNNING, DONE = "queued", "running", "done"

    def __init__(self, command_id, command, stamp, image, reset, on_result, on_progress):
        self.command_id = command_id
        self.command = command
        self.stamp = stamp
        self.image = image
        self.reset = reset
        self.on_result = on_result
        self.on_progress = on_progress
        self.accepted = True
        self.state = Job.QUEUED
        self.result: Result | None = None
        self.submitted = time.perf_counter()
        self._cancel_requested = False
        self._lock = threading.Lock()
        self._done = threading.Event()

    @classmethod
    def rejected(cls, result: Result, on_result: Callable[[Result], None] | None = None) -> "Job":
        """A command refused before it was queued: a done job holding `result` (delivered to on_result now)."""
        job = cls(result.command_id, result.command, result.stamp, None, False, on_result, None)
        job.accepted = False
        job._finish(result)
        return job

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def wait(self, timeout: float | None = None) -> Result | None:
        """Block until the result is delivered; returns it (None on timeout)."""
        self._done.wait(timeout)
        return self.result

    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> bool:
        """Cancel the command. A queued one is removed and gets a canceled result now
        (returns True); a running one stops at its next stage boundary (returns False)."""
        with self._lock:
            self._cancel_requested = True
            if self.state != Job.QUEUED:
                return False
            self.state = Job.DONE
        self._finish(
            error_result(self.command_id, self.command, self.stamp, "canceled before it was answered", canceled=True)
        )
        return True

    def _start(self) -> bool:
        with self._lock:
            if self.state != Job.QUEUED:
                return False
            self.state = Job.RUNNING
            return True

    def _finish(self, result: Result) -> None:
        with self._lock:
            self.state = Job.DONE
        self.result = result
        try:
            if self.on_result is not None:
                self.on_result(result)
        finally:
            self._done.set()


class CommandWorker:
    """Answers submitted commands one at a time on its own thread, in submission order.

    The queue holds at most `queue_size` commands; a command submitted to a full queue
    is answered at once with an ERROR result. Results go to the job's `on_result`
    callback (on the worker thread, or the submitting thread for immediate errors).
    """

    def __init__(self, pipeline: Pipeline, queue_size: int = 64, logger=None):
        self.pipeline = pipeline
        self.logger = logger or logging.getLogger(__name__)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._stopping = False
        self._submit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lisa-command-worker", daemon=True)
        self._thread.start()

    def submit(
        self,
        command_id: int,
        command: str,
        stamp: int,
        image=None,
        reset: bool = False,
        on_result: Callable[[Result], None] | None = None,
        on_progress: Callable[[Stage, str], None] | None = None,
    ) -> Job:
        """Queue a command (arguments as Pipeline.answer). Returns its Job; `job.accepted`
        is False when the queue was full or the worker stopped (the job then already
        holds its ERROR result, delivered to on_result before this returns)."""
        job = Job(command_id, command, stamp, image, reset, on_result, on_progress)
        with self._submit_lock:
            if self._stopping:
                reason = "the node is shutting down"
            else:
                try:
                    self._queue.put_nowait(job)
                    reason = ""
                except queue.Full:
                    reason = f"too many commands waiting ({self._queue.maxsize}, queue_size); try again later"
        if reason:
            self.logger.warning(f"command {command_id} {_quote(command)}: {reason}")
            try:
                return Job.rejected(error_result(command_id, command, stamp, reason), on_result)
            except Exception:
                self.logger.error(f"the result callback of command {command_id} failed: {traceback.format_exc()}")
                return job
        if on_progress is not None:
            self._progress(job, Stage.QUEUED, "")
        return job

    def pending(self) -> int:
        """Commands waiting (not counting the one being answered)."""
        return self._queue.qsize()

    def stop(self, timeout: float = 30.0) -> None:
        """Answer queued commands with an ERROR result, let the running one finish, end the thread."""
        with self._submit_lock:
            self._stopping = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job._start():
                self._deliver(
                    job, error_result(job.command_id, job.command, job.stamp, "the node stopped before answering")
                )
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.logger.warning(f"the command worker did not stop within {timeout} s")

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if not job._start():  # canceled while queued
                continue
            waited = time.perf_counter() - job.submitted
            try:
                result = self.pipeline.answer(
                    job.command_id,
                    job.command,
                    job.stamp,
                    image=job.image,
                    reset=job.reset,
                    progress=(
                        (lambda stage, text, job=job: self._progress(job, stage, text)) if job.on_progress else None
                    ),
                    should_cancel=lambda job=job: job.cancel_requested,
                )
            except Exception as error:  # Pipeline.answer does not raise; a stand-in might: keep the thread alive
                self.logger.error(f"command {job.command_id} failed: {traceback.format_exc()}")
                result = error_result(
                    job.command_id, job.command, job.stamp, f"failed: {type(error).__name__}: {error}"
                )
            result.timings = {"queue_wait": waited, **result.timings}
            self._deliver(job, result)

    def _deliver(self, job: Job, result: Result) -> None:
        try:
            job._finish(result)
        except Exception:
            self.logger.error(f"the result callback of command {job.command_id} failed: {traceback.format_exc()}")

    def _progress(self, job: Job, stage: Stage, text: str) -> None:
        try:
            job.on_progress(stage, text)
        except Exception:
            self.logger.error(f"the progress callback of command {job.command_id} failed: {traceback.format_exc()}")
