"""The command script: commands at times in the bag, each with optional ground truth.

A YAML file (a list of entries, or {commands: [...], objects: {id: {center, size}}}) or
JSON lines (one entry per line; a line with object_id, center and size and no command
defines an object). An entry: {time: seconds from the bag's start, command, and optional
ground truth: mask (PNG path relative to the script), polygon [[x, y], ...], box {center,
size} or object_id (a box among the objects)}.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EvalError


@dataclass
class Truth:
    """Ground truth of one command: a 2D mask (path or polygon) and/or a 3D box (metres)."""

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
    """One command of the script: `time` in seconds from the bag's start; `index` its place in the file."""

    time: float
    command: str
    truth: Truth = field(default_factory=Truth)
    index: int = 0


def load_script(path) -> list[ScriptEntry]:
    """The entries of a YAML or JSON-lines script (see the module's docstring), sorted by time.
    Raises EvalError saying what is wrong, and where."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise EvalError(f"cannot read script {path}: {error}") from error
    objects, raw = _read_items(path, text)
    entries = [_entry(where, item, index, objects, path.parent) for index, (where, item) in enumerate(raw)]
    entries.sort(key=lambda entry: (entry.time, entry.index))
    return entries


def _read_items(path: Path, text: str) -> tuple[dict, list[tuple[str, object]]]:
    """The script's objects {id: box} and its raw entries [(where, item)]."""
    import yaml

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
    return objects, raw


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
    return ScriptEntry(when, item["command"], truth, index)


def _box(value, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A box's center and size, float64 [3] each."""
    try:
        center = np.asarray(value["center"], np.float64).reshape(3)
        size = np.asarray(value["size"], np.float64).reshape(3)
    except (TypeError, KeyError, ValueError) as error:
        raise EvalError(f"{where}: a box needs center [x, y, z] and size [x, y, z] ({error})") from None
    return center, size
