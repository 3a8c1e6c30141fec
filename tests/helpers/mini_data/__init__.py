"""Miniature datasets in the real on-disk layouts, generated: test fixtures, and the data of the CPU smoke run
(`python -m tests.helpers.mini_data outputs/mini_data`).

`reason_seg` writes ReasonSeg and ScanNet exports, `sources` the semantic, referring and
VQA sources; `make_mini_data(root)` writes all of them under `root` (the reference's
dataset/ folder):

    root/reason_seg/ReasonSeg/{train,val,test,explanatory}   root/ade20k, cocostuff, ...
    root/refer_seg/...  root/llava_dataset/...  root/coco/...  root/vlpart/...
"""

from __future__ import annotations

from pathlib import Path

from . import reason_seg, sources

MARKER = ".mini_data_complete"


def make_mini_data(root: str | Path) -> Path:
    """Write every miniature dataset under `root` once (a marker file records completion)."""
    root = Path(root)
    if (root / MARKER).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    reason_seg.make_reason_seg(str(root / "reason_seg" / "ReasonSeg"))
    sources.make_all(root)
    (root / MARKER).write_text("ok\n")
    return root
