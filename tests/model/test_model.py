"""LisaModel: image-token splicing, [SEG] embeddings, KV-cached generation, training."""

import numpy as np
import pytest
import torch

from lisa_model import build_lisa_tiny, build_lisa_tiny_llava15
from lisa_model.modeling.lisa import build_projector
from lisa_model.processing.conversation import Conversation, Turn, get_template, image_user_message
from lisa_model.processing.image import preprocess_clip
from lisa_model.processing.tokenization import IMAGE_TOKEN_INDEX, tokenize_conversation, tokenize_prompt
from tests.helpers.model import synthetic_batch


@pytest.mark.parametrize(
    "builder, clip_size, image_tokens", [(build_lisa_tiny, 224, 256), (build_lisa_tiny_llava15, 336, 576)]
)
def test_seg_embedding_is_hidden_state_before_seg(builder, clip_size, image_tokens):
    model, tokenizer = builder(seed=3)
    config = model.config
    assert config.num_image_tokens == image_tokens
    turn = Turn(image_user_message("segment the cup", True), "Sure, the cup is [SEG] and the lid is [SEG].")
    ids, _ = tokenize_conversation(tokenizer, get_template(config.conversation_template), [turn])
    ids_tensor = torch.tensor([ids])
    clip_pixels = torch.randn(1, 3, clip_size, clip_size)
    sam_pixels = torch.randn(1, 3, config.sam_image_size, config.sam_image_size)

    with torch.no_grad():
        out = model(
            sam_pixels=sam_pixels,
            clip_pixels=clip_pixels,
            input_ids=ids_tensor,
            attention_mask=torch.ones_like(ids_tensor),
            image_index=torch.tensor([0]),
            resized_sizes=[(128, 128)],
            original_sizes=[(40, 50)],
        )
        # By hand: text embeddings around the image, CLIP hidden_states[-2] without CLS
        # through the projector in the middle; one forward over the whole sequence.
        at = ids.index(IMAGE_TOKEN_INDEX)
        embed = model.language_model.get_input_embeddings()
        clip_hidden = model.vision_tower(clip_pixels, output_hidden_states=True).hidden_states[-2]
        image = model.mm_projector(clip_hidden[:, 1:])
        assert image.shape[1] == image_tokens
        sequence = torch.cat([embed(torch.tensor([ids[:at]])), image, embed(torch.tensor([ids[at + 1 :]]))], dim=1)
        hidden = model.language_model.model(inputs_embeds=sequence).last_hidden_state[0]
        seg_at = [i for i, t in enumerate(ids) if t == config.seg_token_id]
        assert len(seg_at) == 2
        # The state that predicts [SEG] sits one position earlier, shifted by the image tokens.
        positions = [i - 1 + image_tokens - 1 for i in seg_at]
        expected = model.text_hidden_fcs[0](hidden[positions])

    assert out.seg_embeddings[0].shape == (2, config.sam_prompt_embed_dim)
    torch.testing.assert_close(out.seg_embeddings[0], expected, rtol=1e-5, atol=1e-5)
    assert out.mask_logits[0].shape == (2, 40, 50)
    assert out.iou_predictions[0].shape == (2,)


def prompt_embeds(model, tokenizer, command, image):
    prompt = Conversation(model.config.conversation_template).prompt_for(command, model.config.mm_use_im_start_end)
    ids = torch.tensor([tokenize_prompt(tokenizer, prompt)])
    ids = model.expand_image_placeholder(ids, ids, IMAGE_TOKEN_INDEX)
    image_tokens = model.encode_clip(preprocess_clip(image, model.config.vision.image_size)[None])
    return model.embed_inputs(ids, image_tokens)


@pytest.mark.parametrize("command", ["segment both squares", "segment the red square", "what colour is the table?"])
def test_kv_cached_generation_equals_full_recompute(trained_tiny, command):
    model, tokenizer, scenes, _ = trained_tiny
    with torch.no_grad():
        embeds = prompt_embeds(model, tokenizer, command, scenes[0][0])
        cached = model.generate(embeds, max_new_tokens=12, use_cache=True)
        full = model.generate(embeds, max_new_tokens=12, use_cache=False)
    assert cached.token_ids == full.token_ids
    assert cached.token_ids[-1] == model.config.llm.eos_token_id
    expected_segs = {"segment both squares": 2, "segment the red square": 1}.get(command, 0)
    assert cached.seg_hidden_states.shape == (expected_segs, model.config.hidden_size)
    torch.testing.assert_close(cached.seg_hidden_states, full.seg_hidden_states, rtol=1e-4, atol=1e-5)
    # The cache holds the prompt and every generated token but the last.
    assert cached.cache.get_seq_length() == embeds.shape[1] + len(cached.token_ids) - 1


def test_generation_stops_at_max_new_tokens_and_context(tiny):
    model, tokenizer = tiny
    with torch.no_grad():
        embeds = prompt_embeds(model, tokenizer, "segment the red square", np.zeros((8, 8, 3), np.uint8))
        assert len(model.generate(embeds, max_new_tokens=3).token_ids) <= 3
        context = model.config.llm.max_position_embeddings
        # Five positions left in the context: at most five new tokens.
        long_embeds = embeds.new_zeros((1, context - 5, embeds.shape[-1]))
        assert len(model.generate(long_embeds, max_new_tokens=50).token_ids) <= 5


def test_training_lowers_ce_bce_and_dice(trained_tiny):
    *_, history = trained_tiny
    first, last = history[0], history[-1]
    assert last["ce"] < 0.1 * first["ce"]
    assert last["bce"] < 0.1 * first["bce"]
    assert last["dice"] < 0.1 * first["dice"]


def test_forward_maps_conversations_to_images(tiny):
    model, tokenizer = tiny
    batch, scenes = synthetic_batch(model, tokenizer)
    batch["original_sizes"] = [(64, 64), (64, 64)]
    with torch.no_grad():
        out = model(**batch)
    mask_counts = [m.shape[0] for m in batch["gt_masks"]]
    assert [m.shape[0] for m in out.mask_logits] == mask_counts
    assert all(m.shape[1:] == (64, 64) for m in out.mask_logits)
    assert out.loss is not None and torch.isfinite(out.loss.total)


def test_each_sequence_needs_one_image_placeholder(tiny):
    model, _ = tiny
    ids = torch.tensor([[1, 5, 6, 7]])
    with pytest.raises(ValueError, match="exactly one <image> placeholder"):
        model.expand_image_placeholder(ids, ids, IMAGE_TOKEN_INDEX)


def test_unknown_projector_type():
    with pytest.raises(ValueError, match="mlp2x_gelu"):
        build_projector("mlp3x", 32, 64)
