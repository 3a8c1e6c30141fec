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
while saving leaves the previous checkpoint as the newest one. trainer.pt holds tensors
and plain containers only and is read with weights_only=True: a run folder from
someone else cannot run code (`load_state`).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint file this version cannot (or will not) load; the message names the file."""


def rng_state() -> dict:
    """This process's generators as tensors and plain numbers, so that the state loads with
    torch.load(weights_only=True) (numpy's own state holds an ndarray, which does not)."""
    algorithm, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, tuple of ints, None or a float)
        "numpy": {"algorithm": algorithm, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state((numpy["algorithm"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(directory: str | Path, state: dict) -> Path:
    """Write `state` to `directory/trainer.pt` atomically (temp folder + rename).

    `state` must hold tensors and plain containers only (see `load_state`).
    """
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


def load_state(directory: str | Path, keys: tuple[str, ...] = ("model",), map_location="cpu") -> dict:
    """A state written by `save_state` that holds at least `keys`.

    Read with weights_only=True: only tensors and plain containers are unpickled, so
    a planted trainer.pt (someone else's run folder) cannot run code. A file that
    needs anything else, or is not a readable state, is a CheckpointError.
    """
    path = Path(directory) / STATE_FILE
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is a page long; its "Unsupported global: ..." line names the culprit.
        culprit = re.search(r"Unsupported global: (.*?)(?: was not|$)", str(error), re.MULTILINE)
        detail = f" ({culprit.group(1)})" if culprit else ""
        raise CheckpointError(f"{path}: refused: not a trainer state this version writes; it needs code to "
                              f"load{detail}, which may be unsafe") from None
    except OSError:  # missing, unreadable: the file system's own message says it best
        raise
    except Exception as error:  # truncated or not a torch file: torch raises many kinds for those
        reason = str(error).split(". ")[0].strip() or type(error).__name__
        raise CheckpointError(f"{path}: not a readable trainer state, truncated or not a torch file "
                              f"({type(error).__name__}: {reason})") from None
    missing = [key for key in keys if key not in state] if isinstance(state, dict) else list(keys)
    if missing:
        raise CheckpointError(f"{path}: not a trainer state: it lacks {missing}")
    return state


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


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (one JSON object with a "step" per line).

    A bad last line is a write torn by a crash or a full disk: it is dropped with a
    warning. A bad line anywhere else is a CheckpointError naming the line.
    """
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()  # torn bytes fail as JSON
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError('not an object with an integer "step"')
        except ValueError as error:  # json.JSONDecodeError is one
            if number == len(lines):
                print(f"[train] warning: {path}:{number}: dropped a torn last line ({error})", file=sys.stderr)
                break
            raise CheckpointError(f"{path}:{number}: not a metrics record ({error})") from None
        records.append(record)
    return records


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
