"""Builders: one per model size, over one private builder (as segment-anything does)."""

from pathlib import Path

import torch
from transformers import CLIPVisionModel, LlamaForCausalLM

from .config import LisaConfig, demo_config, tiny_config
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


def _build_small(make_config, seed: int):
    tokenizer = build_tiny_tokenizer()
    config = make_config(len(tokenizer), seg_token_id(tokenizer))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_lisa(config)
    return model, tokenizer


def build_lisa_tiny(seed: int = 0):
    """Tiny random-weight LISA in the LISA-7B-v1 shape (224 px CLIP, linear projector)
    and its offline tokenizer: `(model, tokenizer)`. For tests and demos."""
    return _build_small(tiny_config, seed)


def build_lisa_tiny_llava15(seed: int = 0):
    """Tiny random-weight LISA in the LLaVA-1.5 shape (336 px CLIP, mlp2x_gelu projector)."""
    return _build_small(lambda vocab, seg: tiny_config(vocab, seg, 336, "mlp2x_gelu"), seed)


def build_lisa_demo(seed: int = 0):
    """Random-weight LISA in the demo model's shape (lisa_model.config.demo_config), to be
    trained on the synthetic demo scenes (training/configs/demo_model.yaml)."""
    return _build_small(demo_config, seed)


# The demo model: lisa_model's "demo" shape trained on the synthetic reasoning scenes
# (training/configs/demo_model.yaml), shipped in the released layout (load it with load_lisa).
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"

lisa_model_registry = {
    "tiny": build_lisa_tiny,
    "tiny_llava15": build_lisa_tiny_llava15,
    "demo": build_lisa_demo,
}
