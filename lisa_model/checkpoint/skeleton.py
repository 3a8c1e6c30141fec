"""An empty LisaModel on the meta device, filled with a checkpoint's tensors.

Building on the meta device allocates and initialises nothing, so a 7B model is never
held twice (random weights, then the checkpoint's). The checkpoint supplies every
parameter and saved buffer; the buffers modules compute in `__init__` and checkpoints
never hold are computed again on the CPU afterwards.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from ..config import LisaConfig
from ..modeling.lisa import LisaModel, build_projector, build_seg_projection
from ..modeling.sam import build_sam, sam_pixel_statistics
from .errors import CheckpointError
from .keys import is_tolerated, key_listing, ours_to_released, released_to_ours


def build_skeleton(config: LisaConfig, vision_tower: nn.Module) -> LisaModel:
    """A LisaModel for `config` around `vision_tower` (kept as it is), every other tensor on the meta device."""
    with torch.device("meta"):
        return LisaModel(
            config,
            language_model=LlamaForCausalLM(config.llm),
            vision_tower=vision_tower,
            mm_projector=build_projector(config.mm_projector_type, config.vision.hidden_size, config.hidden_size),
            visual_model=build_sam(config),
            text_hidden_fcs=build_seg_projection(config.hidden_size, config.sam_prompt_embed_dim),
        )


def fill_skeleton(model: LisaModel, state: dict[str, torch.Tensor]) -> None:
    """Put the released tensors into a `build_skeleton` model, keeping their dtypes, then
    compute its non-saved buffers.

    Raises:
        CheckpointError: when `state` lacks tensors of the model, holds others, or shapes differ.
    """
    expected = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("vision_tower.")}
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in state.items():
        if is_tolerated(key):
            continue
        name = released_to_ours(key)
        if name in expected:
            mapped[name] = tensor
        else:
            unexpected.append(key)
    missing = sorted(ours_to_released(name) for name in expected if name not in mapped)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)}: {key_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)}: {key_listing(sorted(unexpected))}")
        raise CheckpointError("the checkpoint does not match the LISA model; " + "; ".join(problems))
    mismatched = [
        f"{ours_to_released(name)} {tuple(tensor.shape)} (model {tuple(expected[name].shape)})"
        for name, tensor in mapped.items()
        if tensor.shape != expected[name].shape
    ]
    if mismatched:
        raise CheckpointError(f"tensor shapes do not match config.json: {key_listing(sorted(mismatched))}")
    model.load_state_dict(mapped, strict=False, assign=True)
    _compute_unsaved_buffers(model)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:  # would mean a module holds state that is neither saved nor computed here
        raise RuntimeError(f"parameters left without values: {key_listing(left)}")


def _compute_unsaved_buffers(model: LisaModel) -> None:
    """The values `__init__` gives the buffers that checkpoints do not hold, on the CPU."""
    # The rotary frequencies follow from the config: a new module, as LlamaModel builds it.
    model.language_model.model.rotary_emb = LlamaRotaryEmbedding(config=model.config.llm)
    sam = model.visual_model
    sam.pixel_mean, sam.pixel_std = sam_pixel_statistics()
