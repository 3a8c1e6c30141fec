"""Frames and commands in, results out: the one code path behind the live node and the bag tools.

ROS-free (numpy; the model through `lisa_model`, imported when a model is loaded).
`Pipeline` owns the predictor and the conversation: it caches the newest frame,
validates each command and answers it on the newest frame (or on an image the
command carries); its `lifter` (lisa_ros.runtime.regions) turns the masks into 3D regions.
Each answered mask then stays alive as a live target: the pipeline's `tracker`
(lisa_ros.runtime.tracker) finds every live target on the newest frame with the mask
decoder alone, fuses its 3D views, and re-asks the command when a target is lost.
`lisa_ros.runtime.worker.CommandWorker` runs a pipeline on its own thread.

Nothing here raises for bad input: every command gets exactly one `Result`, whose
status is OK, NO_TARGET or ERROR (with a message). While it is generated, each [SEG]'s mask
is sent at once as an early result (`answer`'s on_early; lisa_ros.runtime.early), and the
answer's text as it grows (on_text).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import traceback
from typing import Callable

import numpy as np

from .early import Canceled, EarlyResults
from .parameters import defaults, tracking_settings, validate
from .regions import GEOMETRY_PARAMETERS, RegionLifter
from .shared_models import ModelRegistry
from .stamps import HISTORY, Stamped
from .tracker import Tracker
from .tracking import TrackingSettings
from .types import NO_MASK, NS_PER_S, Frame, Result, Stage, Status, error_result, mask_boxes, quote_command
from .warm_up import warm_up_regions

# With depth in use a command may be answered on an image older than the newest one (the
# newest whose depth has arrived), but not older than this: 30 frames at 30 Hz.
PAIRING_WINDOW_S = 1.0


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; other values unchanged.

    Raises ValueError, saying what to do, for "cuda" on a machine where torch sees no GPU
    (torch itself fails later with a bare AssertionError).
    """
    import torch  # lisa_model depends on it; only needed when a model is loaded

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(
            f"device is 'cuda' but torch finds no CUDA GPU (torch {torch.__version__}, {build}): "
            "set device to 'auto' or 'cpu' to run on the CPU, or check the GPU driver (nvidia-smi) "
            "and install a CUDA build of torch"
        )
    return device


def command_error(command, max_length: int) -> str:
    """Why `command` cannot be answered (not text, empty, longer than max_length characters), or ""."""
    if not isinstance(command, str):
        return f"the command must be text, got {type(command).__name__}"
    if not command.strip():
        return "the command is empty"
    if len(command) > max_length:
        return f"the command has {len(command)} characters; at most {max_length} are accepted (max_command_length)"
    return ""


class Pipeline:
    """The predictor, the conversation and the newest frame; answers commands.

    `set_frame` may be called from any thread; `answer` from one thread at a time
    (the CommandWorker's). A frame is encoded (CLIP, SAM's encoder) once: ahead of the commands
    with pre_encode (`pre_encode_newest`, called by the idle CommandWorker), else when a command
    needs it. A command is answered on the pre-encoded frame when that is at least as new as
    the newest frame when it came (command_frame), else on the newest frame now; the predictor
    checks the image's key (the frame's stamp) on every answer.

    With depth in use (a depth image was cached), a command is answered on the newest
    image that has a depth image and camera_info within max_depth_skew (an approximate-time
    pair, as message_filters makes), so a depth image that arrives after its colour image
    does not cost the answer its 3D region.

    model_lock: held around every model call by the CommandWorker; pipelines sharing one
    loaded model (one per camera) share it.
    """

    def __init__(
        self,
        predictor,
        *,
        max_image_age: float = 1.0,
        max_command_length: int = 1000,
        max_image_pixels: int = 50_000_000,
        max_image_aspect_ratio: float = 20.0,
        keep_conversation: bool = True,
        conversation_template: str = "",
        tracking: TrackingSettings | None = None,
        pre_encode: bool = True,
        logger=None,
        **region_settings,
    ):
        """
        Arguments:
            predictor (lisa_model.LisaPredictor): the model; used only by `answer`.
            max_image_age (float): seconds the cached frame may be older than a command; 0: any age.
            max_command_length (int): longest command accepted, in characters.
            max_image_pixels, max_image_aspect_ratio: the largest image accepted (H*W) and its
                most elongated shape (longer side / shorter side); a larger one is an invalid
                image (the model's preprocessing would allocate gigabytes for a 1x30000 strip).
            keep_conversation (bool): answer follow-ups in the context of earlier commands until
                a reset; False: every command starts a new conversation.
            conversation_template (str): prompt template name; "": the model's own.
            tracking (TrackingSettings | None): how answered targets are tracked; None: the defaults.
            pre_encode (bool): `pre_encode_newest` encodes the newest frame ahead of the commands.
            logger: anything with info/warning/error(str) methods; default: logging.
            **region_settings: the RegionLifter's settings (min_depth, max_depth, mask_erosion,
                max_depth_skew, voxel_size, target_frame, pose_lookup).
        """
        from lisa_model import Conversation

        self.predictor = predictor
        self.max_image_age = float(max_image_age)
        self.max_command_length = int(max_command_length)
        self.max_image_pixels = int(max_image_pixels)
        self.max_image_aspect_ratio = float(max_image_aspect_ratio)
        self.keep_conversation = bool(keep_conversation)
        template = conversation_template or predictor.model.config.conversation_template
        self.conversation = Conversation(template)
        self.logger = logger or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._frames: collections.deque[Frame] = collections.deque(maxlen=HISTORY)  # newest last
        self.model_lock = contextlib.nullcontext()
        self._release_model = None
        self._encoded: Frame | None = None
        self._reset_pending = False
        self.pre_encode = bool(pre_encode)
        self._refused: Frame | None = None  # an invalid frame pre_encode_newest met
        self.pre_encoded = 0  # frames encoded ahead of a command
        self.last_pre_encode_s = 0.0
        self.lifter = RegionLifter(logger=self.logger, **region_settings)
        self.tracker = Tracker(self, tracking or TrackingSettings())

    @classmethod
    def from_parameters(cls, params: dict, logger=None, models: ModelRegistry | None = None) -> "Pipeline":
        """Load the model the parameters name (or share one loaded already) and build a pipeline around it.

        Arguments:
            params (dict): lisa_ros.runtime.parameters names -> values; missing ones take their
                defaults. model_path "" loads the built-in demo model (lisa_model.DEMO_MODEL_DIR).
            logger: as for the constructor.
            models (ModelRegistry | None): where loaded models are shared (one per process, for
                a node per camera); None: this pipeline loads its own.

        Raises:
            ValueError: a parameter value is invalid, or the device is not there.
            Exception: whatever loading the model raises (missing files, ...).
        """
        from lisa_model import LisaPredictor

        logger = logger or logging.getLogger(__name__)
        values = defaults()
        values.update(params)
        for name in defaults():
            values[name] = validate(name, values[name])
        models = models or ModelRegistry()
        shared = models.acquire(values, logger)
        try:
            predictor = LisaPredictor(
                shared.model,
                shared.tokenizer,
                max_new_tokens=values["max_new_tokens"],
                decode_mode=values["decode_mode"],
                short_answer=values["short_answer"],
            )
            pipeline = cls(
                predictor,
                max_image_age=values["max_image_age"],
                max_command_length=values["max_command_length"],
                max_image_pixels=values["max_image_pixels"],
                max_image_aspect_ratio=values["max_image_aspect_ratio"],
                keep_conversation=values["keep_conversation"],
                conversation_template=values["conversation_template"],
                tracking=tracking_settings(values),
                pre_encode=values["pre_encode"],
                logger=logger,
                **{name: values[name] for name in GEOMETRY_PARAMETERS},
            )
        except BaseException:
            models.release(shared)
            raise
        pipeline.model_lock = shared.lock
        pipeline._release_model = lambda: models.release(shared)
        return pipeline

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
        frame = Frame(stamp=int(stamp), frame_id=frame_id, received=time.perf_counter(), **geometry)
        if callable(image):
            frame.decode = image
        else:
            frame.decode = lambda: image
        with self._lock:
            self.tracker.count_skipped(self._frames[-1] if self._frames else None)
            self._frames.append(frame)
        return frame

    def set_depth(self, depth, stamp: int, frame_id: str = "") -> Stamped:
        """Cache a depth image for the 3D regions (RegionLifter.set_depth)."""
        return self.lifter.set_depth(depth, stamp, frame_id)

    def set_camera_info(self, intrinsics, stamp: int, frame_id: str = "", error: str = "") -> Stamped:
        """Cache the depth image's intrinsics (RegionLifter.set_camera_info)."""
        return self.lifter.set_camera_info(intrinsics, stamp, frame_id, error)

    def set_camera_pose(self, pose, stamp: int, target_frame: str) -> Stamped:
        """Cache a camera pose (RegionLifter.set_camera_pose)."""
        return self.lifter.set_camera_pose(pose, stamp, target_frame)

    @property
    def latest_frame(self) -> Frame | None:
        with self._lock:
            return self._frames[-1] if self._frames else None

    def answer_frame(self, received_by: float | None = None) -> Frame | None:
        """The frame a command is answered on: the newest one, or with depth in use the newest
        one that has its depth image and camera_info (the newest one when none has), among the
        frames at most PAIRING_WINDOW_S older than the newest (an approximate-time pair, as
        message_filters makes them: never an image of another moment).

        received_by (float | None): only frames received by then (time.perf_counter seconds).
        """
        with self._lock:
            frames = [f for f in self._frames if received_by is None or f.received <= received_by]
        for frame in reversed(frames):
            if frames[-1].stamp - frame.stamp > PAIRING_WINDOW_S * NS_PER_S:
                break
            paired = self.lifter.has_depth(frame.stamp)
            if paired is None:  # depth is not in use
                break
            if paired:
                return frame
        return frames[-1] if frames else None

    def command_frame(self, arrived: float | None = None) -> Frame | None:
        """The frame a command that arrived at `arrived` (time.perf_counter seconds; None: now)
        is answered on: the pre-encoded frame when it is at least as new as the answer frame
        at the command's arrival (and, with depth in use, has its depth), else answer_frame()."""
        newest, encoded = self.answer_frame(), self._encoded
        if arrived is None or encoded is None or encoded is newest or self.lifter.has_depth(encoded.stamp) is False:
            return newest
        with self._lock:
            order = {id(frame): index for index, frame in enumerate(self._frames)}
        at_arrival = self.answer_frame(received_by=arrived)
        if at_arrival is None or id(encoded) not in order or id(at_arrival) not in order:
            return newest
        return encoded if order[id(encoded)] >= order[id(at_arrival)] else newest

    def pre_encode_due(self) -> Frame | None:
        """With pre_encode, the frame a command would be answered on now when it is not encoded yet."""
        frame = self.answer_frame()
        if self.pre_encode and frame is not None and frame is not self._encoded and frame is not self._refused:
            return frame
        return None

    def pre_encode_newest(self) -> Frame | None:
        """Encode `pre_encode_due()`'s frame before a command needs it (on the answering thread,
        between commands), with SAM's embedding of it when the tracker computed one (then only
        CLIP runs). Returns the frame encoded, None when none is due or the frame is not a valid
        image (a command on it says why); raises whatever the model raises."""
        frame = self.pre_encode_due()
        if frame is None:
            return None
        try:
            rgb = self.checked_image(frame)
        except ValueError:
            self._refused = frame  # not tried again
            return None
        start = time.perf_counter()
        self.encode(frame, rgb, self.tracker.embedding_of(frame))
        self.last_pre_encode_s = time.perf_counter() - start
        self.pre_encoded += 1
        return frame

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
        on_early: Callable[[Result], None] | None = None,
        on_text: Callable[[str], None] | None = None,
        arrived: float | None = None,
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
            should_cancel (callable() -> bool | None): polled between stages and as the answer's
                text grows; when it turns true the command stops with a canceled ERROR result.
            on_early (callable(Result) | None): gets an early result (Result.early, the masks so
                far) once per [SEG], the moment it is generated, before the final result.
            on_text (callable(str) | None): the answer's text as it is generated, in increments.
            arrived (float | None): when the command arrived (time.perf_counter seconds; see
                command_frame); None: it is answered on the newest frame now.

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
            message = self._command_error(command)
            if message:
                return self._failed(command_id, command, stamp_now, message)
            if image is None:
                frame = self.command_frame(arrived)
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
                rgb = self.checked_image(frame)
            except ValueError as error:
                return self._failed(command_id, command, stamp_now, f"invalid image: {error}", frame)
            early = EarlyResults(Result(command_id, command, stamp_now), frame, rgb, start, on_early)
            return self._predict(early, progress, should_cancel, on_text)
        except Canceled:
            return self._canceled(command_id, command, stamp_now, frame)
        except Exception as error:  # a model failure must not take the caller down
            self.logger.error(f"command {command_id} failed: {traceback.format_exc()}")
            self._encoded = None
            return self._failed(command_id, command, stamp_now, f"model failed: {type(error).__name__}: {error}", frame)

    def checked_image(self, frame: Frame) -> np.ndarray:
        """The frame's decoded image within the size limits; ValueError saying what is wrong."""
        from lisa_model.processing.image import validate_rgb_image

        rgb = frame.image()
        validate_rgb_image(rgb, self.max_image_pixels, self.max_image_aspect_ratio)
        return rgb

    def _command_error(self, command) -> str:
        return command_error(command, self.max_command_length)

    def _failed(self, command_id, command, stamp, message, frame=None) -> Result:
        self.logger.warning(f"command {command_id} {quote_command(command)}: {message}")
        return error_result(command_id, command if isinstance(command, str) else "", stamp, message, frame)

    def _predict(self, early: EarlyResults, progress, should_cancel, on_text) -> Result:
        report = progress or (lambda stage, text: None)
        command, frame, rgb = early.command.command, early.frame, early.rgb

        def check_cancel(*text) -> None:  # between stages and as the text grows (stops the generation)
            if should_cancel is not None and should_cancel():
                raise Canceled
            if text and on_text is not None:
                on_text(*text)

        check_cancel()
        encoded_now = self._encoded is not frame
        if encoded_now:
            report(Stage.ENCODING_IMAGE, "")
            self.encode(frame, rgb)
        check_cancel()
        report(Stage.GENERATING, "")
        from lisa_model import ContextOverflowError

        def predict():
            return self.predictor.predict(
                command, self.conversation, on_mask=early.add, on_text=check_cancel, image_key=frame.stamp
            )

        notes, conversation_reset = [], False
        try:
            prediction = predict()
        except ContextOverflowError as error:
            if not self.conversation.turns:
                raise
            # The conversation outgrew the model's context: start a new one and try again.
            self.logger.warning(f"the conversation outgrew the model's context ({error}); starting a new one")
            turns = len(self.conversation.turns)
            self.conversation.reset()
            conversation_reset = True
            notes.append(f"the conversation outgrew the model's context: its {turns} earlier turns were dropped")
            prediction = predict()
        # Image timings read after the answer: SAM's encoder may have run beside the language model.
        timings = {**(self.predictor.image_timings if encoded_now else {}), **prediction.timings}
        timings.pop("first_mask", None)  # the predictor's counts from its own start; ours from the command's
        timings.update(early.timings())
        if prediction.truncated:
            notes.append("the answer was cut short: the model's context is full")
        masks = np.asarray(prediction.masks, dtype=bool)
        region_start = time.perf_counter()
        view, lifted, regions, region_frame, region_status = self._regions(frame, rgb, masks)
        timings["regions"] = time.perf_counter() - region_start
        result = early.command
        result.frame_stamp, result.frame_id = frame.stamp, frame.frame_id
        result.status = Status.OK if masks.shape[0] else Status.NO_TARGET
        result.answer = prediction.text
        result.masks, result.boxes = masks, mask_boxes(masks)
        result.scores = np.asarray(prediction.scores, dtype=np.float32)
        result.timings, result.image = timings, rgb
        result.regions, result.region_frame, result.region_status = regions, region_frame, region_status
        result.depth_stamp = view.depth_stamp if view is not None else 0
        result.truncated, result.conversation_reset = prediction.truncated, conversation_reset
        result.notice = "; ".join(notes)
        result.targets = self.tracker.start(result, prediction.seg_embeddings, frame, view, lifted)
        timings["total"] = time.perf_counter() - early.start
        report(Stage.DONE, result.answer)
        return result

    def encode(self, frame: Frame, rgb: np.ndarray, image_embedding=None) -> None:
        """Make `frame` (decoded: `rgb`) the predictor's image (CLIP and SAM), unless it is already.

        image_embedding (lisa_model.ImageEmbedding | None): SAM's embedding of this frame, when
        computed already (the tracker's): SAM's encoder is skipped.
        """
        if self._encoded is frame:
            return
        self._encoded = None  # set_image may fail half-way
        self.predictor.set_image(rgb, key=frame.stamp, image_embedding=image_embedding)
        self._encoded = frame

    def warm_up(self, image_size: tuple[int, int] = (480, 640)) -> dict[str, float]:
        """Run every stage once, so the first command is as fast as the later ones: the model's
        (LisaPredictor.warm_up: encoders, generation, mask decoder) and one 3D region extraction
        (lisa_ros.runtime.warm_up). Returns seconds per stage ("model_*", "regions") and "total"."""
        start = time.perf_counter()
        self._encoded = None  # warm_up resets the predictor's image
        timings = {f"model_{stage}": seconds for stage, seconds in self.predictor.warm_up(image_size).items()}
        step = time.perf_counter()
        warm_up_regions(self.lifter, image_size)
        timings["regions"] = time.perf_counter() - step
        timings["total"] = time.perf_counter() - start
        return timings

    def _regions(self, frame: Frame, rgb: np.ndarray, masks: np.ndarray):
        """(view, [(points, region, reason)] per mask, regions, region_frame, region_status) of an answer."""
        if masks.shape[0] == 0:
            return None, [], [], "", NO_MASK
        view, note = self.lifter.view(frame, rgb)
        if view is None:
            return None, [], [], "", f"no 3D region: {note}"
        lifted = [self.lifter.lift(mask, view) for mask in masks]
        reasons = ([note] if note else []) + [f"mask {i}: {why}" for i, (_, _, why) in enumerate(lifted) if why]
        regions = [region for _, region, _ in lifted]
        if all(region is None for region in regions):
            regions = []
        return view, lifted, regions, view.region_frame, "; ".join(reasons)

    def _canceled(self, command_id, command, stamp, frame) -> Result:
        self.logger.info(f"command {command_id} {quote_command(command)}: canceled")
        return error_result(command_id, command, stamp, "canceled", frame, canceled=True)

    def close(self) -> None:
        """Drop the model: the last pipeline sharing it frees its memory (the CUDA cache too)."""
        self.predictor = None
        self._encoded = None
        release, self._release_model = self._release_model, None
        if release is not None:
            release()
