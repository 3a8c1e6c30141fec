"""The command script: commands at times in the bag, each with optional ground truth.

A YAML file (a list of entries, or {commands: [...], objects: {id: {center, size}}}) or
JSON lines (one entry per line; a line with object_id, center and size and no command
defines an object). An entry: {time: seconds from the bag's start, command, and optional
ground truth: mask (PNG path relative to the script), polygon [[x, y], ...], box {center,
size} or object_id (a box among the objects), and track: the target on later images, for
live-target tracking, [{time: the image's stamp in seconds from the bag's start, mask: PNG
path or null (not visible), box {center, size} (where the target is then)}, ...]}.

Everything is checked when the script is loaded, before the model is: finite numbers,
polygon points within MAX_COORDINATE pixels, positive box sizes, object ids defined once,
a key given once per entry, mask files that decode. A problem is an EvalError naming the
script and the line (JSON lines) or entry (YAML).
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EvalError

# Pixels: polygon points farther out are mistakes (1e12 overflows the int32 drawing into a
# one-pixel mask); points outside the image but within it are clipped when drawn.
MAX_COORDINATE = 1e5


@dataclass
class FrameTruth:
    """A command's target on one later image: the image's stamp (`time`, seconds from the
    bag's start), its mask file (None: not visible) and size (H, W), its box then (metres)."""

    time: float
    mask_path: Path | None = None
    mask_size: tuple[int, int] | None = None
    box_center: np.ndarray | None = None
    box_size: np.ndarray | None = None

    def mask(self, height: int, width: int) -> np.ndarray | None:
        """bool [H,W], or None when the target is not visible."""
        return None if self.mask_path is None else _read_mask(self.mask_path) > 0


@dataclass
class Truth:
    """Ground truth of one command: a 2D mask (path or polygon) and/or a 3D box (metres), and
    the target on later images (`track`). `mask_size` is the mask file's (H, W), read when the
    script is loaded."""

    mask_path: Path | None = None
    polygon: list | None = None
    box_center: np.ndarray | None = None
    box_size: np.ndarray | None = None
    object_id: str | None = None
    mask_size: tuple[int, int] | None = None
    track: list[FrameTruth] = field(default_factory=list)

    @property
    def has_2d(self) -> bool:
        return self.mask_path is not None or self.polygon is not None

    @property
    def has_3d(self) -> bool:
        return self.box_center is not None

    def mask(self, height: int, width: int) -> np.ndarray:
        """uint8 [H,W]: 1 object, 0 background (lisa_model.metrics' target format); a polygon
        is clipped to the image."""
        if self.mask_path is not None:
            array = _read_mask(self.mask_path)
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
    """One command of the script: `time` in seconds from the bag's start; `index` its place in
    the file and `where` its name in messages ("script.jsonl line 7", "script.yaml entry 2")."""

    time: float
    command: str
    truth: Truth = field(default_factory=Truth)
    index: int = 0
    where: str = ""


def load_script(path) -> list[ScriptEntry]:
    """The entries of a YAML or JSON-lines script (see the module's docstring), sorted by time.
    Raises EvalError saying what is wrong, and where."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise EvalError(f"cannot read script {path}: {error}") from error
    raw_objects, raw = _read_items(path, text)
    objects = {key: _box(value, f"{where}: object {key!r}") for key, (where, value) in raw_objects.items()}
    entries = [_entry(where, item, index, objects, path.parent) for index, (where, item) in enumerate(raw)]
    entries.sort(key=lambda entry: (entry.time, entry.index))
    return entries


def _read_items(path: Path, text: str) -> tuple[dict, list[tuple[str, object]]]:
    """The script's objects {id: (where, box)} and its raw entries [(where, item)]."""
    import yaml

    objects, raw = {}, []
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                item = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as error:
                raise EvalError(f"{where}: not JSON: {error.msg} (column {error.colno})") from None
            except ValueError as error:  # a key given twice
                raise EvalError(f"{where}: {error}") from None
            if isinstance(item, dict) and "command" not in item and "object_id" in item:
                _add_object(objects, str(item["object_id"]), where, item)
            else:
                raw.append((where, item))
        return objects, raw
    try:
        content = yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise EvalError(f"cannot parse script {path}{at}: {' '.join(problem.split())}") from None
    if isinstance(content, dict):
        declared = content.get("objects") or {}
        if not isinstance(declared, dict):
            raise EvalError(f"script {path}: objects must be a mapping of object id to {{center, size}}")
        for key, value in declared.items():
            _add_object(objects, str(key), f"{path.name} objects", value)
        content = content.get("commands")
    if not isinstance(content, list):
        raise EvalError(f"script {path}: expected a list of entries (or a mapping with 'commands')")
    raw = [(f"{path.name} entry {number}", item) for number, item in enumerate(content, 1)]
    return objects, raw


def _add_object(objects: dict, key: str, where: str, value) -> None:
    """objects[key] = (where, value); EvalError naming both places when `key` is already defined."""
    if key in objects:
        raise EvalError(f"{where}: object_id {key!r} is defined twice (first at {objects[key][0]})")
    objects[key] = (where, value)


def _unique_keys(pairs: list) -> dict:
    """json's object_pairs_hook: the object, refusing a key given twice (json keeps the last)."""
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"key {key!r} is given twice")
    return dict(pairs)


def _unique_key_loader():
    """PyYAML's SafeLoader refusing a mapping key given twice (PyYAML keeps the later one)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            lines = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges may be overridden
                    continue
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if isinstance(key, Hashable) and key in lines:
                    problem = f"key {key!r} is given twice (lines {lines[key]} and {line})"
                    raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
                lines[key] = line
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def _entry(where: str, item, index: int, objects: dict, folder: Path) -> ScriptEntry:
    """One raw entry checked and read; mask paths are relative to `folder` (the script's)."""
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
        truth.mask_path = (folder / str(item["mask"])).resolve()
        if not truth.mask_path.is_file():
            raise EvalError(f"{where}: ground-truth mask {truth.mask_path} does not exist")
        try:
            truth.mask_size = _read_mask(truth.mask_path).shape
        except EvalError as error:
            raise EvalError(f"{where}: {error}") from None
    if item.get("polygon") is not None:
        needed = "polygon must be a list of at least 3 [x, y] points"
        polygon = _numbers(item["polygon"], (-1, 2), where, "polygon", needed)
        if len(polygon) < 3:
            raise EvalError(f"{where}: {needed}")
        if np.abs(polygon).max() > MAX_COORDINATE:
            raise EvalError(
                f"{where}: polygon coordinates must be within ±{MAX_COORDINATE:.0f} pixels, "
                f"got {reprlib.repr(item['polygon'])}"
            )
        truth.polygon = polygon.tolist()
    if item.get("box") is not None:
        truth.box_center, truth.box_size = _box(item["box"], where)
    if item.get("object_id") is not None:
        key = str(item["object_id"])
        if key not in objects:
            raise EvalError(f"{where}: object_id {key!r} is not among the script's objects")
        truth.object_id = key
        truth.box_center, truth.box_size = objects[key]
    if item.get("track") is not None:
        if not isinstance(item["track"], list):
            raise EvalError(f"{where}: track must be a list of {{time, mask, box}}, got {reprlib.repr(item['track'])}")
        truth.track = [_frame_truth(f"{where}: track[{k}]", value, folder) for k, value in enumerate(item["track"])]
    return ScriptEntry(when, item["command"], truth, index, where)


def _frame_truth(where: str, value, folder: Path) -> FrameTruth:
    if not isinstance(value, dict) or "time" not in value:
        raise EvalError(f"{where}: needs 'time' (the image's stamp, seconds from the bag's start)")
    (when,) = _numbers([value["time"]], (1,), where, "time", "time must be a number of seconds")
    frame = FrameTruth(float(when))
    if value.get("mask") is not None:
        frame.mask_path = (folder / str(value["mask"])).resolve()
        try:
            frame.mask_size = _read_mask(frame.mask_path).shape
        except EvalError as error:
            raise EvalError(f"{where}: {error}") from None
    if value.get("box") is not None:
        frame.box_center, frame.box_size = _box(value["box"], where)
    return frame


def _box(value, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A box's center and size, float64 [3] each: finite, the size positive."""
    needed = "a box needs center [x, y, z] and size [x, y, z]"
    if not isinstance(value, dict) or "center" not in value or "size" not in value:
        raise EvalError(f"{where}: {needed}, got {reprlib.repr(value)}")
    center = _numbers(value["center"], (3,), where, "box center", needed)
    size = _numbers(value["size"], (3,), where, "box size", needed)
    if not (size > 0).all():
        raise EvalError(f"{where}: box size must be positive, got {reprlib.repr(value['size'])}")
    return center, size


def _numbers(value, shape: tuple[int, ...], where: str, name: str, needed: str) -> np.ndarray:
    """`value`, nested lists of numbers of `shape` (-1: any length), as float64. EvalError
    saying what is `needed` unless so, and naming `name` unless every number is finite."""
    array = np.asarray(value, dtype=object)
    fits = array.ndim == len(shape) and all(n in (-1, m) for n, m in zip(shape, array.shape))
    if not fits or not all(type(number) in (int, float) for number in array.flat):  # no bools, no strings
        raise EvalError(f"{where}: {needed}, got {reprlib.repr(value)}")
    try:
        array = array.astype(np.float64)
    except OverflowError:  # an integer beyond float64
        array = np.array([math.inf])
    if not np.isfinite(array).all():
        raise EvalError(f"{where}: {name} must be finite numbers, got {reprlib.repr(value)}")
    return array


def _read_mask(path: Path) -> np.ndarray:
    """A mask file decoded to uint8 [H,W] (nonzero = object); EvalError when it cannot be."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise EvalError(f"cannot read ground-truth mask {path}: {error}") from error
