"""Builders: one per model size, over one private builder (as segment-anything does)."""

import torch
from transformers import CLIPVisionModel, LlamaForCausalLM

from .config import LisaConfig, tiny_config
from .modeling.lisa import LisaModel, build_projector, build_seg_projection
from .modeling.sam import build_sam
from .tokenizer import build_tiny_tokenizer, seg_token_id


def build_lisa(config: LisaConfig) -> LisaModel:
    """A LISA model with freshly initialised weights, in eval mode."""
    model = LisaModel(
        config,
        language_model=LlamaForCausalLM(config.llm),
        vision_tower=CLIPVisionModel(config.vision),
        mm_projector=build_projector(config.mm_projector_type, config.vision.hidden_size, config.hidden_size),
        visual_model=build_sam(config),
        text_hidden_fcs=build_seg_projection(config.hidden_size, config.sam_prompt_embed_dim),
    )
    return model.eval()


def _build_tiny(clip_image_size: int, projector: str, seed: int):
    tokenizer = build_tiny_tokenizer()
    config = tiny_config(len(tokenizer), seg_token_id(tokenizer), clip_image_size, projector)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_lisa(config)
    return model, tokenizer


def build_lisa_tiny(seed: int = 0):
    """Tiny random-weight LISA in the LISA-7B-v1 shape (224 px CLIP, linear projector)
    and its offline tokenizer: `(model, tokenizer)`. For tests and demos."""
    return _build_tiny(224, "linear", seed)


def build_lisa_tiny_llava15(seed: int = 0):
    """Tiny random-weight LISA in the LLaVA-1.5 shape (336 px CLIP, mlp2x_gelu projector)."""
    return _build_tiny(336, "mlp2x_gelu", seed)


lisa_model_registry = {
    "tiny": build_lisa_tiny,
    "tiny_llava15": build_lisa_tiny_llava15,
}
