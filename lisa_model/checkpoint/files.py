"""The weight files of a checkpoint folder: finding the folder, reading and writing the tensors.

Weights are `.safetensors` or `.bin`, one file or shards plus an index:
`model.safetensors.index.json` / `pytorch_model.bin.index.json` map each key to its shard.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch

from .keys import key_listing

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"


def resolve_checkpoint_dir(path_or_hub_id: str | Path) -> Path:
    """A local checkpoint folder; a hub id ("owner/name") is downloaded first (needs network)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; load_lisa wants the checkpoint folder")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path_or_hub_id)):
        raise FileNotFoundError(f"no checkpoint folder at {path}, and it is not a hub id like 'xinlai/LISA-7B-v1'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(path_or_hub_id)))
    except Exception as error:  # offline, unknown repo, no access: all say the same to the user
        raise FileNotFoundError(
            f"no checkpoint folder at {path}, and downloading it as a hub id failed: {error}"
        ) from error


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one `.safetensors` or `.bin` file, on CPU (a `.bin` memory-mapped)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        # Checkpoints are untrusted: weights_only unpickles tensors and plain containers only.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects other than tensors; refusing to unpickle it (weights_only=True): {error}"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{path} is not a flat mapping of names to tensors")
    return state


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, under their stored names and dtypes, on CPU.

    Looks for, in order: `model.safetensors.index.json` (+ shards), `model.safetensors`,
    `pytorch_model.bin.index.json` (+ shards), `pytorch_model.bin`.
    """
    directory = Path(directory)
    for index_name, single_name in ((SAFE_INDEX, SAFE_SINGLE), (BIN_INDEX, BIN_SINGLE)):
        index_path = directory / index_name
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text())["weight_map"]
            state: dict[str, torch.Tensor] = {}
            for filename in sorted(set(weight_map.values())):
                state.update(read_weight_file(directory / filename))
            absent = sorted(set(weight_map) - set(state))
            if absent:
                raise ValueError(f"{index_name} lists keys that its shards lack: {key_listing(absent)}")
            return state
        if (directory / single_name).is_file():
            return read_weight_file(directory / single_name)
    raise FileNotFoundError(
        f"no weights in {directory}: expected {SAFE_INDEX}, {SAFE_SINGLE}, {BIN_INDEX} or {BIN_SINGLE}"
    )


def remove_weight_files(directory: Path) -> None:
    """Delete the weight files and indexes of an earlier save, so they cannot mix with new ones."""
    for stale in [*directory.glob("model*.safetensors"), *directory.glob("pytorch_model*.bin")]:
        stale.unlink()
    for stale in (directory / SAFE_INDEX, directory / BIN_INDEX):
        stale.unlink(missing_ok=True)


def write_weight_files(
    state: dict[str, torch.Tensor], directory: Path, max_shard_size: int | str, safe_serialization: bool
) -> None:
    """Write `state` as one weight file, or as shards plus an index when it exceeds `max_shard_size`.

    Arguments:
        state (dict[str, Tensor]): contiguous CPU tensors under the names to store.
        directory (Path): an existing folder.
        max_shard_size (int | str): shard limit ("5GB", "200MB" or bytes).
        safe_serialization (bool): `.safetensors`, or `.bin` (plain tensors, loadable with
            weights_only=True).
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    pattern = "model{suffix}.safetensors" if safe_serialization else "pytorch_model{suffix}.bin"
    split = split_torch_state_dict_into_shards(state, filename_pattern=pattern, max_shard_size=max_shard_size)
    for filename, keys in split.filename_to_tensors.items():
        shard = {key: state[key] for key in keys}
        if safe_serialization:
            from safetensors.torch import save_file

            save_file(shard, str(directory / filename), metadata={"format": "pt"})
        else:
            torch.save(shard, directory / filename)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        index_name = SAFE_INDEX if safe_serialization else BIN_INDEX
        (directory / index_name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
