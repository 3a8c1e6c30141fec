"""FSDP (torch's `fully_shard`, FSDP2) for LISA: which modules are sharding units, and
full (unsharded) training state for checkpoints.

Every transformer block (LLaMA decoder layers, CLIP encoder layers, SAM ViT blocks)
is its own unit, so at most one block's weights are gathered at a time; the remaining
modules (embeddings, lm_head, projector, SAM neck, prompt encoder and mask decoder,
[SEG] head) form the root unit. `fully_shard` keeps parameter names, so checkpoints
hold the same names as with the other engines and `training.merge` reads them alike.
Parameters become DTensors sharded over the ranks; every forward is a collective.
"""

from __future__ import annotations

import torch
from torch import nn

from .lora import check_trainable_keys, trainable_parameter_names


def shard_model(model: nn.Module) -> None:
    """Shard `model` (a LoRA-injected LisaModel, already on its device) in place.

    Call before building the optimizer: it must see the sharded parameters.
    """
    from torch.distributed.fsdp import fully_shard

    blocks = [
        *model.language_model.model.layers,
        *model.vision_tower.encoder.layers,
        *model.visual_model.image_encoder.blocks,
    ]
    for block in blocks:
        fully_shard(block)
    fully_shard(model)


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def trainable_state_dict(model: nn.Module) -> dict:
    """The trainable parameters, gathered whole on rank 0 (on CPU); empty on other ranks. A collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    names = set(trainable_parameter_names(model))
    state = get_model_state_dict(model, options=_options(cpu_offload=True, ignore_frozen_params=True))
    return {name: tensor for name, tensor in state.items() if name in names}  # buffers are not trained


def load_trainable_state_dict(model: nn.Module, state: dict) -> None:
    """Shard a full trainable state (every rank passes the same one) into `model`."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    check_trainable_keys(model, state)
    set_model_state_dict(model, state, options=_options(strict=False))


def optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, whole on rank 0. A collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def load_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_options())


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_ over DTensors returns a (replicated) DTensor: its plain value."""
    from torch.distributed.tensor import DTensor

    return norm.full_tensor() if isinstance(norm, DTensor) else norm
