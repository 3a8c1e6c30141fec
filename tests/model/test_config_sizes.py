"""Real-size configurations (7B, 13B): shapes and parameter counts, checked on the meta device."""

import pytest
import torch

from lisa_model import build_lisa
from lisa_model.config import config_7b, config_13b


def test_7b_has_the_released_shapes():
    config = config_7b()
    llm, vision = config.llm, config.vision
    sizes = (llm.hidden_size, llm.intermediate_size, llm.num_hidden_layers, llm.num_attention_heads)
    assert sizes == (4096, 11008, 32, 32)
    assert (llm.max_position_embeddings, llm.rms_norm_eps, llm.vocab_size) == (2048, 1e-6, 32004)
    assert config.seg_token_id == 32003 and config.conversation_template == "llava_v1"
    sizes = (vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers, vision.num_attention_heads)
    assert sizes == (1024, 4096, 24, 16)
    assert (vision.image_size, vision.patch_size, config.num_image_tokens) == (224, 14, 256)
    assert config.mm_projector_type == "linear" and config.mm_use_im_start_end


def test_13b_has_the_released_shapes():
    config = config_13b()
    llm = config.llm
    sizes = (llm.hidden_size, llm.intermediate_size, llm.num_hidden_layers, llm.num_attention_heads)
    assert sizes == (5120, 13824, 40, 40)
    assert (llm.max_position_embeddings, llm.vocab_size, config.seg_token_id) == (4096, 32003, 32000)
    assert config.conversation_template == "llava_llama_2"
    assert config.num_image_tokens == 256 and config.vision.hidden_size == 1024


@pytest.mark.parametrize("make", [config_7b, config_13b])
def test_real_sizes_use_sam_vit_h(make):
    config = make()
    assert (config.sam_image_size, config.sam_encoder_embed_dim, config.sam_encoder_depth) == (1024, 1280, 32)
    assert (config.sam_encoder_num_heads, config.sam_encoder_global_attn_indexes) == (16, (7, 15, 23, 31))
    assert (config.sam_embedding_size, config.sam_prompt_embed_dim) == (64, 256)


def test_token_ids_are_configurable():
    config = config_7b(vocab_size=32001, seg_token_id=32000)
    assert (config.llm.vocab_size, config.seg_token_id) == (32001, 32000)


def parameter_counts(config):
    with torch.device("meta"):  # shapes only, no memory
        model = build_lisa(config)
    sam = model.visual_model
    return {
        "language_model": sum(p.numel() for p in model.language_model.parameters()),
        "vision_tower": sum(p.numel() for p in model.vision_tower.parameters()),
        "sam_image_encoder": sum(p.numel() for p in sam.image_encoder.parameters()),
        "sam": sum(p.numel() for p in sam.parameters()),
        "total": sum(p.numel() for p in model.parameters()),
    }


def test_real_sizes_match_published_parameter_counts():
    seven, thirteen = parameter_counts(config_7b()), parameter_counts(config_13b())
    # LLaMA-7B has 6,738,415,616 parameters at 32000 tokens; LISA adds 4 rows to embeddings and lm_head.
    assert seven["language_model"] == 6_738_415_616 + 2 * 4 * 4096
    # LLaMA-2-13B: 13,015,864,320 at 32000 tokens; LISA-13B-llama2 adds 3.
    assert thirteen["language_model"] == 13_015_864_320 + 2 * 3 * 5120
    # SAM ViT-H: 641,090,608 in all, 637,026,048 in the image encoder.
    assert seven["sam_image_encoder"] == 637_026_048
    assert seven["sam"] == 641_090_608
    assert round(seven["vision_tower"] / 1e6) == 303  # CLIP ViT-L/14 vision tower
    assert 7.6e9 < seven["total"] < 7.8e9 and 13.9e9 < thirteen["total"] < 14.1e9
