"""LisaPredictor: caching, several/no masks, follow-ups, precisions, bad input."""

import numpy as np
import pytest
import torch

from lisa_model import ContextOverflowError, Conversation, LisaPredictor
from lisa_model.metrics import mask_iou
from lisa_model.modeling.sam import decode_masks
from tests.helpers.model import LESSONS


class CallCounter:
    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self._count)

    def _count(self, *_):
        self.calls += 1


def test_set_image_encodes_once_for_many_commands(tiny):
    model, tokenizer = tiny
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=4)
    clip, sam = CallCounter(model.vision_tower), CallCounter(model.visual_model.image_encoder)
    predictor.set_image(np.zeros((30, 40, 3), np.uint8))
    for command in ("segment the cup", "segment the table", "where is the knife?"):
        predictor.predict(command)
    predictor.predict("and the fork?", Conversation())
    assert (clip.calls, sam.calls) == (1, 1)
    predictor.set_image(np.ones((30, 40, 3), np.uint8))
    assert (clip.calls, sam.calls) == (2, 2)


@pytest.mark.parametrize("command, answer, targets", LESSONS)
def test_masks_follow_the_seg_tokens(trained_tiny, command, answer, targets):
    model, tokenizer, scenes, _ = trained_tiny
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=12)
    image, masks = scenes[0]
    predictor.set_image(image)
    result = predictor.predict(command)
    assert result.text.count("[SEG]") == len(targets)
    assert result.masks.shape == (len(targets), *image.shape[:2])
    assert result.masks.dtype == bool
    assert result.mask_logits.shape == result.masks.shape and result.mask_logits.dtype == np.float32
    np.testing.assert_array_equal(result.masks, result.mask_logits > 0)
    assert result.scores.shape == (len(targets),) and result.scores.dtype == np.float32
    if not targets:
        assert result.text == "The table is gray."
    for mask, target in zip(result.masks, targets):
        other = "blue" if target == "red" else "red"
        assert mask_iou(mask, masks[target]) > 0.9
        assert mask_iou(mask, masks[other]) < 0.1
    stages = {"tokenize", "prefill", "decode", "total"}
    assert set(result.timings) == (stages | {"mask_decoder", "postprocess", "first_mask"} if targets else stages)


def test_kv_prefix_reuse_gives_the_same_answers(trained_tiny):
    model, tokenizer, scenes, _ = trained_tiny
    image = scenes[1][0]
    reusing = LisaPredictor(model, tokenizer, max_new_tokens=12)
    reusing.set_image(image)
    prefill_lengths = []
    hook = model.language_model.model.register_forward_hook(
        lambda module, args, kwargs, out: prefill_lengths.append(
            (kwargs["inputs_embeds"] if kwargs.get("inputs_embeds") is not None else kwargs["input_ids"]).shape[1]
        ),
        with_kwargs=True,
    )
    try:
        results = [reusing.predict(command) for command, _, _ in LESSONS]
    finally:
        hook.remove()
    full_prompt = prefill_lengths[0]
    # Later commands share the system prompt and the 256 image tokens with the kept cache.
    prompt_lengths = [n for n in prefill_lengths if n > 1]
    assert prompt_lengths[0] == full_prompt > 256
    assert all(n < 20 for n in prompt_lengths[1:])

    for (command, _, _), result in zip(LESSONS, results):
        fresh = LisaPredictor(model, tokenizer, max_new_tokens=12)
        fresh.set_image(image)
        expected = fresh.predict(command)
        assert result.text == expected.text
        np.testing.assert_allclose(result.mask_logits, expected.mask_logits, rtol=1e-4, atol=1e-4)


def test_follow_up_is_answered_in_context(trained_tiny):
    model, tokenizer, scenes, _ = trained_tiny
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=12)
    predictor.set_image(scenes[0][0])
    conversation = Conversation()
    first = predictor.predict("segment the red square", conversation)
    predictor.predict("segment the blue square", conversation)
    assert [turn.assistant for turn in conversation.turns][0] == first.text
    assert len(conversation.turns) == 2
    # The second prompt carries the first turn; the image placeholder appears once.
    prompt = conversation.prompt_for("and now?", model.config.mm_use_im_start_end)
    assert prompt.count("<image>") == 1 and "segment the red square" in prompt
    conversation.reset()
    assert conversation.turns == []


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precisions_run(dtype):
    from lisa_model import build_lisa_tiny

    model, tokenizer = build_lisa_tiny(seed=0)
    predictor = LisaPredictor(model.to(dtype), tokenizer, max_new_tokens=3)
    predictor.set_image(np.full((20, 30, 3), 100, np.uint8))
    result = predictor.predict("segment the cup")
    assert result.mask_logits.dtype == np.float32
    assert result.masks.shape[1:] == (20, 30)
    # The random model rarely says [SEG]: decode two embeddings directly in this precision.
    seg = torch.randn(2, model.config.sam_prompt_embed_dim, dtype=dtype)
    low_res, iou = decode_masks(model.visual_model, predictor.image_embedding.embedding, seg)
    assert low_res.shape == (2, 1, 32, 32) and low_res.dtype == dtype and iou.shape == (2, 1)


@pytest.mark.parametrize(
    "image, message",
    [
        ([[0, 0, 0]], "numpy array"),
        (np.zeros((4, 5, 3), np.float32), "uint8"),
        (np.zeros((4, 5), np.uint8), "HxWx3"),
        (np.zeros((4, 5, 4), np.uint8), "HxWx3"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
    ],
)
def test_bad_images_raise(tiny, image, message):
    predictor = LisaPredictor(*tiny)
    with pytest.raises(ValueError, match=message):
        predictor.set_image(image)
    assert not predictor.is_image_set


def test_bad_commands_raise(tiny):
    model, tokenizer = tiny
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=2)
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict("segment the cup")
    predictor.set_image(np.zeros((8, 8, 3), np.uint8))
    for command in ("", "   \n", None):
        with pytest.raises(ValueError, match="non-empty string"):
            predictor.predict(command)
    with pytest.raises(ContextOverflowError, match="context") as overflow:
        predictor.predict("cup " * 3000)
    assert isinstance(overflow.value, ValueError)  # callers catching ValueError still catch it
    with pytest.raises(ValueError, match="max_new_tokens"):
        LisaPredictor(model, tokenizer, max_new_tokens=0)
    # The predictor still answers after the errors.
    assert predictor.predict("segment the cup").masks.shape[1:] == (8, 8)


def test_reused_seg_embeddings_decode_on_another_image_as_the_mask_decoder_does_by_hand(trained_tiny):
    """Tracking: an answer's [SEG] embeddings prompt SAM on a later image with no LLM."""
    from lisa_model.processing.image import postprocess_masks, preprocess_sam

    model, tokenizer, scenes, _ = trained_tiny
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=12)
    predictor.set_image(scenes[0][0])
    answer = predictor.predict(LESSONS[0][0])
    assert answer.seg_embeddings.shape[0] == len(answer.masks) > 0
    later = scenes[1][0]
    embedded = predictor.embed_image(later)
    masks, logits, scores = predictor.decode(answer.seg_embeddings, embedded)
    with torch.no_grad():
        pixels, resized = preprocess_sam(later, model.config.sam_image_size)
        image_embedding = model.encode_sam(pixels[None])
        low_res, iou = decode_masks(model.visual_model, image_embedding, answer.seg_embeddings)
        expected = postprocess_masks(low_res, resized, later.shape[:2], model.config.sam_image_size).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(masks, expected > 0)
    np.testing.assert_allclose(scores, iou[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    # The image set for predict() is unchanged.
    assert predictor.image_embedding.original_size == scenes[0][0].shape[:2]


def test_an_answer_cut_at_the_context_limit_says_so():
    """generate() lowers max_new_tokens to the room left in the context: the prediction says so."""
    import copy
    import dataclasses

    from lisa_model import build_lisa_tiny

    model, tokenizer = build_lisa_tiny(seed=0)
    llm = copy.deepcopy(model.config.llm)
    llm.eos_token_id = -1  # never ends early: every answer runs to its limit
    model.config = dataclasses.replace(model.config, llm=llm)
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=8)
    predictor.set_image(np.zeros((8, 8, 3), np.uint8))
    assert not predictor.predict("segment the cup").truncated  # stopped by max_new_tokens
    low, high = 1, model.config.llm.max_position_embeddings  # commands of `low` words fit, of `high` do not
    while high - low > 1:
        middle = (low + high) // 2
        try:
            predictor.predict("cup " * middle)
            low = middle
        except ContextOverflowError:
            high = middle
    longest = predictor.predict("cup " * low)  # it leaves less room than max_new_tokens
    assert longest.truncated and len(tokenizer.encode(longest.text)) <= 8
