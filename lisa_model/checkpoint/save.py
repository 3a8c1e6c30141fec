"""`save_lisa`: a LisaModel and its tokenizer -> a checkpoint folder in the released layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..modeling.lisa import LisaModel
from ..tokenizer import seg_token_id
from .config import released_config
from .files import remove_weight_files, write_weight_files
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


def save_lisa(
    model: LisaModel,
    tokenizer,
    directory: str | Path,
    max_shard_size: int | str = "5GB",
    safe_serialization: bool = True,
    vision_tower: str | None = None,
) -> Path:
    """Write `model` and `tokenizer` in the released layout (CLIP excluded).

    Arguments:
        model (LisaModel): not quantised; tensors are written in their current dtypes.
        tokenizer: its [SEG] id must be the model's; written in the released layout
            (see `save_released_tokenizer`).
        directory (str | Path): created if needed; weight files of an earlier save there
            are removed so they cannot mix with the new ones.
        max_shard_size (int | str): shard limit ("5GB", "200MB" or bytes); one file
            and no index when everything fits.
        safe_serialization (bool): `.safetensors` (default) or `.bin` (plain tensors,
            loadable with weights_only=True).
        vision_tower (str | None): CLIP's folder or hub id for config.json; None: where
            the model's CLIP was loaded from.

    Returns:
        Path: the checkpoint folder.
    """
    if any(type(module).__module__.startswith("bitsandbytes") for module in model.modules()):
        raise ValueError("save_lisa cannot write a quantised model; load it in fp32/bf16/fp16 to save it")
    if seg_token_id(tokenizer) != model.config.seg_token_id:
        raise ValueError(
            f"the tokenizer's [SEG] id {seg_token_id(tokenizer)} differs from the model's {model.config.seg_token_id}"
        )
    vision_tower = vision_tower or getattr(model.vision_tower.config, "_name_or_path", "")
    if not vision_tower:
        raise ValueError("the model's CLIP tower has no source path; pass vision_tower= (a folder or hub id)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_weight_files(directory)
    write_weight_files(released_state_dict(model), directory, max_shard_size, safe_serialization)
    config = released_config(model, str(vision_tower))
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_released_tokenizer(tokenizer, directory)
    return directory
