"""The rules of the house about imports (docs/architecture.md), checked on every module with `ast`.

Arrows go one way: `lisa_model` imports nothing of ours; the ROS-free rooms of `lisa_ros`
(runtime, geometry, bag, synthetic, cli) import `lisa_model` and each other but never ROS;
only the ROS room (lisa_ros/node/: the nodes and message conversion) imports rclpy and message
packages; geometry, the codecs and the speech
core never import torch (speech's Whisper engine imports it in its constructor, checked at run
time below); `training` and `bench` use public names only and never the ROS room; nothing but
the tests imports `tests`; and no product module imports another module's `_private` name. Lazy
imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("lisa_model", "lisa_ros", "training", "bench", "launch")
OURS = ("lisa_model", "lisa_ros", "training", "bench", "tests")
ROS_ROOM = ("lisa_ros.node", "lisa_ros.msg", "lisa_ros.srv", "lisa_ros.action")
# Imported by the ROS room (and the launch file) only. cv_bridge is not here: the codec may use it
# when installed (it needs no rclpy), and runs without it.
ROS_PACKAGES = ("rclpy", "rosidl_runtime_py", "launch", "launch_ros", "tf2_ros", "message_filters")
ROS_MESSAGE_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
TORCH_FREE = ("lisa_ros.geometry", "lisa_ros.runtime.codec", "lisa_ros.runtime.message_fields",
              # speech: only WhisperRecognizer (lisa_ros.speech.engines) imports torch, in its constructor
              "lisa_ros.speech.audio", "lisa_ros.speech.vad", "lisa_ros.speech.lm", "lisa_ros.speech.commands")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) for every import in the file, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.append((node.lineno, base, alias.name))
    return found


def _within(module: str, prefixes) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _is_ros(module: str) -> bool:
    top = module.split(".")[0]
    return _within(module, ROS_PACKAGES) or top.endswith(ROS_MESSAGE_SUFFIXES) or _within(module, ROS_ROOM)


def _is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(root: Path) -> list[str]:
    """Every broken rule in the product packages under `root`, as 'file:line: what'."""
    found = []
    for top in PRODUCT:
        for path in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else []:
            importer = "launch" if top == "launch" else module_name(path, root)  # launch files: not a package
            where = f"{path.relative_to(root)}"
            for line, module, name in imports_of(path, root):
                target = f"{module}.{name}" if name and _is_module(f"{module}.{name}", root) else module
                broken = _broken(importer, target, name, root)
                if broken:
                    found.append(f"{where}:{line}: {broken} (from {module} import {name})" if name else
                                 f"{where}:{line}: {broken} (import {module})")
    return found


def _broken(importer: str, target: str, name: str | None, root: Path) -> str:
    ours = _within(target, OURS)
    if _within(importer, ("lisa_model",)) and ours and not _within(target, ("lisa_model",)):
        return "lisa_model imports nothing of ours"
    if _within(target, ("tests",)):
        return "only tests import tests"
    in_ros_room = _within(importer, ROS_ROOM) or importer == "launch"
    if _is_ros(target) and not in_ros_room:
        if _within(importer, ("training", "bench")):
            return "training and bench never import ROS or the ROS room"
        return "only the ROS room (lisa_ros.node) imports ROS"
    if _within(importer, TORCH_FREE) and _within(target, ("torch", "torchvision")):
        return "geometry, the codecs and the speech core never import torch"
    if _within(importer, ("lisa_ros",)) and _within(target, ("training", "bench")):
        return "lisa_ros does not import training or bench"
    if _within(target, ("lisa_ros.cli",)) and not _within(importer, ("lisa_ros.cli",)):
        return "the CLIs are entry points: nothing imports them"
    if ours and name and name.startswith("_") and not name.startswith("__") and target.split(".")[0] in OURS:
        if target.rpartition(".")[0] != importer and _within(importer, PRODUCT):
            return "a _private name of another module"
    return ""


def test_the_product_follows_the_import_rules():
    assert violations(ROOT) == []


def test_importing_speech_loads_neither_ros_nor_torch():
    """lisa_ros.speech and all its modules import without rclpy, torch or transformers (lazy in WhisperRecognizer)."""
    import subprocess
    import sys

    code = ("import sys, lisa_ros.speech, lisa_ros.speech.engines, lisa_ros.speech.vad, lisa_ros.speech.audio; "
            "print(sorted(m for m in ('rclpy', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


PLANTED = {
    "lisa_model/uphill.py": ("from lisa_ros.runtime import codec\n", "lisa_model imports nothing of ours"),
    "lisa_ros/runtime/ros.py": ("import rclpy\n", "only the ROS room"),
    "lisa_ros/geometry/heavy.py": ("def f():\n    import torch\n", "never import torch"),
    "lisa_ros/geometry/private.py": ("from .region import _open3d\n", "_private name"),
    "training/fixture.py": ("from tests.helpers import mini_data\n", "only tests import tests"),
    "bench/private.py": ("from training.train import _to_device\n", "_private name"),
    "training/ros.py": ("from lisa_ros.node.messages import result_to_msg\n", "training and bench never import ROS"),
    "lisa_ros/bag/node.py": ("from ..node import LisaNode\n", "only the ROS room"),
    "lisa_ros/runtime/cli_user.py": ("from lisa_ros.cli import demo\n", "nothing imports them"),
}


@pytest.mark.parametrize("path", sorted(PLANTED))
def test_a_planted_violation_is_caught(tmp_path, path):
    """The checker on a copy of the package skeleton with one broken rule planted."""
    packages = ("lisa_model", "lisa_ros", "lisa_ros/runtime", "lisa_ros/geometry", "lisa_ros/bag", "lisa_ros/cli",
                "training", "bench", "tests", "tests/helpers")
    for package in packages:
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "lisa_ros/geometry/region.py").write_text("def _open3d():\n    pass\n")
    (tmp_path / "lisa_ros/cli/demo.py").write_text("")
    assert violations(tmp_path) == []
    source, rule = PLANTED[path]
    (tmp_path / path).write_text(source)
    found = violations(tmp_path)
    assert len(found) == 1 and rule in found[0] and found[0].startswith(path), found
