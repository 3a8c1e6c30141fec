"""Answer decoding (issue 14, item 13): the text the reference prints, spacing and bytes.

The reference decodes with transformers 4.31's slow LlamaTokenizer: special tokens
dropped, each run of ordinary pieces decoded by SentencePiece, runs and added tokens
joined with spaces. The runs are checked against the sentencepiece library itself.
"""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from lisa_model import LisaPredictor
from lisa_model.modeling.lisa import GenerationOutput
from lisa_model.processing.tokenization import decode_answer
from lisa_model.tokenizer import build_tiny_tokenizer
from tests.helpers.released_layout import write_tokenizer


@pytest.fixture(scope="module")
def sentencepiece_tokenizer(tmp_path_factory):
    """A released-layout tokenizer (LLaMA-like SentencePiece, byte fallback) as transformers
    5 loads it, and the sentencepiece processor of the same model file."""
    import sentencepiece

    directory = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(directory)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    return AutoTokenizer.from_pretrained(directory), processor


def pieces(tokenizer, text):
    """Ids of `text` encoded on its own, as the reference encodes the text between added tokens."""
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("which", ["tiny", "sentencepiece"])
def test_added_tokens_are_joined_with_spaces(which, sentencepiece_tokenizer):
    tokenizer = build_tiny_tokenizer() if which == "tiny" else sentencepiece_tokenizer[0]
    seg = tokenizer.convert_tokens_to_ids("[SEG]")
    # What the released models generate: the text after [SEG] is a new segment ("▁.").
    ids = pieces(tokenizer, "Sure,") + [seg] + pieces(tokenizer, "and") + [seg] + pieces(tokenizer, ".")
    ids.append(tokenizer.eos_token_id)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Sure,[SEG] and[SEG] ."  # transformers 5
    assert decode_answer(tokenizer, ids) == "Sure, [SEG] and [SEG] ."  # the reference


def test_im_end_and_neighbouring_added_tokens(sentencepiece_tokenizer):
    tokenizer, _ = sentencepiece_tokenizer
    seg, im_end = tokenizer.convert_tokens_to_ids(["[SEG]", "<im_end>"])
    assert decode_answer(tokenizer, [seg, seg]) == "[SEG] [SEG]"
    assert decode_answer(tokenizer, pieces(tokenizer, "It is") + [seg, im_end] + pieces(tokenizer, ".")) == (
        "It is [SEG] <im_end> ."
    )
    # Special tokens (<s>, <unk>, </s>) are dropped and do not split a run of pieces.
    bos, unk, eos = tokenizer.bos_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id
    assert decode_answer(tokenizer, [bos] + pieces(tokenizer, "It") + [unk] + pieces(tokenizer, "is") + [eos]) == (
        "It is"
    )
    assert decode_answer(tokenizer, [eos]) == decode_answer(tokenizer, []) == ""


BYTE_RUNS = [
    ["<0xC3>", "<0xA9>"],  # "é"
    ["<0xC3>", "<0xA9>", "<0x80>"],  # "é" and a stray continuation byte
    ["<0xE2>", "<0x82>"],  # a truncated 3-byte sequence: one U+FFFD per byte
    ["<0xED>", "<0xA0>", "<0x80>"],  # an encoded surrogate
    ["<0xF0>", "<0x9F>", "<0x98>"],  # a truncated emoji
    ["<0xC0>", "<0x80>"],  # an overlong encoding
]


@pytest.mark.parametrize("run", BYTE_RUNS)
def test_byte_fallback_runs_decode_as_sentencepiece_does(sentencepiece_tokenizer, run):
    tokenizer, processor = sentencepiece_tokenizer
    text = pieces(tokenizer, "It is")
    ids = text + tokenizer.convert_tokens_to_ids(run) + pieces(tokenizer, ".")
    assert decode_answer(tokenizer, ids) == processor.decode(ids)
    seg = tokenizer.convert_tokens_to_ids("[SEG]")
    byte_ids = tokenizer.convert_tokens_to_ids(run)
    expected = f"{processor.decode(text)} [SEG] {processor.decode(byte_ids)}"
    assert decode_answer(tokenizer, text + [seg] + byte_ids) == expected


def test_invalid_bytes_keep_the_valid_characters(sentencepiece_tokenizer):
    tokenizer, _ = sentencepiece_tokenizer
    ids = tokenizer.convert_tokens_to_ids(["<0xC3>", "<0xA9>", "<0xE2>", "<0x82>"])
    assert tokenizer.decode(ids) == "\ufffd" * 4  # transformers 5 replaces the whole run
    assert decode_answer(tokenizer, ids) == "é\ufffd\ufffd"


def test_the_predictor_answers_with_the_reference_text(tiny):
    model, tokenizer = tiny
    seg = tokenizer.convert_tokens_to_ids("[SEG]")
    generated = pieces(tokenizer, "Sure,") + [seg] + pieces(tokenizer, ".") + [tokenizer.eos_token_id]

    def generate(embeds, max_new_tokens, cache=None, decoder=None, on_token=None):
        hidden = torch.zeros(model.config.hidden_size)
        for token in generated:  # as the model does: each token to the predictor the moment it is chosen
            if on_token is not None and on_token(token, hidden):
                break
        states = torch.zeros(1, model.config.hidden_size)
        return GenerationOutput(token_ids=generated, seg_hidden_states=states, cache=None, timings={})

    predictor = LisaPredictor(model, tokenizer)
    predictor.set_image(np.zeros((20, 30, 3), np.uint8))
    model.generate = generate  # an instance attribute: the shared fixture's class is untouched
    try:
        assert predictor.predict("segment the cup").text == "Sure, [SEG] ."
    finally:
        del model.generate
