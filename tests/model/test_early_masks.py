"""Early masks, streamed text, short answers, pre-encoded frames and warm-up of LisaPredictor."""

import numpy as np
import pytest
import torch

from lisa_model import DEMO_MODEL_DIR, LisaPredictor, load_lisa
from lisa_model.processing.tokenization import decode_answer
from lisa_model.streaming import AnswerStream
from lisa_model.tokenizer import build_tiny_tokenizer, seg_token_id
from tests.helpers.model import LESSONS
from tests.model.test_predictor import CallCounter
from training.data.demo_scenes import DemoScenesDataset


@pytest.fixture(scope="module")
def demo():
    """The shipped demo model, a frame and three commands it answers with one [SEG] and an explanation."""
    model, tokenizer = load_lisa(DEMO_MODEL_DIR)
    dataset = DemoScenesDataset("test", num_scenes=1, frames_per_scene=2, phrasing="heldout", seed=0)
    commands = [command.text for command in dataset.visible_commands(0)[:3]]
    return model, tokenizer, dataset.frame(0).rgb, commands


def answer_with_callbacks(predictor, command, **kwargs):
    early, texts = [], []
    prediction = predictor.predict(command, on_mask=early.append, on_text=texts.append, **kwargs)
    return prediction, early, texts


def assert_masks_are_the_early_ones(prediction, early):
    assert [m.index for m in early] == list(range(len(prediction.masks)))
    for m, mask, logits, score, embedding in zip(
        early, prediction.masks, prediction.mask_logits, prediction.scores, prediction.seg_embeddings
    ):
        np.testing.assert_array_equal(m.mask, mask)
        np.testing.assert_array_equal(m.mask_logits, logits)
        assert m.score == score
        torch.testing.assert_close(m.seg_embedding, embedding, rtol=0, atol=0)


def test_each_seg_is_published_at_once_with_the_final_mask(demo):
    model, tokenizer, image, commands = demo
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=48)
    predictor.set_image(image)
    for command in commands:
        prediction, early, texts = answer_with_callbacks(predictor, command)
        assert prediction.text.startswith("[SEG] ") and len(prediction.text) > 20  # a mask, then why
        assert len(early) == len(prediction.masks) == 1
        assert_masks_are_the_early_ones(prediction, early)
        # The mask came with the [SEG], before the explanation was generated.
        assert early[0].text == "[SEG]"
        assert 0 < early[0].seconds == prediction.timings["first_mask"] < prediction.timings["total"]
        assert "".join(texts) == prediction.text and len(texts) > 3
        # Decoding the final embeddings again (all at once, as `decode` does) gives the same masks.
        masks, logits, scores = predictor.decode(prediction.seg_embeddings, predictor.image_embedding)
        np.testing.assert_allclose(logits, prediction.mask_logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(scores, prediction.scores, rtol=1e-5, atol=1e-6)


def test_several_segs_each_get_an_early_mask(trained_tiny):
    model, tokenizer, scenes, _ = trained_tiny
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=12)
    predictor.set_image(scenes[0][0])
    prediction, early, texts = answer_with_callbacks(predictor, "segment both squares")
    assert prediction.text == "[SEG] and [SEG] ."
    assert [m.text for m in early] == ["[SEG]", "[SEG] and [SEG]"]
    assert_masks_are_the_early_ones(prediction, early)
    assert early[0].seconds < early[1].seconds
    assert "".join(texts) == prediction.text
    # The same answer without callbacks.
    plain = LisaPredictor(model, tokenizer, max_new_tokens=12)
    plain.set_image(scenes[0][0])
    np.testing.assert_array_equal(plain.predict("segment both squares").mask_logits, prediction.mask_logits)


@pytest.mark.parametrize("command, answer, targets", LESSONS)
def test_short_answers_end_after_the_last_seg(trained_tiny, command, answer, targets):
    model, tokenizer, scenes, _ = trained_tiny
    full = LisaPredictor(model, tokenizer, max_new_tokens=12)
    short = LisaPredictor(model, tokenizer, max_new_tokens=12, short_answer=True)
    generated = []
    hook = model.language_model.lm_head.register_forward_hook(lambda *_: generated.append(1))
    try:
        for predictor in (full, short):
            predictor.set_image(scenes[0][0])
            generated.clear()
            prediction, early, texts = answer_with_callbacks(predictor, command)
            predictor.steps = len(generated)
            predictor.result = prediction
            assert "".join(texts) == prediction.text
            assert_masks_are_the_early_ones(prediction, early)
    finally:
        hook.remove()
    if targets:
        assert short.result.text == full.result.text[: full.result.text.rindex("[SEG]") + 5]
        assert short.steps < full.steps
    else:  # no target: the whole answer says why
        assert short.result.text == full.result.text
    np.testing.assert_array_equal(short.result.mask_logits, full.result.mask_logits)


def test_answer_stream_stops_after_a_list_of_segs():
    tokenizer = build_tiny_tokenizer()
    seg = seg_token_id(tokenizer)

    def run(text):
        """(the token generation stops at, how many tokens the short answer keeps)."""
        ids = tokenizer.encode(text, add_special_tokens=False)
        parts = []
        stream = AnswerStream(tokenizer, seg, short=True, on_text=parts.append)
        stopped_at = None
        for index, token in enumerate(ids):
            if stream.add(token):
                stopped_at = index
                break
            stream.emit()
        final = stream.finish()
        assert "".join(parts) == final
        kept = next(n for n in range(len(ids) + 1) if decode_answer(tokenizer, ids[:n]) == final)
        return stopped_at, kept

    # Tokens: Sure, | " " | [SEG] | and | " " | [SEG] | . | The | ...
    assert run("Sure, [SEG] and [SEG]. The mug") == (6, 6)
    # [SEG] | , | " " | [SEG] | " " | & | " " | [SEG] | ok
    assert run("[SEG], [SEG] & [SEG] ok") == (8, 8)
    assert run("[SEG] The compost bin.") == (1, 1)
    assert run("The table is gray.") == (None, len(tokenizer.encode("The table is gray.", add_special_tokens=False)))


def test_an_image_key_guards_against_answering_on_another_frame(tiny):
    model, tokenizer = tiny
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=2)
    predictor.set_image(np.zeros((16, 16, 3), np.uint8), key=1001)
    assert predictor.image_key == 1001
    predictor.predict("segment the cup", image_key=1001)
    with pytest.raises(RuntimeError, match="1002"):
        predictor.predict("segment the cup", image_key=1002)
    predictor.set_image(np.zeros((16, 16, 3), np.uint8))
    assert predictor.image_key is None
    predictor.reset_image()
    assert predictor.image_key is None and not predictor.is_image_set


def test_a_given_sam_embedding_skips_the_encoder(demo):
    model, tokenizer, image, commands = demo
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=8)
    embedded = predictor.embed_image(image)
    sam = CallCounter(model.visual_model.image_encoder)
    predictor.set_image(image, key="frame", image_embedding=embedded)
    assert sam.calls == 0 and predictor.image_embedding is embedded
    reused = predictor.predict(commands[0])
    predictor.set_image(image)
    np.testing.assert_array_equal(predictor.predict(commands[0]).mask_logits, reused.mask_logits)
    with pytest.raises(ValueError, match="image_embedding"):
        predictor.set_image(image[:50], image_embedding=embedded)


def test_the_sam_encoder_beside_the_language_model_gives_the_same_answers(demo):
    model, tokenizer, image, commands = demo
    sequential = LisaPredictor(model, tokenizer, max_new_tokens=16, overlap_sam_encoder=False)
    overlapped = LisaPredictor(model, tokenizer, max_new_tokens=16, overlap_sam_encoder=True)
    for command in commands:
        sequential.set_image(image)
        overlapped.set_image(image)
        expected, result = sequential.predict(command), overlapped.predict(command)
        assert result.text == expected.text
        np.testing.assert_array_equal(result.mask_logits, expected.mask_logits)
    assert set(overlapped.image_timings) == {"clip", "sam_encoder"}  # the encoder's time arrives when done


def test_warm_up_runs_every_stage_and_leaves_no_image(demo):
    model, tokenizer, _, _ = demo
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=32)
    counters = {
        name: CallCounter(module)
        for name, module in [
            ("clip", model.vision_tower),
            ("sam_encoder", model.visual_model.image_encoder),
            ("llm", model.language_model.model),
            ("seg_head", model.text_hidden_fcs[0]),
            ("mask_decoder", model.visual_model.mask_decoder),
        ]
    }
    timings = predictor.warm_up(image_size=(48, 64))
    assert all(counter.calls >= 1 for counter in counters.values()), {k: c.calls for k, c in counters.items()}
    assert counters["llm"].calls >= 2  # prefill and at least one decode step
    assert not predictor.is_image_set
    assert {"image_clip", "image_sam_encoder", "prefill", "mask_decoder", "total"} <= set(timings)
