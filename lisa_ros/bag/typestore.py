"""rosbags message types: ROS 2's standard types plus lisa_ros' own, and messages built from dicts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import EvalError

CUSTOM_TYPES = ("BoundingBox2D", "SegmentationResult", "Target", "TargetArray")

_DTYPES = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "uint8": np.uint8, "int8": np.int8,
    "uint16": np.uint16, "int16": np.int16, "uint32": np.uint32, "int32": np.int32,
    "uint64": np.uint64, "int64": np.int64, "float32": np.float32, "float64": np.float64,
}  # fmt: skip


def _msg_dirs() -> list[Path]:
    """Where lisa_ros' .msg files are: the source tree, then installed share/lisa_ros/msg."""
    package = Path(__file__).resolve().parents[1]  # lisa_ros/
    candidates = [package.parent / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "lisa_ros" / "msg")
    candidates += [parent / "share" / "lisa_ros" / "msg" for parent in package.parents[:6]]
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


def _base_default(kind: str):
    if kind in ("string", "wstring"):
        return ""
    if kind == "bool":
        return False
    return 0.0 if kind.startswith("float") else 0


def build(store, typename: str, values: dict | None = None):
    """A rosbags message of `typename` from lisa_ros.runtime.message_fields' nested dicts; fields
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
