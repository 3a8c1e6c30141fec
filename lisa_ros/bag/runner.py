"""The node's pipeline run offline over a rosbag2: the bag tools' entry point.

Deterministic: messages are fed in log-time order, every frame is given to the pipeline
and every command is answered synchronously on the newest frame at its time (the bag's
clock is the pipeline's clock, so `max_image_age` applies to bag time); nothing is dropped.
Commands come from the bag's command topic (std_msgs/String) or from a script
(lisa_ros.bag.script).

Outputs in the output folder: `bag/` (the input topics copied through plus everything the
node publishes, under the namespace), `metrics.json`, `report.html` with overlays
(`overlays/*.png`) and latency histograms (`latency_*.png`).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
import threading
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from lisa_ros.runtime import message_fields as fields
from lisa_ros.runtime.inputs import PipelineInputs
from lisa_ros.runtime.parameters import defaults, validate
from lisa_ros.runtime.types import NS_PER_S, Status

from .bagfile import STORAGES, OutputBag, first_image_size, open_reader, read_messages, storage_of
from .errors import EvalError
from .metrics import Answer, compute_metrics, latency_values
from .report import write_report
from .script import ScriptEntry, Truth, load_script
from .topics import BagTopics, requested_topics, select_inputs
from .tracking import TrackedFrame, tracking_metrics, write_strips
from .transforms import TransformTree
from .typestore import typestore
from .voice import speak_commands, voice_metrics

LOG = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What evaluate() returns: the answers (with their scores), metrics.json's content, the output
    folder, and the signal that stopped the run early (None: every message and command was done)."""

    answers: list[Answer]
    metrics: dict
    output: Path
    stopped_by: signal.Signals | None = None


def evaluate(
    bag,
    output,
    params: dict | None = None,
    *,
    image_topic: str | None = None,
    depth_topic: str | None = None,
    camera_info_topic: str | None = None,
    command_topic: str | None = None,
    pose_topic: str | None = None,
    script=None,
    namespace: str = "/lisa",
    output_format: str | None = None,
    pipeline=None,
    progress: bool = True,
    report: bool = True,
    tracking_baseline: bool = False,
    voices: Sequence[str] = (),
    voice_speed: int = 160,
    acoustic_model: str | Path | None = None,
) -> Evaluation:
    """Run the node's pipeline over a bag; write the output bag, metrics.json and report.html.

    Arguments:
        bag: a rosbag2 folder (or a single .mcap / .db3 file).
        output: a new folder for the outputs.
        params (dict): lisa_ros.runtime.parameters values (model_path, max_image_age, target_frame,
            use_pose_topic, ...).
        *_topic: input topics; None: the node's input topic at the root (/image, /depth,
            /camera_info, /command; /camera_pose when use_pose_topic is true). depth and
            camera_info are optional unless named; no pose topic and no tf: no poses.
        script: a YAML/JSONL command script (lisa_ros.bag.script); None: commands from the command topic.
        namespace: where the node's outputs go (<namespace>/result, ...).
        output_format: "mcap" or "sqlite3"; None: the input's.
        pipeline: a lisa_ros.runtime.pipeline.Pipeline to use instead of loading one from params
            (fresh: it must not have seen frames).
        progress: show a progress bar (stderr).
        report: write report.html.
        tracking_baseline: also answer each live target's command again on every tracked image
            (costly), to compare tracking with re-answering (metrics' tracking.reanswer_giou).
        voices: espeak-ng voices: the voice leg (lisa_ros.bag.voice). The script's commands are
            spoken in these voices in turn at `voice_speed` words per minute, recognised as the
            speech node does, and what was heard is answered instead (metrics' "voice" section).
        acoustic_model: the voice leg's acoustic model folder (lisa-adapt-speech); None: the wheel's en-us.
    Raises EvalError for a missing topic, an unreadable bag, a bad script or output (all but the
    model checked before the model loads). SIGINT or SIGTERM during the run (in the main thread)
    stops it after the message or command at hand: the outputs cover what was done, metrics.json
    says "complete": false, and the Evaluation's `stopped_by` is the signal.
    """
    values = defaults()
    values.update(params or {})
    for name in values:
        values[name] = validate(name, values[name])
    bag, output = Path(bag), Path(output)
    output_format = output_format or storage_of(bag)
    if output_format not in STORAGES:
        raise EvalError(f"output format must be mcap or sqlite3, got {output_format!r}")
    entries = load_script(script) if script is not None else None
    if voices and entries is None:
        raise EvalError("the voice leg speaks the script's commands: give --script")
    named = {"image": image_topic, "depth": depth_topic, "camera_info": camera_info_topic,
             "command": command_topic, "pose": pose_topic}  # fmt: skip
    topics, required = requested_topics(named, values["use_pose_topic"], script=entries is not None)

    store = typestore()
    reader = open_reader(bag)
    try:
        bag_topics = BagTopics(reader.connections)
        inputs = select_inputs(bag_topics, topics, required, bag, script=entries is not None)
        if reader.message_count == 0:
            raise EvalError(f"bag {bag} has no messages")
        start, duration = reader.start_time, max(0, reader.end_time - reader.start_time) / NS_PER_S
        compressed = bag_topics.kind(topics["image"]) == "sensor_msgs/msg/CompressedImage"
        image_size = first_image_size(reader, bag, topics["image"], store, compressed)
        if entries is not None:
            _check_times(entries, duration, script)
            _check_mask_sizes(entries, image_size, topics["image"])
        _prepare_output(output)
        spoken = []
        if voices:
            spoken = speak_commands([entry.command for entry in entries], voices, voice_speed, progress=progress,
                                    acoustic_model=acoustic_model)
            entries = [replace(entry, command=item.heard) for entry, item in zip(entries, spoken)]
        pipeline = pipeline or _load_pipeline(values)
        output_bag = OutputBag(output / "bag", output_format, store, reader.connections, namespace)
        runner = BagRunner(
            pipeline,
            store,
            output_bag,
            depth_scale=values["depth_scale"],
            compressed=compressed,
            publish_overlay=values["publish_overlay"],
            tracking_baseline=tracking_baseline,
        )
        poses = "topic" if "pose" in topics else "tf" if "tf" in inputs.values() else None
        runner.set_pose_source(poses, values["target_frame"])
        with _stop_on_signals(runner):
            try:
                runner.run(reader, bag, inputs, entries, progress)
            finally:
                output_bag.close()
    finally:
        reader.close()

    stopped_by = runner.stopped_by.name if runner.stopped_by else None
    metrics = {"complete": stopped_by is None, "stopped_by": stopped_by, "session_id": runner.session_id}
    metrics.update(compute_metrics(runner.answers, runner.counts, values["voxel_size"], image_size))
    metrics["tracking"] = tracking_metrics(runner.answers, runner.tracked, start, values["voxel_size"])
    if voices:
        metrics["voice"] = voice_metrics(spoken)
    metrics["input"] = {
        "bag": str(bag),
        "topics": inputs,
        "duration_s": duration,
        "messages": runner.counts["messages_in"],
    }
    metrics["output"] = {"bag": str(output_bag.path), "storage": output_format, "topics": output_bag.topic_counts()}
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False, default=_json_default) + "\n")
    if report:
        strips = write_strips(output, runner.answers, runner.tracked)
        write_report(output, runner.answers, metrics, latency_values(runner.answers), strips)
    return Evaluation(runner.answers, metrics, output, runner.stopped_by)


class BagRunner:
    """Feeds one bag's messages to a pipeline, as the node's subscriptions do, and answers
    the commands synchronously; writes every input and output message to the output bag.

    Camera messages (image, depth, camera_info, pose) go through the node's input adapter
    (lisa_ros.runtime.inputs); /tf messages feed the runner's TransformTree; commands are
    answered at once. The live targets are tracked on each image once every message logged
    at its time has been fed (as the node does once the image and its depth are in), before
    anything later; `tracked` lists the tracked images. `answers` and `counts` (frames,
    commands, answers, errors, no_target, ok, messages_in) grow as the bag is read.

    Arguments:
        pipeline (lisa_ros.runtime.pipeline.Pipeline): fresh (it must not have seen frames).
        store: the typestore the input messages are deserialized with.
        output (OutputBag): where the input messages are copied and the outputs written.
        depth_scale (float): integer depth units per metre of 16UC1 depth.
        compressed (bool): the image topic carries sensor_msgs/CompressedImage.
        publish_overlay (bool): write the overlay output (the node's publish_overlay).
    """

    def __init__(self, pipeline, store, output: OutputBag, *, depth_scale: float, compressed: bool,
                 publish_overlay: bool, tracking_baseline: bool = False):  # fmt: skip
        self.pipeline, self.store, self.output = pipeline, store, output
        self.tracked: list[TrackedFrame] = []
        self._image_time: int | None = None  # log time of an image not tracked yet
        self.session_id = str(uuid.uuid4())  # as the node's: command ids restart with each run
        self._baseline = None
        if tracking_baseline:  # its own predictor (own image and KV caches) over the same model
            from lisa_model import LisaPredictor

            predictor = pipeline.predictor
            self._baseline = LisaPredictor(predictor.model, predictor.tokenizer, predictor.max_new_tokens)
        self.inputs = PipelineInputs(pipeline, lambda: depth_scale, compressed)
        self.publish_overlay = publish_overlay
        self.tree = TransformTree()
        self.answers: list[Answer] = []
        self.counts = {"frames": 0, "commands": 0, "answers": 0, "errors": 0, "no_target": 0, "ok": 0, "messages_in": 0}
        self.stopped_by: signal.Signals | None = None  # set (by a signal handler): run() returns at the next step
        # role (lisa_ros.bag.topics.select_inputs) -> what a message of it does: handler(msg, log_time)
        self.handlers = {
            "image": self.on_image,
            "depth": self.inputs.depth,
            "camera_info": self.inputs.camera_info,
            "pose": self.inputs.camera_pose,
            "tf": self.on_transforms,
            "command": self.on_command,
        }

    def set_pose_source(self, source: str | None, target_frame: str) -> None:
        """Where the camera poses come from: "topic" (the pose messages), "tf" (the bag's /tf and
        /tf_static, used when target_frame is set) or None; the 3D regions go to target_frame."""
        lifter = self.pipeline.lifter
        if source == "topic":
            lifter.pose_lookup = lifter.cached_pose
        elif source == "tf" and target_frame:

            def tf_pose(camera_frame, stamp):  # no interpolation in time: the newest transforms
                return self.tree.lookup(target_frame, camera_frame), target_frame

            lifter.pose_lookup = tf_pose
        lifter.target_frame = target_frame

    def run(self, reader, bag: Path, inputs: dict, entries: list[ScriptEntry] | None, progress: bool) -> None:
        """Copy every message of `reader` (the open `bag`) to the output bag and feed those of
        `inputs` (topic -> role) in log-time order; the script's `entries` are answered at their
        times, before the messages logged after them. `progress`: a progress bar on stderr (with
        the answers so far). Returns early, between two messages or commands, once `stopped_by` is set."""
        from tqdm import tqdm

        pending = deque(entries or [])
        start = reader.start_time
        with tqdm(total=reader.message_count + len(pending), unit="msg", desc="lisa-eval-bag", file=sys.stderr,
                  disable=not progress) as bar:  # fmt: skip
            shown = 0

            def advance() -> None:  # one message or command done; the bar shows the answers so far
                nonlocal shown
                bar.update(1)
                if len(self.answers) > shown:
                    shown = len(self.answers)
                    bar.set_postfix(answers=shown)

            for connection, log_time, raw in read_messages(reader, bag):
                self.track(before=log_time)
                while pending and not self.stopped_by and start + round(pending[0].time * NS_PER_S) < log_time:
                    self.on_entry(pending.popleft(), start)
                    advance()
                if self.stopped_by:
                    return
                self.output.copy(connection, log_time, raw)
                self.counts["messages_in"] += 1
                role = inputs.get(connection.topic)
                if role is not None:
                    self.handlers[role](_deserialize(self.store, connection, log_time, raw), log_time)
                advance()
            self.track()
            while pending and not self.stopped_by:
                self.on_entry(pending.popleft(), start)
                advance()

    def on_image(self, msg, log_time: int) -> None:
        self.counts["frames"] += 1
        self.inputs.image(msg, log_time)
        self._image_time = log_time

    def track(self, before: int | None = None) -> None:
        """Track the live targets on the newest image, unless it was logged at `before` or later
        (more of its instant may follow) or it is tracked already; write the outputs at its log time."""
        if self._image_time is None or (before is not None and before <= self._image_time):
            return
        log_time, self._image_time = self._image_time, None
        update = self.pipeline.tracker.track(wait_for_inputs=False)  # everything of its instant is in
        if update is None:
            return
        for name, values in fields.tracking_outputs(update, self.publish_overlay):
            self.output.publish(name, values, log_time)
        self.tracked.append(TrackedFrame(update, log_time, self._reanswer(update)))

    def _reanswer(self, update) -> dict:
        """target id -> the mask of answering its command again on the tracked image (baseline)."""
        if self._baseline is None or update.image is None:
            return {}
        from lisa_model import Conversation

        self._baseline.set_image(update.image)
        masks, answers = {}, {}
        for target in update.targets:
            if target.command not in answers:
                conversation = Conversation(self.pipeline.conversation.template)
                answers[target.command] = self._baseline.predict(target.command, conversation)
            prediction = answers[target.command]
            if len(prediction.masks):
                masks[target.target_id] = np.asarray(prediction.masks[0], bool)
        return masks

    def on_transforms(self, msg, log_time: int) -> None:
        self.tree.add(msg)

    def on_command(self, msg, log_time: int) -> None:
        """A std_msgs/String command from the bag (no ground truth)."""
        self.track(before=log_time)
        self.answer(msg.data, log_time, None)

    def on_entry(self, entry: ScriptEntry, start: int) -> None:
        """A script's command, at its time from the bag's `start` (ns)."""
        log_time = start + round(entry.time * NS_PER_S)
        self.track(before=log_time)
        self.answer(entry.command, log_time, entry.truth)

    def answer(self, command: str, log_time: int, truth: Truth | None) -> None:
        """Answer a command at once on the newest frame and write the node's outputs at `log_time`."""
        self.counts["commands"] += 1
        result = self.pipeline.answer(self.counts["commands"], command, log_time)  # ids 1, 2, ...
        result.session_id = self.session_id
        result.timings = {"queue_wait": 0.0, **result.timings}  # answered at once: no queue
        if result.status == Status.ERROR:
            self.counts["errors"] += 1
        else:
            self.counts["answers"] += 1
            self.counts["ok" if result.status == Status.OK else "no_target"] += 1
        for name, values in fields.result_outputs(result, self.publish_overlay):
            self.output.publish(name, values, log_time)
        self.answers.append(Answer(result, log_time, truth))


def _load_pipeline(values: dict):
    """The pipeline the parameters name; EvalError when the model cannot be loaded."""
    from lisa_ros.runtime.pipeline import Pipeline

    try:
        return Pipeline.from_parameters(values, logger=LOG)
    except Exception as error:  # missing checkpoint, no GPU, ...
        raise EvalError(f"cannot load the model: {type(error).__name__}: {error}") from error


def _prepare_output(output: Path) -> None:
    """Create the output folder (new or empty) before the model loads; EvalError when it is a
    file, holds files, or cannot be written."""
    try:
        if output.exists() and not output.is_dir():
            raise EvalError(f"output {output} is a file, not a folder")
        if output.exists() and any(output.iterdir()):
            raise EvalError(f"output folder {output} exists and is not empty")
        output.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output).close()  # a write test: permissions alone say little to root
    except OSError as error:
        raise EvalError(f"cannot write the output folder {output}: {error.strerror or error}") from error


@contextmanager
def _stop_on_signals(runner: BagRunner):
    """Inside: SIGINT and SIGTERM set `runner.stopped_by` (the run ends at the next message or
    command, and the output bag is closed as usual) instead of interrupting a write; a second
    signal acts as usual. Only the main thread may handle signals: elsewhere nothing changes; an
    ignored signal (SIGINT of a background job) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    previous = {number: handler for number, handler in previous.items() if handler is not signal.SIG_IGN}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def stop(number, frame) -> None:
        runner.stopped_by = signal.Signals(number)
        restore()

    for number in previous:
        signal.signal(number, stop)
    try:
        yield
    finally:
        restore()


def _check_mask_sizes(entries: list[ScriptEntry], image_size: tuple[int, int], topic: str) -> None:
    """EvalError when a script's mask file (of a command or of its track) is not the size (H, W)
    of the bag's images."""
    masks = [(e, truth) for e in entries for truth in [e.truth, *e.truth.track]]
    wrong = [(e, truth) for e, truth in masks if truth.mask_size not in (None, image_size)]
    if wrong:
        entry, truth = wrong[0]
        height, width = truth.mask_size
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise EvalError(
            f"{entry.where}: ground-truth mask {truth.mask_path} is {width}x{height}, "
            f"the images on {topic} are {image_size[1]}x{image_size[0]}{more}"
        )


def _check_times(entries: list[ScriptEntry], duration: float, script) -> None:
    """EvalError when a script's command is outside the bag (0 to `duration` seconds)."""
    outside = [e for e in entries if not (0.0 <= e.time <= duration + 1e-9)]
    if outside:
        listed = "; ".join(f"{e.time:g} s {e.command!r}" for e in outside[:5])
        raise EvalError(
            f"script {script}: {len(outside)} command(s) at times outside the bag "
            f"(0 to {duration:.3f} s from its start): {listed}"
        )


def _deserialize(store, connection, log_time: int, raw):
    try:
        return store.deserialize_cdr(raw, connection.msgtype)
    except Exception as error:
        raise EvalError(
            f"cannot deserialize a {connection.msgtype} message on {connection.topic} at log time {log_time}: {error}"
        ) from error


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
