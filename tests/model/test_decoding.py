"""Static-cache and compiled decoding give the eager path's tokens and [SEG] embeddings."""

import functools

import numpy as np
import pytest
import torch

from lisa_model import DEMO_MODEL_DIR, LisaPredictor, load_lisa
from lisa_model.decoding import TokenDecoder
from training.data.demo_scenes import DemoScenesDataset


@pytest.fixture
def quick_compile(monkeypatch):
    """torch.compile with the aot_eager backend: dynamo traces the step (static cache and all)
    into a graph as with the default backend, without inductor's minute of C++ code generation
    on this CPU. (The default backend was checked by hand: same tokens, hidden states within 1e-6.)"""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def generate_steps(model, decoder, embeds, tokens=24):
    """Token ids and every step's final hidden state, prompt after prompt on one cache."""
    states, ids = [], []
    cache = None
    for prompt in embeds:
        out = model.generate(prompt, tokens, cache=cache, decoder=decoder,
                             on_token=lambda token, hidden: states.append(hidden.clone()) and False)
        ids.append(out.token_ids)
        cache = out.cache
    return ids, torch.stack(states)


@pytest.mark.parametrize("mode", ["static", "compiled"])
def test_static_and_compiled_steps_match_eager_on_the_tiny_model(tiny, mode, quick_compile):
    model, _ = tiny
    generator = torch.Generator().manual_seed(0)
    embeds = [torch.randn(1, 40, model.config.hidden_size, generator=generator) for _ in range(2)]
    with torch.no_grad():
        expected_ids, expected = generate_steps(model, TokenDecoder(model.language_model, "eager"), embeds)
        decoder = TokenDecoder(model.language_model, mode)
        ids, states = generate_steps(model, decoder, embeds)
    assert decoder.mode_in_use == mode
    assert ids == expected_ids and len(ids[0]) == 24
    torch.testing.assert_close(states, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["static", "compiled"])
def test_predictor_modes_give_the_same_answers_and_seg_embeddings(mode, quick_compile):
    model, tokenizer = load_lisa(DEMO_MODEL_DIR)
    dataset = DemoScenesDataset("test", num_scenes=1, frames_per_scene=2, phrasing="heldout", seed=0)
    image = dataset.frame(0).rgb
    eager = LisaPredictor(model, tokenizer, max_new_tokens=24)
    other = LisaPredictor(model, tokenizer, max_new_tokens=24, decode_mode=mode)
    for predictor in (eager, other):
        predictor.set_image(image)
    # Several commands on one predictor: the cache is cropped to each shared prefix and reused.
    for command in [c.text for c in dataset.visible_commands(0)[:3]]:
        expected, result = eager.predict(command), other.predict(command)
        assert result.text == expected.text and "[SEG]" in result.text
        torch.testing.assert_close(result.seg_embeddings, expected.seg_embeddings, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(result.masks, expected.masks)
    assert other.decoder.mode_in_use == mode


def test_compile_unavailable_falls_back_to_eager_steps_with_a_warning(tiny, monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeError("no dynamo here")

    monkeypatch.setattr(torch, "compile", unavailable)
    model, _ = tiny
    with pytest.warns(RuntimeWarning, match="no dynamo here"):
        decoder = TokenDecoder(model.language_model, "compiled")
    assert decoder.mode_in_use == "static"
    embeds = [torch.randn(1, 30, model.config.hidden_size)]
    with torch.no_grad():
        assert generate_steps(model, decoder, embeds, 6)[0] == generate_steps(
            model, TokenDecoder(model.language_model, "eager"), embeds, 6)[0]


def test_a_compile_failure_at_the_first_step_falls_back_to_eager_steps(tiny, monkeypatch):
    def fails_when_called(function, **kwargs):
        def compiled(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", fails_when_called)
    model, _ = tiny
    decoder = TokenDecoder(model.language_model, "compiled")
    embeds = [torch.randn(1, 30, model.config.hidden_size)]
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="decoding eagerly"):
        ids, states = generate_steps(model, decoder, embeds, 6)
        expected_ids, expected = generate_steps(model, TokenDecoder(model.language_model, "eager"), embeds, 6)
    assert decoder.mode_in_use == "static"
    assert ids == expected_ids
    torch.testing.assert_close(states, expected, rtol=1e-5, atol=1e-5)


def test_unknown_decode_modes_are_refused(tiny):
    with pytest.raises(ValueError, match="decode mode"):
        LisaPredictor(*tiny, decode_mode="fast")
