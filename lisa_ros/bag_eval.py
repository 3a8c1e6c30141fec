"""`lisa-eval-bag` / `ros2 run lisa_ros evaluate_bag`: the node's pipeline run offline on a rosbag2.

ROS-free: `rosbags` reads and writes the bags (sqlite3 and mcap), the processing is
lisa_ros.pipeline.Pipeline (the live node's code path), the output messages' content is
lisa_ros.message_fields (the node's too). Deterministic: messages are fed in log-time
order, every frame is given to the pipeline and every command is answered synchronously
on the newest frame at its time (the bag's clock is the pipeline's clock, so
`max_image_age` applies to bag time); nothing is dropped.

Commands come from the bag's command topic (std_msgs/String) or from a script (YAML or
JSON lines) of entries {time: seconds from the bag's start, command, and optional ground
truth: mask (PNG path relative to the script), polygon [[x, y], ...], box {center, size}
or object_id (a box in the script's `objects`)}.

Outputs in the output folder: `bag/` (the input topics copied through plus everything
the node publishes, under --namespace), `metrics.json`, `report.html` with overlays
(`overlays/*.png`) and latency histograms (`latency_*.png`).
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import codec
from . import message_fields as fields
from .parameters import defaults, validate
from .pipeline import NS_PER_S, Result, Status

LOG = logging.getLogger("lisa_ros.bag_eval")
CUSTOM_TYPES = ("BoundingBox2D", "SegmentationResult")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
TF_TOPICS = ("/tf", "/tf_static")


class EvalError(Exception):
    """A problem with the inputs (bag, topics, script, output): reported with exit code 2."""


# --- types and messages ---------------------------------------------------------------


def _msg_dirs() -> list[Path]:
    """Where lisa_ros' .msg files are: the source tree, then installed share/lisa_ros/msg."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "lisa_ros" / "msg")
    candidates += [parent / "share" / "lisa_ros" / "msg" for parent in here.parents[:6]]
    return [path for path in candidates if (path / "SegmentationResult.msg").is_file()]


def typestore():
    """A rosbags typestore: ROS 2 Kilted's types plus lisa_ros' messages from their .msg text."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    dirs = _msg_dirs()
    if not dirs:
        raise EvalError("cannot find lisa_ros' msg/SegmentationResult.msg (source tree or share/lisa_ros/msg)")
    types = {}
    for name in CUSTOM_TYPES:
        types.update(get_types_from_msg((dirs[0] / f"{name}.msg").read_text(), f"lisa_ros/msg/{name}"))
    store.register(types)
    return store


_DTYPES = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "uint8": np.uint8, "int8": np.int8,
    "uint16": np.uint16, "int16": np.int16, "uint32": np.uint32, "int32": np.int32,
    "uint64": np.uint64, "int64": np.int64, "float32": np.float32, "float64": np.float64,
}  # fmt: skip


def _base_default(kind: str):
    if kind in ("string", "wstring"):
        return ""
    if kind == "bool":
        return False
    return 0.0 if kind.startswith("float") else 0


def build(store, typename: str, values: dict | None = None):
    """A rosbags message of `typename` from lisa_ros.message_fields' nested dicts; fields
    left out get their defaults (zero, empty; a Quaternion's w is 1, as in ROS 2)."""
    from rosbags.typesys.base import Nodetype

    values = values or {}
    _, definitions = store.fielddefs[typename]
    arguments = {}
    for name, (kind, detail) in definitions:
        value = values.get(name)
        if kind == Nodetype.BASE:
            if value is None:
                value = 1.0 if (typename, name) == ("geometry_msgs/msg/Quaternion", "w") else _base_default(detail[0])
        elif kind == Nodetype.NAME:
            value = build(store, detail, value)
        else:  # ARRAY or SEQUENCE: (element (kind, detail), length)
            (element_kind, element_detail), length = detail
            if element_kind == Nodetype.BASE and element_detail[0] not in ("string", "wstring"):
                dtype = _DTYPES[element_detail[0]]
                if value is None:
                    value = np.zeros(length if kind == Nodetype.ARRAY else 0, dtype)
                elif isinstance(value, (bytes, bytearray, memoryview)):
                    value = np.frombuffer(value, np.uint8).astype(dtype, copy=False)
                else:
                    value = np.asarray(value, dtype=dtype)
            elif element_kind == Nodetype.BASE:
                value = list(value or ([""] * length if kind == Nodetype.ARRAY else []))
            else:
                items = value or ([{}] * length if kind == Nodetype.ARRAY else [])
                value = [build(store, element_detail, item) for item in items]
        arguments[name] = value
    return store.types[typename](**arguments)


# --- transforms (tf / tf_static) ---------------------------------------------------------


class TransformTree:
    """Static transforms plus the latest dynamic transform of each child frame, composed
    along the chain between two frames (no interpolation in time: the newest wins)."""

    def __init__(self):
        self.parents: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, child-to-parent)

    def add(self, tf_message) -> None:
        for transform in tf_message.transforms:
            child, parent = transform.child_frame_id.lstrip("/"), transform.header.frame_id.lstrip("/")
            self.parents[child] = (parent, fields.transform_msg_to_matrix(transform.transform))

    def _to_root(self, frame: str) -> list[tuple[str, np.ndarray]]:
        chain, seen = [(frame, np.eye(4))], {frame}
        while chain[-1][0] in self.parents:
            parent, matrix = self.parents[chain[-1][0]]
            if parent in seen:
                break
            seen.add(parent)
            chain.append((parent, matrix @ chain[-1][1]))  # start -> child -> parent
        return chain

    def lookup(self, target: str, source: str) -> np.ndarray:
        """The 4x4 source-to-target transform; LookupError when the frames are not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        up_source = dict(self._to_root(source))
        for frame, target_to_frame in self._to_root(target):
            if frame in up_source:  # common ancestor: source -> frame -> target
                return np.linalg.inv(target_to_frame) @ up_source[frame]
        raise LookupError(f"no transform chain from {source!r} to {target!r} in /tf and /tf_static")


# --- scripts ------------------------------------------------------------------------


@dataclass
class Truth:
    """Ground truth of one command: a 2D mask (path or polygon) and/or a 3D box."""

    mask_path: Path | None = None
    polygon: list | None = None
    box_center: np.ndarray | None = None
    box_size: np.ndarray | None = None
    object_id: str | None = None

    @property
    def has_2d(self) -> bool:
        return self.mask_path is not None or self.polygon is not None

    @property
    def has_3d(self) -> bool:
        return self.box_center is not None

    def mask(self, height: int, width: int) -> np.ndarray:
        """uint8 [H,W]: 1 object, 0 background (lisa_model.metrics' target format)."""
        if self.mask_path is not None:
            from PIL import Image

            try:
                with Image.open(self.mask_path) as image:
                    array = np.asarray(image.convert("L"))
            except OSError as error:
                raise EvalError(f"cannot read ground-truth mask {self.mask_path}: {error}") from error
            if array.shape != (height, width):
                raise EvalError(
                    f"ground-truth mask {self.mask_path} is {array.shape[1]}x{array.shape[0]}, "
                    f"the image answered is {width}x{height}"
                )
            return (array > 0).astype(np.uint8)
        import cv2

        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [np.round(np.asarray(self.polygon, np.float64)).astype(np.int32)], 1)
        return mask


@dataclass
class ScriptEntry:
    time: float
    command: str
    truth: Truth = field(default_factory=Truth)
    index: int = 0


def _box(value, where: str):
    try:
        center = np.asarray(value["center"], np.float64).reshape(3)
        size = np.asarray(value["size"], np.float64).reshape(3)
    except (TypeError, KeyError, ValueError) as error:
        raise EvalError(f"{where}: a box needs center [x, y, z] and size [x, y, z] ({error})") from None
    return center, size


def load_script(path) -> list[ScriptEntry]:
    """Read a YAML (a list of entries, or {commands: [...], objects: {id: {center, size}}})
    or JSON-lines script (one entry per line; a line with object_id, center and size and no
    command defines an object). Raises EvalError saying what is wrong, and where."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise EvalError(f"cannot read script {path}: {error}") from error
    objects, raw = {}, []
    try:
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                item = json.loads(line)
                if isinstance(item, dict) and "command" not in item and "object_id" in item:
                    objects[str(item["object_id"])] = item
                else:
                    raw.append((f"{path.name} line {number}", item))
        else:
            content = yaml.safe_load(text)
            if isinstance(content, dict):
                objects = {str(k): v for k, v in (content.get("objects") or {}).items()}
                content = content.get("commands")
            if not isinstance(content, list):
                raise EvalError(f"script {path}: expected a list of entries (or a mapping with 'commands')")
            raw = [(f"{path.name} entry {number}", item) for number, item in enumerate(content, 1)]
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise EvalError(f"cannot parse script {path}: {error}") from error
    entries = []
    for index, (where, item) in enumerate(raw):
        if not isinstance(item, dict) or "time" not in item or "command" not in item:
            raise EvalError(f"{where}: each entry needs 'time' (seconds from the bag's start) and 'command'")
        try:
            when = float(item["time"])
        except (TypeError, ValueError):
            raise EvalError(f"{where}: time must be a number of seconds, got {item['time']!r}") from None
        if not math.isfinite(when):
            raise EvalError(f"{where}: time must be finite, got {item['time']!r}")
        if not isinstance(item["command"], str):
            raise EvalError(f"{where}: command must be text, got {item['command']!r}")
        truth = Truth()
        if item.get("mask") is not None:
            truth.mask_path = (path.parent / str(item["mask"])).resolve()
            if not truth.mask_path.is_file():
                raise EvalError(f"{where}: ground-truth mask {truth.mask_path} does not exist")
        if item.get("polygon") is not None:
            polygon = np.asarray(item["polygon"], dtype=np.float64) if item["polygon"] else np.zeros((0, 2))
            if polygon.ndim != 2 or polygon.shape[1] != 2 or len(polygon) < 3:
                raise EvalError(f"{where}: polygon must be a list of at least 3 [x, y] points")
            truth.polygon = polygon.tolist()
        if item.get("box") is not None:
            truth.box_center, truth.box_size = _box(item["box"], where)
        if item.get("object_id") is not None:
            key = str(item["object_id"])
            if key not in objects:
                raise EvalError(f"{where}: object_id {key!r} is not among the script's objects")
            truth.object_id = key
            truth.box_center, truth.box_size = _box(objects[key], f"{where}: object {key!r}")
        entries.append(ScriptEntry(when, item["command"], truth, index))
    entries.sort(key=lambda entry: (entry.time, entry.index))
    return entries


# --- evaluation -----------------------------------------------------------------------


@dataclass
class Answer:
    """One command's result with its ground truth and scores."""

    result: Result
    log_time: int
    truth: Truth | None = None
    iou: float | None = None
    iou_3d: float | None = None
    centroid_error: float | None = None
    overlay: str = ""


@dataclass
class Evaluation:
    answers: list[Answer]
    metrics: dict
    output: Path


def _topic(name: str) -> str:
    return name if name.startswith("/") else "/" + name


def _storage(bag: Path) -> str:
    if bag.is_file():
        return "mcap" if bag.suffix == ".mcap" else "sqlite3"
    return "mcap" if any(bag.glob("*.mcap")) else "sqlite3"


def _stats(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"count": 0, "median": None, "p90": None, "max": None, "mean": None}
    return {
        "count": int(values.size),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


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
        params (dict): lisa_ros.parameters values (model_path, max_image_age, target_frame,
            ...); topic parameters are the defaults of the topic arguments.
        *_topic: input topics; None: the parameter's (e.g. "image" -> /image). depth and
            camera_info are optional unless named; pose_topic "" and no tf: no poses.
        script: a YAML/JSONL command script; None: commands from command_topic.
        namespace: where the node's outputs go (<namespace>/result, ...).
        output_format: "mcap" or "sqlite3"; None: the input's.
        pipeline: a lisa_ros.pipeline.Pipeline to use instead of loading one from params
            (fresh: it must not have seen frames).
    Raises EvalError for a missing topic, an unreadable bag, a bad script or output.
    """
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    values = defaults()
    values.update(params or {})
    for name in values:
        values[name] = validate(name, values[name])
    bag, output = Path(bag), Path(output)
    named = {"depth": depth_topic is not None, "camera_info": camera_info_topic is not None}
    topics = {
        "image": _topic(image_topic or values["image_topic"]),
        "depth": _topic(depth_topic or values["depth_topic"]),
        "camera_info": _topic(camera_info_topic or values["camera_info_topic"]),
        "command": _topic(command_topic or values["command_topic"]),
    }
    pose = pose_topic if pose_topic is not None else values["pose_topic"]
    if pose:
        topics["pose"] = _topic(pose)
    output_format = output_format or _storage(bag)
    if output_format not in ("mcap", "sqlite3"):
        raise EvalError(f"output format must be mcap or sqlite3, got {output_format!r}")
    if output.exists() and any(output.iterdir()):
        raise EvalError(f"output folder {output} exists and is not empty")
    entries = load_script(script) if script is not None else None

    store = typestore()
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as error:  # rosbags raises several kinds (FileNotFoundError, ReaderError, yaml, sqlite, mcap)
        raise EvalError(f"cannot read bag {bag}: {type(error).__name__}: {error}") from error
    try:
        return _run(
            reader, store, bag, output, values, topics, named, entries, script, namespace,
            StoragePlugin.MCAP if output_format == "mcap" else StoragePlugin.SQLITE3, Writer,
            pipeline, progress, report,
        )  # fmt: skip
    finally:
        reader.close()


def _run(
    reader, store, bag, output, values, topics, named, entries, script, namespace, plugin, Writer, pipeline, progress,
    report,
) -> Evaluation:  # fmt: skip
    """evaluate()'s work once the bag is open."""
    by_topic = {}
    for connection in reader.connections:
        by_topic.setdefault(connection.topic, []).append(connection)

    def kind(topic):
        types = {c.msgtype for c in by_topic.get(topic, [])}
        return types.pop() if len(types) == 1 else None

    available = ", ".join(f"{t} ({kind(t) or 'several types'})" for t in sorted(by_topic)) or "none"
    expected = {
        "image": IMAGE_TYPES,
        "depth": ("sensor_msgs/msg/Image",),
        "camera_info": ("sensor_msgs/msg/CameraInfo",),
        "command": ("std_msgs/msg/String",),
        "pose": ("geometry_msgs/msg/PoseStamped",),
    }
    required = ["image"] + [k for k in ("depth", "camera_info") if named[k]] + (["pose"] if "pose" in topics else [])
    if entries is None:
        required.append("command")
    inputs = {}
    for key, topic in topics.items():
        if topic not in by_topic:
            if key in required:
                note = " (and no --script was given)" if key == "command" else ""
                raise EvalError(f"bag {bag} has no {key} topic {topic}{note}; its topics: {available}")
            continue
        if key == "command" and entries is not None:
            continue  # the script's commands replace the bag's
        if kind(topic) not in expected[key]:
            raise EvalError(
                f"topic {topic} ({key}) is {kind(topic) or 'of several types'}, expected {' or '.join(expected[key])}"
            )
        inputs[topic] = key
    for topic in TF_TOPICS:
        if topic in by_topic and kind(topic) == "tf2_msgs/msg/TFMessage" and "pose" not in topics:
            inputs[topic] = "tf"

    start, end = reader.start_time, reader.end_time
    duration = max(0, end - start) / NS_PER_S
    if reader.message_count == 0:
        raise EvalError(f"bag {bag} has no messages")
    if entries is not None:
        outside = [e for e in entries if not (0.0 <= e.time <= duration + 1e-9)]
        if outside:
            listed = "; ".join(f"{e.time:g} s {e.command!r}" for e in outside[:5])
            raise EvalError(
                f"script {script}: {len(outside)} command(s) at times outside the bag "
                f"(0 to {duration:.3f} s from its start): {listed}"
            )

    if pipeline is None:
        from .pipeline import Pipeline

        try:
            pipeline = Pipeline.from_parameters(values, logger=LOG)
        except Exception as error:  # missing checkpoint, no GPU, ...
            raise EvalError(f"cannot load the model: {type(error).__name__}: {error}") from error
    tree = TransformTree()
    target = values["target_frame"]
    if "pose" in topics:
        pipeline.pose_lookup = pipeline.cached_pose
    elif target and any(k == "tf" for k in inputs.values()):

        def tf_pose(camera_frame, stamp):
            return tree.lookup(target, camera_frame), target

        pipeline.pose_lookup = tf_pose
    pipeline.target_frame = target

    output.mkdir(parents=True, exist_ok=True)
    writer = Writer(output / "bag", version=9, storage_plugin=plugin)
    try:
        writer.open()
    except Exception as error:
        raise EvalError(f"cannot write the output bag {output / 'bag'}: {error}") from error
    out_connections, copied = {}, {}
    for connection in reader.connections:
        key = (connection.topic, connection.msgtype)
        if key in copied:
            out_connections[connection.id] = copied[key]
            continue
        msgdef, digest = connection.msgdef.data, connection.digest
        ext = connection.ext
        kwargs = dict(
            serialization_format=getattr(ext, "serialization_format", "cdr"),
            offered_qos_profiles=getattr(ext, "offered_qos_profiles", []),
        )
        if msgdef and digest:
            out = writer.add_connection(connection.topic, connection.msgtype, msgdef=msgdef, rihs01=digest, **kwargs)
        else:
            out = writer.add_connection(connection.topic, connection.msgtype, typestore=store, **kwargs)
        copied[key] = out_connections[connection.id] = out
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    outputs = {
        name: writer.add_connection(f"{namespace}/{name}", msgtype, typestore=store)
        for name, msgtype in fields.OUTPUT_TYPES.items()
    }

    answers: list[Answer] = []
    counts = {"frames": 0, "commands": 0, "answers": 0, "errors": 0, "no_target": 0, "ok": 0, "messages_in": 0}
    out_counts = {name: 0 for name in outputs}
    depth_scale = values["depth_scale"]
    next_id = [0]

    def answer(command: str, log_time: int, truth: Truth | None) -> None:
        next_id[0] += 1
        counts["commands"] += 1
        result = pipeline.answer(next_id[0], command, log_time)
        result.timings = {"queue_wait": 0.0, **result.timings}  # answered at once: no queue
        if result.status == Status.ERROR:
            counts["errors"] += 1
        else:
            counts["answers"] += 1
            counts["ok" if result.status == Status.OK else "no_target"] += 1
        for name, values_ in fields.result_outputs(result, values["publish_overlay"]):
            msgtype = fields.OUTPUT_TYPES[name]
            data = store.serialize_cdr(build(store, msgtype, values_), msgtype)
            writer.write(outputs[name], log_time, data)
            out_counts[name] += 1
        answers.append(Answer(result, log_time, truth))

    pending = list(entries or [])
    pending_index = 0
    total = reader.message_count + len(pending)
    bar = _progress(total, progress)
    try:
        for connection, log_time, raw in _messages(reader, bag):
            while pending_index < len(pending) and start + round(pending[pending_index].time * NS_PER_S) < log_time:
                entry = pending[pending_index]
                answer(entry.command, start + round(entry.time * NS_PER_S), entry.truth)
                pending_index += 1
                bar.update(1)
            writer.write(out_connections[connection.id], log_time, raw)
            counts["messages_in"] += 1
            role = inputs.get(connection.topic)
            if role is not None:
                try:
                    msg = store.deserialize_cdr(raw, connection.msgtype)
                except Exception as error:
                    raise EvalError(
                        f"cannot deserialize a {connection.msgtype} message on {connection.topic} "
                        f"at log time {log_time}: {error}"
                    ) from error
                _feed(pipeline, tree, role, msg, connection.msgtype, log_time, depth_scale, counts, answer)
            bar.update(1)
        while pending_index < len(pending):
            entry = pending[pending_index]
            answer(entry.command, start + round(entry.time * NS_PER_S), entry.truth)
            pending_index += 1
            bar.update(1)
    except BaseException:
        bar.close()
        writer.close()
        raise
    bar.close()
    writer.close()

    metrics = compute_metrics(answers, counts, values["voxel_size"])
    metrics["input"] = {
        "bag": str(bag),
        "topics": {topic: role for topic, role in inputs.items()},
        "duration_s": duration,
        "messages": counts["messages_in"],
    }
    metrics["output"] = {
        "bag": str(output / "bag"),
        "storage": "mcap" if plugin.name == "MCAP" else "sqlite3",
        "topics": {f"{namespace}/{name}": count for name, count in out_counts.items()},
    }
    latency_values = metrics.pop("_latency_values")
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False, default=_json_default) + "\n")
    if report:
        write_report(output, answers, metrics, latency_values)
    return Evaluation(answers, metrics, output)


def _messages(reader, bag):
    """The bag's messages in log-time order; a storage failure becomes an EvalError."""
    iterator = reader.messages()
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # truncated chunks, bad CRCs, sqlite errors, ...
            raise EvalError(f"cannot read bag {bag}: {type(error).__name__}: {error}") from error
        yield item


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _feed(pipeline, tree, role, msg, msgtype, log_time, depth_scale, counts, answer) -> None:
    """One input message to the pipeline, as the node's subscription callbacks do."""
    if role == "image":
        counts["frames"] += 1
        frame = fields.frame_from_msg(msg, msgtype.endswith("CompressedImage"), log_time)
        pipeline.set_frame(frame.decode, frame.stamp, frame.frame_id)
    elif role == "depth":
        stamp = fields.stamp_ns(msg.header.stamp) or log_time
        pipeline.set_depth(lambda: codec.depth_to_meters(msg, depth_scale), stamp, msg.header.frame_id)
    elif role == "camera_info":
        stamp = fields.stamp_ns(msg.header.stamp) or log_time
        try:
            intrinsics, error = fields.camera_info_intrinsics(msg), ""
        except ValueError as problem:
            intrinsics, error = None, str(problem)
        pipeline.set_camera_info(intrinsics, stamp, msg.header.frame_id, error=error)
    elif role == "pose":
        stamp = fields.stamp_ns(msg.header.stamp) or log_time
        pipeline.set_camera_pose(fields.pose_msg_to_matrix(msg.pose), stamp, msg.header.frame_id)
    elif role == "tf":
        tree.add(msg)
    elif role == "command":
        answer(msg.data, log_time, None)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", desc="lisa-eval-bag", file=sys.stderr)


# --- metrics ----------------------------------------------------------------------------


def prediction_mask(result: Result, height: int, width: int) -> np.ndarray:
    """The union of a result's masks (all false when it has none or is an error)."""
    if result.masks.ndim == 3 and result.masks.shape[0] and result.masks.shape[1:] == (height, width):
        return result.masks.any(axis=0)
    return np.zeros((height, width), bool)


def compute_metrics(answers: list[Answer], counts: dict, voxel_size: float = 0.0) -> dict:
    """gIoU/cIoU (lisa_model.metrics) over commands with 2D truth; over those with a 3D box,
    the IoU of the first region's axis-aligned box (grown by one voxel) with it and the
    centroid error; latency statistics per stage; counts. Fills each Answer's scores."""
    from lisa_model.metrics import SegmentationMeter, mask_iou

    from .scannet import accuracy_at, box_iou_3d

    meter = SegmentationMeter()
    ious_3d, centroid_errors, missing_3d = [], [], 0
    for item in answers:
        truth, result = item.truth, item.result
        if truth is None:
            continue
        if truth.has_2d:
            if result.image is not None:
                height, width = result.image.shape[:2]
            elif truth.mask_path is not None:
                from PIL import Image

                with Image.open(truth.mask_path) as image:
                    width, height = image.size
            else:  # a polygon and no image: the prediction is empty at any size
                points = np.asarray(truth.polygon)
                width, height = int(points[:, 0].max()) + 2, int(points[:, 1].max()) + 2
            gt = truth.mask(height, width)
            pred = prediction_mask(result, height, width)
            meter.update(pred, gt)
            item.iou = float(mask_iou(pred, gt))
        if truth.has_3d:
            region = next((r for r in result.regions if r is not None), None)
            if region is None:
                item.iou_3d, missing_3d = 0.0, missing_3d + 1
            else:
                # The points are voxel centres: the box they fill reaches half a voxel past them
                # (a flat face seen from one view still has a volume).
                size = np.asarray(region.aabb_size, np.float64) + voxel_size
                item.iou_3d = float(box_iou_3d(region.aabb_center, size, truth.box_center, truth.box_size))
                item.centroid_error = float(np.linalg.norm(np.asarray(region.centroid) - truth.box_center))
                centroid_errors.append(item.centroid_error)
            ious_3d.append(item.iou_3d)
    metrics = {"counts": dict(counts)}
    metrics["counts"].pop("messages_in", None)
    metrics["segmentation_2d"] = meter.as_dict() if meter.count else None
    metrics["regions_3d"] = (
        {
            "count": len(ious_3d),
            "mean_box_iou": float(np.mean(ious_3d)),
            "acc_at_0.25": accuracy_at(ious_3d, 0.25),
            "acc_at_0.5": accuracy_at(ious_3d, 0.5),
            "without_region": missing_3d,
            "centroid_error_m": _stats(centroid_errors),
        }
        if ious_3d
        else None
    )
    stages: dict[str, list[float]] = {}
    for item in answers:
        if item.result.status != Status.ERROR:
            for stage, seconds in item.result.timings.items():
                stages.setdefault(stage, []).append(float(seconds))
    metrics["latency_s"] = {stage: _stats(values) for stage, values in stages.items()}
    metrics["_latency_values"] = stages  # for the histograms; not written to metrics.json
    metrics["commands"] = [
        {
            "id": int(item.result.command_id),
            "time_s": item.log_time / NS_PER_S,
            "command": item.result.command,
            "status": Status(item.result.status).name,
            "answer": item.result.answer,
            "error": item.result.error,
            "masks": int(item.result.masks.shape[0]),
            "iou": item.iou,
            "box_iou_3d": item.iou_3d,
            "centroid_error_m": item.centroid_error,
            "region_status": item.result.region_status,
            "total_s": item.result.timings.get("total"),
        }
        for item in answers
    ]
    return metrics


# --- report ------------------------------------------------------------------------------


def write_report(output: Path, answers: list[Answer], metrics: dict, latency_values: dict | None = None) -> Path:
    """report.html: summary, per-command table with overlays (PNG), latency histograms (PNG)."""
    from lisa_model.visualize import mask_outline, save_png

    rows = []
    for item in answers:
        result = item.result
        overlay = fields.overlay_image(result)
        if overlay is not None:
            if item.truth is not None and item.truth.has_2d:
                overlay = overlay.copy()
                overlay[mask_outline(item.truth.mask(*overlay.shape[:2]).astype(bool))] = (255, 255, 0)
            item.overlay = f"overlays/command_{int(result.command_id):04d}.png"
            save_png(output / item.overlay, overlay)
        rows.append(item)
    charts = _latency_charts(output, latency_values or {})

    def number(value, digits=3):
        return "" if value is None else f"{value:.{digits}f}"

    e = html.escape
    lines = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>LISA bag evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}img.o{max-width:320px}"
        ".ERROR{color:#b00}</style></head><body>",
        f"<h1>LISA bag evaluation</h1><p>Bag: <code>{e(metrics['input']['bag'])}</code> "
        f"({metrics['input']['duration_s']:.2f} s, {metrics['input']['messages']} messages); "
        f"output bag: <code>{e(metrics['output']['bag'])}</code>.</p>",
        "<h2>Summary</h2><table>",
    ]
    for key, value in metrics["counts"].items():
        lines.append(f"<tr><th>{e(key)}</th><td>{value}</td></tr>")
    if metrics["segmentation_2d"]:
        seg = metrics["segmentation_2d"]
        lines.append(f"<tr><th>gIoU / cIoU ({seg['count']} masks)</th><td>{seg['giou']:.4f} / {seg['ciou']:.4f}</td></tr>")
    if metrics["regions_3d"]:
        r3 = metrics["regions_3d"]
        lines.append(
            f"<tr><th>3D box IoU ({r3['count']})</th><td>mean {r3['mean_box_iou']:.4f}, "
            f"Acc@0.25 {r3['acc_at_0.25']:.3f}, Acc@0.5 {r3['acc_at_0.5']:.3f}; centroid error median "
            f"{number(r3['centroid_error_m']['median'])} m</td></tr>"
        )
    lines.append("</table><h2>Commands</h2><table><tr><th>#</th><th>time (s)</th><th>command</th><th>answer</th>"
                 "<th>status</th><th>IoU</th><th>3D IoU</th><th>latency (s)</th><th>overlay</th></tr>")  # fmt: skip
    for item in rows:
        result = item.result
        status = Status(result.status).name
        answer = result.answer if status != "ERROR" else result.error
        image = f"<img class='o' src='{e(item.overlay)}'>" if item.overlay else ""
        lines.append(
            f"<tr><td>{result.command_id}</td><td>{item.log_time / NS_PER_S:.3f}</td><td>{e(result.command)}</td>"
            f"<td>{e(answer)}</td><td class='{status}'>{status}</td><td>{number(item.iou)}</td>"
            f"<td>{number(item.iou_3d)}</td><td>{number(result.timings.get('total'))}</td><td>{image}</td></tr>"
        )
    lines.append("</table><h2>Latency</h2><table><tr><th>stage</th><th>median</th><th>p90</th><th>max</th></tr>")
    for stage, stats in metrics["latency_s"].items():
        lines.append(
            f"<tr><td>{e(stage)}</td><td>{number(stats['median'], 4)}</td><td>{number(stats['p90'], 4)}</td>"
            f"<td>{number(stats['max'], 4)}</td></tr>"
        )
    lines.append("</table>")
    lines += [f"<p><img src='{e(chart)}'></p>" for chart in charts]
    lines.append("</body></html>")
    path = output / "report.html"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _latency_charts(output: Path, latency: dict) -> list[str]:
    """Histograms (matplotlib, Agg) of the total latency and of each stage; latency: stage -> seconds."""
    if not latency:
        return []
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    charts = []
    total = list(latency.get("total", []))
    stages = [(stage, values) for stage, values in latency.items() if values]
    if total:
        figure = Figure(figsize=(6, 3.5))
        axes = figure.subplots()
        axes.hist(total, bins=min(30, max(5, len(total))), color="#3a7")
        axes.set_xlabel("seconds")
        axes.set_ylabel("commands")
        axes.set_title("total latency per command")
        figure.tight_layout()
        figure.savefig(output / "latency_total.png", dpi=80)
        charts.append("latency_total.png")
    if stages:
        columns = 3
        rows = (len(stages) + columns - 1) // columns
        figure = Figure(figsize=(4 * columns, 2.6 * rows))
        grid = figure.subplots(rows, columns, squeeze=False)
        for axes, (stage, values) in zip(grid.ravel(), stages):
            axes.hist(values, bins=min(20, max(5, len(values))), color="#37a")
            axes.set_title(f"{stage} (s)", fontsize=9)
            axes.tick_params(labelsize=7)
        for axes in grid.ravel()[len(stages) :]:
            axes.set_visible(False)
        figure.tight_layout()
        figure.savefig(output / "latency_stages.png", dpi=80)
        charts.append("latency_stages.png")
    return charts


def main(argv=None) -> int:
    """lisa-eval-bag: see `lisa-eval-bag --help`."""
    from .launch_config import load_params_file, parse_argument

    parser = argparse.ArgumentParser(
        prog="lisa-eval-bag",
        description="Run the lisa_ros node's pipeline on a rosbag2 (mcap or sqlite3) offline and deterministically; "
        "write an output bag, metrics.json and report.html.",
    )
    parser.add_argument("bag", help="input rosbag2 folder (or .mcap / .db3 file)")
    parser.add_argument("-o", "--output", required=True, help="output folder (new or empty)")
    parser.add_argument("--script", help="YAML or JSONL command script with optional ground truth")
    parser.add_argument("--image-topic", help="sensor_msgs/Image or CompressedImage (default: image_topic, /image)")
    parser.add_argument("--depth-topic", help="sensor_msgs/Image depth (default: /depth, if present)")
    parser.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo (default: /camera_info, if present)")
    parser.add_argument("--command-topic", help="std_msgs/String commands (default: /command; unused with --script)")
    parser.add_argument("--pose-topic", help="geometry_msgs/PoseStamped camera poses (instead of /tf)")
    parser.add_argument("--target-frame", help="frame of the 3D regions (through /tf + /tf_static or --pose-topic)")
    parser.add_argument("--model-path", help="LISA checkpoint folder (parameter model_path)")
    parser.add_argument("--vision-tower-path", help="CLIP folder (parameter vision_tower_path)")
    parser.add_argument("--device", help="auto, cpu or cuda (parameter device)")
    parser.add_argument("--params-file", help="a ROS 2 parameters file for lisa_node (like config/lisa.yaml)")
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME:=VALUE", help="any node parameter (repeatable)"
    )
    parser.add_argument("--namespace", default="/lisa", help="output topics' namespace (default /lisa)")
    parser.add_argument("--output-format", choices=("mcap", "sqlite3"), help="default: the input bag's")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params_file(args.params_file) if args.params_file else {}
        for item in args.param:
            name, separator, text = item.partition(":=")
            if not separator:
                name, separator, text = item.partition("=")
            if not separator:
                raise ValueError(f"-p expects NAME:=VALUE, got {item!r}")
            params[name.strip()] = parse_argument(name.strip(), text)
        for name in ("model_path", "vision_tower_path", "device", "target_frame"):
            if getattr(args, name) is not None:
                params[name] = validate(name, getattr(args, name))
    except ValueError as error:
        print(f"lisa-eval-bag: error: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        evaluation = evaluate(
            args.bag,
            args.output,
            params,
            image_topic=args.image_topic,
            depth_topic=args.depth_topic,
            camera_info_topic=args.camera_info_topic,
            command_topic=args.command_topic,
            pose_topic=args.pose_topic,
            script=args.script,
            namespace=args.namespace,
            output_format=args.output_format,
            progress=not args.no_progress,
        )
    except EvalError as error:
        print(f"lisa-eval-bag: error: {error}", file=sys.stderr)
        return 2
    print(summary(evaluation, time.perf_counter() - started))
    return 0


def summary(evaluation: Evaluation, seconds: float) -> str:
    metrics = evaluation.metrics
    counts = metrics["counts"]
    lines = [
        f"frames {counts['frames']}, commands {counts['commands']}, answers {counts['answers']} "
        f"(ok {counts['ok']}, no target {counts['no_target']}), errors {counts['errors']} in {seconds:.1f} s"
    ]
    if metrics["segmentation_2d"]:
        seg = metrics["segmentation_2d"]
        lines.append(f"gIoU {seg['giou']:.4f}  cIoU {seg['ciou']:.4f}  ({seg['count']} masks)")
    if metrics["regions_3d"]:
        r3 = metrics["regions_3d"]
        median = r3["centroid_error_m"]["median"]
        lines.append(
            f"3D box IoU {r3['mean_box_iou']:.4f}  Acc@0.25 {r3['acc_at_0.25']:.3f}  Acc@0.5 {r3['acc_at_0.5']:.3f}"
            + (f"  centroid error median {median:.3f} m" if median is not None else "")
        )
    total = metrics["latency_s"].get("total")
    if total and total["count"]:
        lines.append(f"latency total: median {total['median']:.3f} s, p90 {total['p90']:.3f} s, max {total['max']:.3f} s")
    lines.append(f"wrote {evaluation.output / 'bag'}, {evaluation.output / 'metrics.json'}, "
                 f"{evaluation.output / 'report.html'}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
