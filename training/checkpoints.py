"""Training checkpoints in a run folder: save atomically, find the newest, restore everything.

Layout of a run folder:

    config.yaml                 the resolved configuration (merge rebuilds the model from it)
    metrics.jsonl               one JSON object per logged step / evaluation
    checkpoints/step-000100/    trainer.pt: trainable weights, optimizer, scheduler,
                                step, sampler position, RNG states (python, numpy, torch, cuda)
    checkpoints/step-000100.ds/ with dist.engine deepspeed: DeepSpeed's own checkpoint
                                (its partitioned optimizer and scheduler), written first
    best/                       trainable weights of the best val gIoU so far, plus best.json

A checkpoint is written under a temporary name and renamed when complete, so a crash
while saving leaves the previous checkpoint as the newest one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(directory: str | Path, state: dict) -> Path:
    """Write `state` to `directory/trainer.pt` atomically (temp folder + rename)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    torch.save(state, temporary / STATE_FILE)
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
        temporary.rename(directory)
        shutil.rmtree(old)
    else:
        temporary.rename(directory)
    return directory


def load_state(directory: str | Path, map_location="cpu") -> dict:
    """A state written by `save_state`. Our own files hold RNG states (numpy arrays,
    tuples), so weights_only=False: load only checkpoints this code wrote."""
    return torch.load(Path(directory) / STATE_FILE, map_location=map_location, weights_only=False)


def step_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = []
    if folder.is_dir():
        for entry in folder.iterdir():
            match = _STEP_DIR.match(entry.name)
            if match and (entry / STATE_FILE).is_file():
                found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = step_checkpoints(run_dir)
    return found[-1][1] if found else None


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def prune(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints."""
    for _, path in step_checkpoints(run_dir)[: -keep_last or None] if keep_last > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(path.with_name(path.name + ".ds"), ignore_errors=True)  # DeepSpeed's part, if any


def resolve(run_dir: str | Path, which: str = "best") -> Path:
    """A checkpoint folder of a run: "best", "last" (newest step) or "step-N"/a path."""
    run_dir = Path(run_dir)
    if which == "best":
        path = run_dir / "best"
    elif which == "last":
        path = latest_checkpoint(run_dir)
        if path is None:
            raise FileNotFoundError(f"no step checkpoints in {run_dir}/checkpoints")
    elif _STEP_DIR.match(which):
        path = step_dir(run_dir, int(_STEP_DIR.match(which).group(1)))
    else:
        path = Path(which)
    if not (Path(path) / STATE_FILE).is_file():
        raise FileNotFoundError(f"no {STATE_FILE} in {path}")
    return Path(path)


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
