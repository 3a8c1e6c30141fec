"""`load_lisa`: a released (or `save_lisa`d) checkpoint folder -> (LisaModel, tokenizer)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPVisionModel
from transformers.utils import logging as transformers_logging

from ..modeling.lisa import LisaModel
from ..processing.conversation import get_template
from ..tokenizer import seg_token_id
from .config import default_conversation_template, lisa_config, llama_config, read_released_config
from .files import read_state_dict, resolve_checkpoint_dir
from .precision import apply_precision, check_precision
from .skeleton import build_skeleton, fill_skeleton


def load_vision_tower(source: str | Path) -> CLIPVisionModel:
    """CLIP's vision tower from a CLIPVisionModel or full CLIPModel folder or hub id.

    A full CLIPModel's text tower is skipped quietly; a vision weight that is missing
    is an error (transformers would only warn and leave it random).
    """
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # hides the report listing CLIP's text tower
    try:
        clip, info = CLIPVisionModel.from_pretrained(str(source), output_loading_info=True)
    finally:
        transformers_logging.set_verbosity(verbosity)
    if info["missing_keys"] or info.get("mismatched_keys"):
        raise ValueError(
            f"the vision tower at {source} lacks weights {sorted(info['missing_keys'])} "
            f"or has mismatched ones {info.get('mismatched_keys')}"
        )
    return clip


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
            None: `vision_tower` (else `mm_vision_tower`) from config.json.
        precision (str | None): None (dtypes as stored), "fp32", "bf16", "fp16", or
            "int8"/"int4" (CUDA + bitsandbytes; see lisa_model.checkpoint.precision).
        device (str | torch.device): where the model goes.
        conversation_template (str | None): "llava_v1" or "llava_llama_2"; None: the one
            config.json records, else "llava_v1" (see `default_conversation_template`).

    Returns:
        (LisaModel, tokenizer): the model in eval mode, and the checkpoint's tokenizer;
        the model's seg_token_id is the tokenizer's single [SEG] id.

    Raises:
        ValueError: when the config, tokenizer or tensors do not make a LISA model; missing
            and unexpected tensors are listed (rotary inv_freq buffers are ignored).
    """
    check_precision(precision, device)
    directory = resolve_checkpoint_dir(path_or_hub_id)
    raw = read_released_config(directory)

    tokenizer = AutoTokenizer.from_pretrained(directory)
    seg_id = seg_token_id(tokenizer)
    llm_config = llama_config(raw, tokenizer)

    state = read_state_dict(directory)
    template = conversation_template or default_conversation_template(raw)
    get_template(template)  # fails early on an unknown name

    clip_source = vision_tower or raw.get("vision_tower") or raw.get("mm_vision_tower")
    if not clip_source:
        raise ValueError("config.json names no vision_tower; pass vision_tower=")
    if not vision_tower and (directory / clip_source).is_dir():
        clip_source = directory / clip_source  # a folder shipped inside the checkpoint (the demo model)
    clip = load_vision_tower(clip_source)
    if raw.get("mm_hidden_size", clip.config.hidden_size) != clip.config.hidden_size:
        raise ValueError(
            f"mm_hidden_size {raw['mm_hidden_size']} does not match the vision tower's width "
            f"{clip.config.hidden_size} ({clip_source})"
        )

    config = lisa_config(raw, llm_config, clip.config, seg_id, template, state)
    model = build_skeleton(config, clip)
    fill_skeleton(model, state)
    apply_precision(model, precision)
    return model.to(device).eval(), tokenizer
