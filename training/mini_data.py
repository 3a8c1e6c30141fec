"""The miniature datasets (generated, real on-disk layouts) for the CPU smoke run.

The generators live beside the tests (tests/mini_datasets.py: ReasonSeg and ScanNet
exports; tests/mini_datasets_other.py: the semantic / referring / VQA sources); this
loads them from the source tree, so it works from a checkout, not from an installed
wheel. Layout written under `root` (the reference's dataset/ folder):

    root/reason_seg/ReasonSeg/{train,val,test,explanatory}   root/ade20k, cocostuff, ...
    root/refer_seg/...  root/llava_dataset/...  root/coco/...  root/vlpart/...
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
MARKER = ".mini_data_complete"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    path = TESTS / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the miniature data generators need the source checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # mini_datasets_other may import mini_datasets
    spec.loader.exec_module(module)
    return module


def make_mini_data(root: str | Path) -> Path:
    """Write every miniature dataset under `root` once (a marker file records completion)."""
    root = Path(root)
    if (root / MARKER).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    _load("mini_datasets").make_reason_seg(str(root / "reason_seg" / "ReasonSeg"))
    _load("mini_datasets_other").make_all(root)
    (root / MARKER).write_text("ok\n")
    return root
