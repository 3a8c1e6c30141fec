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
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lisa_ros.runtime import message_fields as fields
from lisa_ros.runtime.inputs import PipelineInputs
from lisa_ros.runtime.parameters import defaults, validate
from lisa_ros.runtime.types import NS_PER_S, Status

from .bagfile import STORAGES, OutputBag, open_reader, read_messages, storage_of
from .errors import EvalError
from .metrics import Answer, compute_metrics, latency_values
from .report import write_report
from .script import ScriptEntry, Truth, load_script
from .topics import BagTopics, requested_topics, select_inputs
from .transforms import TransformTree
from .typestore import typestore

LOG = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What evaluate() returns: the answers (with their scores), metrics.json's content, the output folder."""

    answers: list[Answer]
    metrics: dict
    output: Path


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
    Raises EvalError for a missing topic, an unreadable bag, a bad script or output.
    """
    values = defaults()
    values.update(params or {})
    for name in values:
        values[name] = validate(name, values[name])
    bag, output = Path(bag), Path(output)
    output_format = output_format or storage_of(bag)
    if output_format not in STORAGES:
        raise EvalError(f"output format must be mcap or sqlite3, got {output_format!r}")
    if output.exists() and any(output.iterdir()):
        raise EvalError(f"output folder {output} exists and is not empty")
    entries = load_script(script) if script is not None else None
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
        duration = max(0, reader.end_time - reader.start_time) / NS_PER_S
        if entries is not None:
            _check_times(entries, duration, script)
        pipeline = pipeline or _load_pipeline(values)
        output.mkdir(parents=True, exist_ok=True)
        output_bag = OutputBag(output / "bag", output_format, store, reader.connections, namespace)
        try:
            runner = BagRunner(
                pipeline,
                store,
                output_bag,
                depth_scale=values["depth_scale"],
                compressed=bag_topics.kind(topics["image"]) == "sensor_msgs/msg/CompressedImage",
                publish_overlay=values["publish_overlay"],
            )
            poses = "topic" if "pose" in topics else "tf" if "tf" in inputs.values() else None
            runner.set_pose_source(poses, values["target_frame"])
            runner.run(reader, bag, inputs, entries, progress)
        finally:
            output_bag.close()
    finally:
        reader.close()

    metrics = compute_metrics(runner.answers, runner.counts, values["voxel_size"])
    metrics["input"] = {
        "bag": str(bag),
        "topics": inputs,
        "duration_s": duration,
        "messages": runner.counts["messages_in"],
    }
    metrics["output"] = {"bag": str(output_bag.path), "storage": output_format, "topics": output_bag.topic_counts()}
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False, default=_json_default) + "\n")
    if report:
        write_report(output, runner.answers, metrics, latency_values(runner.answers))
    return Evaluation(runner.answers, metrics, output)


class BagRunner:
    """Feeds one bag's messages to a pipeline, as the node's subscriptions do, and answers
    the commands synchronously; writes every input and output message to the output bag.

    Camera messages (image, depth, camera_info, pose) go through the node's input adapter
    (lisa_ros.runtime.inputs); /tf messages feed the runner's TransformTree; commands are
    answered at once. `answers` and `counts` (frames, commands, answers, errors, no_target,
    ok, messages_in) grow as the bag is read.

    Arguments:
        pipeline (lisa_ros.runtime.pipeline.Pipeline): fresh (it must not have seen frames).
        store: the typestore the input messages are deserialized with.
        output (OutputBag): where the input messages are copied and the outputs written.
        depth_scale (float): integer depth units per metre of 16UC1 depth.
        compressed (bool): the image topic carries sensor_msgs/CompressedImage.
        publish_overlay (bool): write the overlay output (the node's publish_overlay).
    """

    def __init__(self, pipeline, store, output: OutputBag, *, depth_scale: float, compressed: bool,
                 publish_overlay: bool):  # fmt: skip
        self.pipeline, self.store, self.output = pipeline, store, output
        self.inputs = PipelineInputs(pipeline, lambda: depth_scale, compressed)
        self.publish_overlay = publish_overlay
        self.tree = TransformTree()
        self.answers: list[Answer] = []
        self.counts = {"frames": 0, "commands": 0, "answers": 0, "errors": 0, "no_target": 0, "ok": 0, "messages_in": 0}
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
        times, before the messages logged after them. `progress`: a progress bar on stderr."""
        from tqdm import tqdm

        pending = deque(entries or [])
        start = reader.start_time
        with tqdm(total=reader.message_count + len(pending), unit="msg", desc="lisa-eval-bag", file=sys.stderr,
                  disable=not progress) as bar:  # fmt: skip
            for connection, log_time, raw in read_messages(reader, bag):
                while pending and start + round(pending[0].time * NS_PER_S) < log_time:
                    self.on_entry(pending.popleft(), start)
                    bar.update(1)
                self.output.copy(connection, log_time, raw)
                self.counts["messages_in"] += 1
                role = inputs.get(connection.topic)
                if role is not None:
                    self.handlers[role](_deserialize(self.store, connection, log_time, raw), log_time)
                bar.update(1)
            while pending:
                self.on_entry(pending.popleft(), start)
                bar.update(1)

    def on_image(self, msg, log_time: int) -> None:
        self.counts["frames"] += 1
        self.inputs.image(msg, log_time)

    def on_transforms(self, msg, log_time: int) -> None:
        self.tree.add(msg)

    def on_command(self, msg, log_time: int) -> None:
        """A std_msgs/String command from the bag (no ground truth)."""
        self.answer(msg.data, log_time, None)

    def on_entry(self, entry: ScriptEntry, start: int) -> None:
        """A script's command, at its time from the bag's `start` (ns)."""
        self.answer(entry.command, start + round(entry.time * NS_PER_S), entry.truth)

    def answer(self, command: str, log_time: int, truth: Truth | None) -> None:
        """Answer a command at once on the newest frame and write the node's outputs at `log_time`."""
        self.counts["commands"] += 1
        result = self.pipeline.answer(self.counts["commands"], command, log_time)  # ids 1, 2, ...
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
