"""LISA's trainable-parameter recipe: LoRA on the LLM's q/v projections, a few modules fully trained.

Reference (train_ds.py) and paper §3.3: LoRA r 8, alpha 16, dropout 0.05 on the
language model's `q_proj` and `v_proj` only; fully trainable `embed_tokens`,
`lm_head`, SAM's mask decoder and the [SEG] projection head (`text_hidden_fcs`);
everything else frozen (CLIP, the mm projector, SAM's image and prompt encoders).

CLIP's attention layers are also called `q_proj`/`v_proj`, so the LoRA targets are a
regex anchored at `language_model.model.layers.*` (peft full-matches a string target).

One exception to "SAM's mask decoder is trainable": its IoU prediction head. LISA
ignores SAM's IoU output (only masks are supervised), so that head never receives a
gradient. DDP (without find_unused_parameters) fails on trainable parameters that get
no gradient, and the reference's optimizer never changes them either (zero gradient,
zero weight decay), so freezing them changes nothing but makes every engine happy.
"""

from __future__ import annotations

import re

from pydantic import field_validator
from pydantic.dataclasses import dataclass
from torch import nn

from .schema import SECTION, Count, Probability

# Fully trained modules, by name fragment (the reference's rule: "any parameter whose
# name contains one of these").
FULLY_TRAINED = ("language_model.model.embed_tokens.", "language_model.lm_head.",
                 "visual_model.mask_decoder.", "text_hidden_fcs.")
# Inside the fully trained modules but never reached by the loss (see module docstring).
NO_GRADIENT = ("visual_model.mask_decoder.iou_prediction_head.",)
LORA_TARGETS = r"language_model\.model\.layers\.\d+\.self_attn\.(q_proj|v_proj)"
ADAPTER = "default"


@dataclass(config=SECTION)
class LoraSettings:
    """LoRA hyper-parameters (the paper's defaults), checked on construction (training.schema)."""

    r: Count = 8
    alpha: Count = 16
    dropout: Probability = 0.05
    target_modules: str = LORA_TARGETS  # a regex, full-matched against module names
    # Name fragments of modules trained fully besides the recipe's; a model that starts
    # from random weights (the demo model) must learn its encoders too.
    train_also: tuple[str, ...] = ()

    @field_validator("target_modules")
    @classmethod
    def _a_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return value


def apply_lora(model: nn.Module, settings: LoraSettings = LoraSettings()):
    """Inject LoRA adapters into `model` in place and set requires_grad per the recipe.

    Arguments:
        model (LisaModel): a plain LISA model (no adapters yet).
        settings (LoraSettings): rank, alpha, dropout, target regex.

    Returns:
        peft.LoraModel: the tuner wrapping `model` (`.model` is `model` itself); keep it
        to call `merge_and_unload()`. Parameter names of `model` gain
        `.base_layer.` and `.lora_{A,B}.default.` for the adapted layers.
    """
    from peft import LoraConfig, LoraModel

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, bias="none")
    tuner = LoraModel(model, config, ADAPTER)  # freezes everything but the adapters
    injected = [name for name, _ in model.named_parameters() if ".lora_" in name]
    if not injected or any(not name.startswith("language_model.model.layers.") for name in injected):
        raise RuntimeError(f"LoRA targets {settings.target_modules!r} matched {injected[:4]}...")
    set_trainable(model, settings.train_also)
    return tuner


def is_trainable_name(name: str, train_also: tuple[str, ...] = ()) -> bool:
    """Whether a (LoRA-injected) LISA parameter name is trained by the recipe (plus `train_also`)."""
    if ".lora_A." in name or ".lora_B." in name or any(part in name for part in train_also):
        return True
    return any(part in name for part in FULLY_TRAINED) and not any(part in name for part in NO_GRADIENT)


def set_trainable(model: nn.Module, train_also: tuple[str, ...] = ()) -> None:
    """requires_grad = is_trainable_name(name, train_also) for every parameter."""
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable_name(name, train_also))


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters with requires_grad, in module order."""
    return [name for name, param in model.named_parameters() if param.requires_grad]


def trainable_state_dict(model: nn.Module) -> dict:
    """The trainable parameters only (what a training checkpoint stores), detached on CPU."""
    return {name: param.detach().cpu().clone() for name, param in model.named_parameters() if param.requires_grad}


def check_trainable_keys(model: nn.Module, state: dict) -> None:
    """Raise ValueError unless `state` holds exactly the trainable parameters of `model`."""
    expected = set(trainable_parameter_names(model))
    if set(state) != expected:
        raise ValueError(f"checkpoint holds {sorted(set(state) - expected)[:5]} extra and "
                         f"lacks {sorted(expected - set(state))[:5]} trainable parameters")


def load_trainable_state_dict(model: nn.Module, state: dict) -> None:
    """Copy a `trainable_state_dict` back; every trainable parameter must be in it and nothing else."""
    check_trainable_keys(model, state)
    params = dict(model.named_parameters())
    for name, tensor in state.items():
        params[name].data.copy_(tensor.to(params[name].dtype))


def merge_lora(tuner) -> nn.Module:
    """Fold the adapters into the base weights; returns the plain LISA model (released names)."""
    return tuner.merge_and_unload()
