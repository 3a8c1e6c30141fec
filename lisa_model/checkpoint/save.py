"""`save_lisa`: a LisaModel and its tokenizer -> a checkpoint folder in the released layout."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import nn

from ..modeling.lisa import LisaModel
from ..tokenizer import seg_token_id
from .config import released_config
from .files import is_checkpoint_file, write_weight_files
from .keys import key_listing, ours_to_released
from .skeleton import build_skeleton
from .tokenizer_files import save_released_tokenizer


def released_state_dict(model: LisaModel) -> dict[str, torch.Tensor]:
    """The model's tensors under the released names, CLIP left out, on CPU.

    The names must be those of a plain LISA of the model's config: added modules (LoRA
    adapters, say) would give files that neither the reference nor load_lisa can read.
    """
    expected = set(build_skeleton(model.config, nn.Identity()).state_dict())
    names = {name for name in model.state_dict() if not name.startswith("vision_tower.")}
    extra, missing = sorted(names - expected), sorted(expected - names)
    if extra or missing:
        raise ValueError(
            f"the model's parameters differ from a plain LISA's: extra {key_listing(extra)}; missing "
            f"{key_listing(missing)}; merge adapters into the model first (e.g. peft's merge_and_unload())"
        )
    return {
        ours_to_released(name): tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
        if name in expected
    }


VISION_TOWER_DIR = "vision_tower"  # where a save puts a CLIP that came from a local folder


def save_lisa(
    model: LisaModel,
    tokenizer,
    directory: str | Path,
    max_shard_size: int | str = "5GB",
    safe_serialization: bool = True,
    vision_tower: str | None = None,
) -> Path:
    """Write `model` and `tokenizer` in the released layout.

    Everything is checked before anything is written, then written to a temporary
    folder beside `directory` and swapped in: a refused or failed save leaves an
    earlier checkpoint in `directory` as it was.

    Arguments:
        model (LisaModel): not quantised; tensors are written in their current dtypes.
        tokenizer: its [SEG] id must be the model's; written in the released layout
            (see `save_released_tokenizer`).
        directory (str | Path): created if needed. The files of an earlier save there
            (weights, indexes, config, tokenizer files) are replaced so they cannot mix
            with the new ones; other files and folders are kept.
        max_shard_size (int | str): shard limit ("5GB", "200MB" or bytes); one file
            and no index when everything fits.
        safe_serialization (bool): `.safetensors` (default) or `.bin` (plain tensors,
            loadable with weights_only=True).
        vision_tower (str | None): CLIP's hub id or folder; None: where the model's CLIP
            was loaded from. A hub id is written to config.json as it is. A folder outside
            `directory` is not: load_lisa follows config paths only inside the checkpoint,
            so the model's CLIP is saved into `directory/vision_tower` and named so.

    Returns:
        Path: the checkpoint folder.
    """
    if any(type(module).__module__.startswith("bitsandbytes") for module in model.modules()):
        raise ValueError("save_lisa cannot write a quantised model; load it in fp32/bf16/fp16 to save it")
    if seg_token_id(tokenizer) != model.config.seg_token_id:
        raise ValueError(
            f"the tokenizer's [SEG] id {seg_token_id(tokenizer)} differs from the model's {model.config.seg_token_id}"
        )
    vision_tower = str(vision_tower or getattr(model.vision_tower.config, "_name_or_path", ""))
    if not vision_tower:
        raise ValueError("the model's CLIP tower has no source path; pass vision_tower= (a folder or hub id)")
    directory = Path(os.path.abspath(directory))  # "." has no name for the sibling to take
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file; save_lisa writes a checkpoint folder")
    state = released_state_dict(model)
    shipped = _folder_inside(directory, vision_tower)
    copy_clip = shipped is None and Path(vision_tower).is_dir()
    config = released_config(model, VISION_TOWER_DIR if copy_clip else shipped or vision_tower)

    directory.parent.mkdir(parents=True, exist_ok=True)
    # A sibling on the same file system, so the swap is a rename; mkdir (unlike mkdtemp)
    # gives it the usual permissions.
    staging = directory.with_name(f".{directory.name}.saving-{uuid.uuid4().hex[:12]}")
    staging.mkdir()
    try:
        write_weight_files(state, staging, max_shard_size, safe_serialization)
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_released_tokenizer(tokenizer, staging)
        if copy_clip:
            model.vision_tower.save_pretrained(staging / VISION_TOWER_DIR)
        _swap_in(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _folder_inside(directory: Path, name: str) -> str | None:
    """`name` as a path relative to `directory` when it is a folder inside it, else None."""
    path, root = (directory / name).resolve(), directory.resolve()
    return path.relative_to(root).as_posix() if path.is_dir() and path.is_relative_to(root) else None


def _swap_in(staging: Path, directory: Path) -> None:
    """Make the complete new checkpoint in `staging` the folder `directory`.

    The old folder is renamed away (and put back if the new one cannot take its place);
    once the new one is in place, what the old folder held besides an earlier save's
    files moves over, and the rest is deleted.
    """
    if not directory.exists():
        staging.rename(directory)
        return
    retired = staging.with_name(staging.name + ".old")
    directory.rename(retired)
    try:
        staging.rename(directory)
    except BaseException:
        retired.rename(directory)
        raise
    for entry in retired.iterdir():
        if not is_checkpoint_file(entry.name) and not (directory / entry.name).exists():
            entry.rename(directory / entry.name)
    shutil.rmtree(retired)
