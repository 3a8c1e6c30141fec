"""The weight files of a checkpoint folder: finding the folder, reading and writing the tensors.

Weights are `.safetensors` or `.bin`, one file or shards plus an index:
`model.safetensors.index.json` / `pytorch_model.bin.index.json` map each key to its shard.

Checkpoints are untrusted input: every file a checkpoint names must lie inside its
folder (`inside`), `.bin` files are unpickled with weights_only=True, and the tensors'
shapes and dtypes can be read from the file headers (`read_tensor_headers`) before any
data is loaded.
"""

from __future__ import annotations

import fnmatch
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError
from .keys import key_listing

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"
# What a save writes (weights, indexes, config, tokenizer files): an earlier save's
# copies are replaced, anything else in the folder is kept.
CHECKPOINT_FILE_PATTERNS = (
    "model*.safetensors",
    "pytorch_model*.bin",
    SAFE_INDEX,
    BIN_INDEX,
    "config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "added_tokens.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
LINK = "a link in the checkpoint"  # what names a file that is a link out
# safetensors' dtype names of the float dtypes LISA weights may be stored in.
SAFETENSORS_FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


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


def _trusted_root(directory: Path) -> Path:
    """The folder a checkpoint's files may resolve into: the folder itself, or for a
    Hugging Face cache snapshot (models--owner--name/snapshots/<revision>, whose files
    are links to ../../blobs) the repository's cache folder."""
    real = directory.resolve()
    if real.parent.name == "snapshots" and (real.parent.parent / "blobs").is_dir():
        return real.parent.parent
    return real


def inside(directory: Path, name: str, named_by: str | Path, hint: str = "") -> Path:
    """`directory / name`, refused (CheckpointError) unless it resolves, links followed,
    to a path inside the checkpoint folder: no `..`, absolute paths or links out.

    `named_by` (the file holding `name`) and `hint` go into the error message.
    """
    resolved = (directory / name).resolve()
    if not resolved.is_relative_to(_trusted_root(directory)):
        raise CheckpointError(
            f"{named_by}: {name!r} points outside the checkpoint folder {directory} (to {resolved}){hint}"
        )
    return directory / name


def read_weight_map(index_path: Path) -> dict[str, str]:
    """The `weight_map` of a shard index (tensor name -> shard file name), checked."""
    try:
        index = json.loads(index_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{index_path} is not valid JSON: {error}") from error
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(key, str) and isinstance(name, str) for key, name in weight_map.items()
    ):
        raise CheckpointError(f"{index_path} has no 'weight_map' object mapping tensor names to file names")
    return weight_map


def weight_files(directory: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The weight files of a checkpoint folder, each checked to lie inside it, and the
    index's weight map (None for a single file).

    Looks for, in order: `model.safetensors.index.json` (+ shards), `model.safetensors`,
    `pytorch_model.bin.index.json` (+ shards), `pytorch_model.bin`.
    """
    for index_name, single_name in ((SAFE_INDEX, SAFE_SINGLE), (BIN_INDEX, BIN_SINGLE)):
        if (directory / index_name).is_file():
            weight_map = read_weight_map(inside(directory, index_name, LINK))
            names = sorted(set(weight_map.values()))
            return [inside(directory, name, directory / index_name) for name in names], weight_map
        if (directory / single_name).is_file():
            return [inside(directory, single_name, LINK)], None
    raise FileNotFoundError(
        f"no weights in {directory}: expected {SAFE_INDEX}, {SAFE_SINGLE}, {BIN_INDEX} or {BIN_SINGLE}"
    )


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        # Checkpoints are untrusted: weights_only unpickles tensors and plain containers only.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds objects other than tensors; refusing to unpickle it (weights_only=True): {error}"
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:  # not a zip, truncated, torn
        raise CheckpointError(f"{path} is not a readable PyTorch weight file: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{path} is not a flat mapping of names to tensors")
    return state


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one `.safetensors` or `.bin` file, on CPU (a `.bin` memory-mapped)."""
    if path.suffix != ".safetensors":
        return _load_bin(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error


@dataclass(frozen=True)
class TensorHeader:
    """What a weight file says about one tensor, read without its data."""

    shape: tuple[int, ...]
    dtype: str  # torch's name ("bfloat16") when it is a float dtype, else the file's ("I64", "int64")
    path: Path  # the file holding it


def read_tensor_headers(directory: Path) -> dict[str, TensorHeader]:
    """Shape, dtype and file of every tensor of a checkpoint folder, from the file headers.

    safetensors headers are read with `safe_open` (no tensor data is loaded); `.bin`
    files are memory-mapped, so their data is not read either.
    """
    files, _ = weight_files(directory)
    headers: dict[str, TensorHeader] = {}
    for path in files:
        if path.suffix == ".safetensors":
            headers.update(_safetensors_headers(path))
        else:
            for key, tensor in _load_bin(path).items():
                headers[key] = TensorHeader(tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."), path)
    return headers


def _safetensors_headers(path: Path) -> dict[str, TensorHeader]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            slices = {key: handle.get_slice(key) for key in handle.keys()}
            return {
                key: TensorHeader(
                    tuple(piece.get_shape()),
                    str(SAFETENSORS_FLOAT_DTYPES.get(piece.get_dtype(), piece.get_dtype())).removeprefix("torch."),
                    path,
                )
                for key, piece in slices.items()
            }
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, under their stored names and dtypes, on CPU.

    Looks for, in order: `model.safetensors.index.json` (+ shards), `model.safetensors`,
    `pytorch_model.bin.index.json` (+ shards), `pytorch_model.bin`.

    Raises:
        CheckpointError: for an index or weight file that cannot be read, or that names
            a file outside the folder.
    """
    directory = Path(directory)
    files, weight_map = weight_files(directory)
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(read_weight_file(path))
    absent = sorted(set(weight_map or ()) - set(state))
    if absent:
        raise CheckpointError(f"the index in {directory} lists keys that its shards lack: {key_listing(absent)}")
    return state


def check_finite(state: dict[str, torch.Tensor], headers: dict[str, TensorHeader]) -> None:
    """Raise CheckpointError naming the first tensor holding NaN or infinite values."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            where = headers[key].path if key in headers else "the checkpoint"
            raise CheckpointError(f"tensor {key} in {where} holds NaN or infinite values")


def is_checkpoint_file(name: str) -> bool:
    """Whether a file name is one a save writes (and a new save replaces)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in CHECKPOINT_FILE_PATTERNS)


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
