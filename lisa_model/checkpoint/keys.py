"""Tensor names: the released checkpoints' keys <-> our parameter names."""

from __future__ import annotations

# Released name prefix -> our module prefix. The first match wins: the projector,
# SAM and the [SEG] head also live under `model.`, so they come before its rule.
KEY_PREFIXES = (
    ("model.mm_projector.", "mm_projector."),
    ("model.visual_model.", "visual_model."),
    ("model.text_hidden_fcs.", "text_hidden_fcs."),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
)


def released_to_ours(key: str) -> str | None:
    """Our parameter name for a released state-dict key; None for keys outside the model."""
    for released, ours in KEY_PREFIXES:
        if key.startswith(released):
            return ours + key[len(released) :]
    return None


def ours_to_released(name: str) -> str | None:
    """The released key of one of our parameter names; None for names outside the
    released layout (CLIP, which is not saved, or wrapped modules such as LoRA's)."""
    for released, ours in KEY_PREFIXES:
        if name.startswith(ours):
            return released + name[len(ours) :]
    return None


def is_tolerated(key: str) -> bool:
    """Whether a released key may be ignored on loading."""
    # Rotary frequencies are recomputed from the config; older transformers saved them.
    return key.endswith("rotary_emb.inv_freq")


def key_listing(keys: list[str], limit: int = 50) -> str:
    """`keys` joined for an error message, cut after `limit` of them."""
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")
