"""`load_lisa`: a released (or `save_lisa`d) checkpoint folder -> (LisaModel, tokenizer)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPVisionModel
from transformers.utils import logging as transformers_logging

from ..modeling.lisa import LisaModel
from ..processing.conversation import get_template
from ..tokenizer import seg_token_id
from .config import (
    check_config_against_tensors,
    default_conversation_template,
    lisa_config,
    llama_config,
    read_released_config,
)
from .errors import CheckpointError
from .files import check_finite, inside, read_state_dict, read_tensor_headers, resolve_checkpoint_dir
from .precision import apply_precision, check_precision
from .skeleton import build_skeleton, fill_skeleton


def load_vision_tower(source: str | Path, local_files_only: bool = False) -> CLIPVisionModel:
    """CLIP's vision tower from a CLIPVisionModel or full CLIPModel folder or hub id.

    A full CLIPModel's text tower is skipped quietly; a vision weight that is missing
    is an error (transformers would only warn and leave it random). `local_files_only`
    reads a hub id from the local Hugging Face cache and never tries the network.
    """
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()  # hides the report listing CLIP's text tower
    transformers_logging.disable_progress_bar()  # and a progress bar for a second's work
    try:
        clip, info = CLIPVisionModel.from_pretrained(
            str(source), output_loading_info=True, local_files_only=local_files_only
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
    if info["missing_keys"] or info.get("mismatched_keys"):
        raise ValueError(
            f"the vision tower at {source} lacks weights {sorted(info['missing_keys'])} "
            f"or has mismatched ones {info.get('mismatched_keys')}"
        )
    return clip


def config_vision_tower(directory: Path, raw: dict) -> Path | str:
    """Where config.json says CLIP is: a folder inside the checkpoint folder, or a hub id
    found in the local Hugging Face cache.

    A checkpoint may not send the loader elsewhere (`/etc`, `../..`): a folder outside
    it, or a hub id to download, is used only when the caller names it (vision_tower=).
    """
    config_path = directory / "config.json"
    name = raw.get("vision_tower") or raw.get("mm_vision_tower")
    if not name:
        raise CheckpointError(f"{config_path} names no vision_tower; pass vision_tower=")
    if (directory / name).exists() or Path(name).is_absolute() or not _is_hub_id(name):
        return inside(directory, name, config_path, "; pass it as vision_tower= if you trust it")
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise CheckpointError(
            f"{config_path} names the vision tower {name!r}, which is neither a folder in the checkpoint nor "
            f"in the local Hugging Face cache (a checkpoint's config never makes load_lisa download); "
            f"download it (hf download {name}) or pass vision_tower= a CLIP folder"
        )
    return name


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def load_lisa(
    path_or_hub_id: str | Path,
    vision_tower: str | Path | None = None,
    precision: str | None = None,
    device: str | torch.device = "cpu",
    conversation_template: str | None = None,
) -> tuple[LisaModel, object]:
    """Load a released (or `save_lisa`d) LISA checkpoint.

    Arguments:
        path_or_hub_id (str | Path): a checkpoint folder, or a hub id such as
            "xinlai/LISA-7B-v1" (downloaded with huggingface_hub; needs network).
        vision_tower (str | Path | None): the CLIP vision tower, a folder or hub id of a
            CLIPVisionModel or a full CLIPModel (e.g. openai/clip-vit-large-patch14).
            None: `vision_tower` (else `mm_vision_tower`) from config.json, which must be
            a folder inside the checkpoint folder or a hub id already in the local
            Hugging Face cache (see `config_vision_tower`).
        precision (str | None): None (dtypes as stored), "fp32", "bf16", "fp16", or
            "int8"/"int4" (CUDA + bitsandbytes; see lisa_model.checkpoint.precision).
        device (str | torch.device): where the model goes.
        conversation_template (str | None): "llava_v1" or "llava_llama_2"; None: the one
            config.json records, else "llava_v1" (see `default_conversation_template`).

    Returns:
        (LisaModel, tokenizer): the model in eval mode, and the checkpoint's tokenizer;
        the model's seg_token_id is the tokenizer's single [SEG] id.

    Raises:
        CheckpointError (a ValueError): when a file of the checkpoint is malformed or
            corrupt, names a path outside the folder, or the config, tokenizer or
            tensors do not make a LISA model (the message names the file and the
            problem; missing and unexpected tensors are listed; rotary inv_freq buffers
            are ignored), or a tensor holds NaN or infinite values.
        FileNotFoundError: when there is no checkpoint, config.json or weight file.
    """
    check_precision(precision, device)
    directory = resolve_checkpoint_dir(path_or_hub_id)
    raw = read_released_config(directory)
    # Sizes and dtypes from the weight files' headers: a config that contradicts the
    # tensors fails here, before anything is allocated.
    headers = read_tensor_headers(directory)
    check_config_against_tensors(raw, headers, directory)

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as error:  # malformed tokenizer files raise all kinds of errors
        raise CheckpointError(f"cannot read the tokenizer files in {directory}: {error}") from error
    seg_id = seg_token_id(tokenizer)
    llm_config = llama_config(raw, tokenizer)
    template = conversation_template or default_conversation_template(raw)
    get_template(template)  # fails early on an unknown name

    if vision_tower:
        clip_source = vision_tower
        clip = load_vision_tower(vision_tower)
    else:
        clip_source = config_vision_tower(directory, raw)
        clip = load_vision_tower(clip_source, local_files_only=True)
    if raw.get("mm_hidden_size", clip.config.hidden_size) != clip.config.hidden_size:
        raise CheckpointError(
            f"mm_hidden_size {raw['mm_hidden_size']} does not match the vision tower's width "
            f"{clip.config.hidden_size} ({clip_source})"
        )

    state = read_state_dict(directory)
    check_finite(state, headers)
    config = lisa_config(raw, llm_config, clip.config, seg_id, template, state)
    model = build_skeleton(config, clip)
    fill_skeleton(model, state)
    apply_precision(model, precision)
    return model.to(device).eval(), tokenizer
