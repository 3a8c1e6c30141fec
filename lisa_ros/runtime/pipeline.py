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
status is OK, NO_TARGET or ERROR (with a message).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Callable

import numpy as np

from .parameters import defaults, tracking_settings, validate
from .regions import GEOMETRY_PARAMETERS, RegionLifter
from .stamps import Stamped
from .tracker import Tracker
from .tracking import TrackingSettings
from .types import NO_MASK, NS_PER_S, Frame, Result, Stage, Status, error_result, mask_boxes, quote_command


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
        max_image_pixels: int = 50_000_000,
        max_image_aspect_ratio: float = 20.0,
        keep_conversation: bool = True,
        conversation_template: str = "",
        tracking: TrackingSettings | None = None,
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
        self._latest: Frame | None = None
        self._encoded: Frame | None = None
        self._reset_pending = False
        self.lifter = RegionLifter(logger=self.logger, **region_settings)
        self.tracker = Tracker(self, tracking or TrackingSettings())

    @classmethod
    def from_parameters(cls, params: dict, logger=None) -> "Pipeline":
        """Load the model the parameters name and build a pipeline around it.

        Arguments:
            params (dict): lisa_ros.runtime.parameters names -> values; missing ones take their
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
                "only on the synthetic table scenes of lisa_ros.synthetic.scenes. Set model_path to a LISA checkpoint."
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
            max_image_pixels=values["max_image_pixels"],
            max_image_aspect_ratio=values["max_image_aspect_ratio"],
            keep_conversation=values["keep_conversation"],
            conversation_template=values["conversation_template"],
            tracking=tracking_settings(values),
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
            self.tracker.count_skipped(self._latest)
            self._latest = frame
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
                rgb = self.checked_image(frame)
            except ValueError as error:
                return self._failed(command_id, command, stamp_now, f"invalid image: {error}", frame)
            return self._predict(command_id, command, stamp_now, frame, rgb, start, progress, should_cancel)
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
        if not isinstance(command, str):
            return f"the command must be text, got {type(command).__name__}"
        if not command.strip():
            return "the command is empty"
        if len(command) > self.max_command_length:
            limit = self.max_command_length
            return f"the command has {len(command)} characters; at most {limit} are accepted (max_command_length)"
        return ""

    def _failed(self, command_id, command, stamp, message, frame=None) -> Result:
        self.logger.warning(f"command {command_id} {quote_command(command)}: {message}")
        return error_result(command_id, command if isinstance(command, str) else "", stamp, message, frame)

    def _predict(self, command_id, command, stamp, frame, rgb, start, progress, should_cancel) -> Result:
        report = progress or (lambda stage, text: None)
        cancelled = should_cancel or (lambda: False)
        timings: dict[str, float] = {}
        if cancelled():
            return self._canceled(command_id, command, stamp, frame)
        if self._encoded is not frame:
            report(Stage.ENCODING_IMAGE, "")
            self.encode(frame, rgb)
            timings.update(self.predictor.image_timings)
        if cancelled():
            return self._canceled(command_id, command, stamp, frame)
        report(Stage.GENERATING, "")
        from lisa_model import ContextOverflowError

        notes, conversation_reset = [], False
        try:
            prediction = self.predictor.predict(command, self.conversation)
        except ContextOverflowError as error:
            if not self.conversation.turns:
                raise
            # The conversation outgrew the model's context: start a new one and try again.
            self.logger.warning(f"the conversation outgrew the model's context ({error}); starting a new one")
            turns = len(self.conversation.turns)
            self.conversation.reset()
            conversation_reset = True
            notes.append(f"the conversation outgrew the model's context: its {turns} earlier turns were dropped")
            prediction = self.predictor.predict(command, self.conversation)
        timings.update(prediction.timings)
        if prediction.truncated:
            notes.append("the answer was cut short: the model's context is full")
        masks = np.asarray(prediction.masks, dtype=bool)
        region_start = time.perf_counter()
        view, lifted, regions, region_frame, region_status = self._regions(frame, rgb, masks)
        timings["regions"] = time.perf_counter() - region_start
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
            truncated=prediction.truncated,
            conversation_reset=conversation_reset,
            notice="; ".join(notes),
        )
        result.targets = self.tracker.start(result, prediction.seg_embeddings, frame, view, lifted)
        timings["total"] = time.perf_counter() - start
        report(Stage.DONE, result.answer)
        return result

    def encode(self, frame: Frame, rgb: np.ndarray) -> None:
        """Make `frame` (decoded: `rgb`) the predictor's image (CLIP and SAM), unless it is already."""
        if self._encoded is frame:
            return
        self._encoded = None  # set_image may fail half-way
        self.predictor.set_image(rgb)
        self._encoded = frame

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
        """Drop the model and free its memory (the CUDA cache too)."""
        model = getattr(self.predictor, "model", None)
        on_cuda = model is not None and getattr(getattr(model, "device", None), "type", "") == "cuda"
        self.predictor = None
        self._encoded = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()
