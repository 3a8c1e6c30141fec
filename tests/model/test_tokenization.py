"""Prompt templates and tokenisation reproducing the released models' ids."""

import json

import pytest
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from lisa_model.processing.conversation import Conversation, Turn, get_template, render_prompt, user_text
from lisa_model.processing.tokenization import IGNORE_INDEX, IMAGE_TOKEN_INDEX, tokenize_conversation, tokenize_prompt
from lisa_model.tokenizer import build_tiny_tokenizer, seg_token_id

LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_llava_v1_prompt_strings():
    conversation = Conversation("llava_v1")
    assert conversation.prompt_for("Where is the cup?", True) == (
        LLAVA_V1_SYSTEM + f" USER: <im_start><image><im_end>\n{user_text('Where is the cup?')} ASSISTANT:"
    )
    conversation.append("Where is the cup?", "It is [SEG].", True)
    assert conversation.prompt_for("And the lid?", True) == (
        LLAVA_V1_SYSTEM
        + f" USER: <im_start><image><im_end>\n{user_text('Where is the cup?')} ASSISTANT: It is [SEG].</s>"
        + f"USER: {user_text('And the lid?')} ASSISTANT:"
    )
    expected = LLAVA_V1_SYSTEM + f" USER: <image>\n{user_text('x')} ASSISTANT:"
    assert Conversation("llava_v1").prompt_for("x", False) == expected


CUP = user_text("Where is the cup?")  # commands are fenced as plain user text


def test_llava_llama_2_prompt_strings():
    conversation = Conversation("llava_llama_2")
    assert conversation.prompt_for("Where is the cup?", True) == (
        f"[INST] <<SYS>>\n{LLAMA_2_SYSTEM}\n<</SYS>>\n\n<im_start><image><im_end>\n{CUP} [/INST]"
    )
    conversation.append("Where is the cup?", "It is [SEG].", True)
    assert conversation.prompt_for("And the lid?", True) == (
        f"[INST] <<SYS>>\n{LLAMA_2_SYSTEM}\n<</SYS>>\n\n<im_start><image><im_end>\n{CUP} [/INST]"
        f" It is [SEG]. </s><s>[INST] {user_text('And the lid?')} [/INST]"
    )


def test_template_errors():
    with pytest.raises(ValueError, match="llava_v1"):
        get_template("vicuna")
    with pytest.raises(ValueError, match="at least one"):
        render_prompt(get_template("llava_v1"), [])
    with pytest.raises(ValueError, match="only the last"):
        render_prompt(get_template("llava_v1"), [Turn("a"), Turn("b", "c")])


def test_whitespace_around_added_tokens_is_dropped(tokenizer):
    pieces = lambda text: tokenizer.convert_ids_to_tokens(tokenize_prompt(tokenizer, text))  # noqa: E731
    # The text after [SEG] is its own segment, with its own leading-space marker.
    assert pieces("it is [SEG].") == ["<s>", "▁it", "▁is", "[SEG]", "▁."]
    assert pieces("it is[SEG] .") == pieces("it is [SEG].")
    # The newline after <im_end> produces no token; <image> becomes the placeholder id.
    ids = tokenize_prompt(tokenizer, "USER: <im_start><image><im_end>\nWhat?")
    assert tokenizer.convert_ids_to_tokens([i for i in ids if i >= 0]) == [
        "<s>", "▁USER:", "<im_start>", "<im_end>", "▁What", "?"
    ]
    assert ids.count(IMAGE_TOKEN_INDEX) == 1 and ids[3] == IMAGE_TOKEN_INDEX
    # Special tokens split the text but keep the whitespace around them.
    assert pieces("a </s>b") == ["<s>", "▁a", "▁", "</s>", "▁b"]


def test_labels_cover_exactly_the_answers(tokenizer):
    for name in ("llava_v1", "llava_llama_2"):
        turns = [
            Turn("<im_start><image><im_end>\nsegment the red square", "It is [SEG]."),
            Turn("and the blue one?", "Sure, [SEG]."),
        ]
        ids, labels = tokenize_conversation(tokenizer, get_template(name), turns)
        assert len(ids) == len(labels)
        answer_tokens = [t for t in labels if t != IGNORE_INDEX]
        expected = []
        for answer in ("It is [SEG].", "Sure, [SEG]."):
            closing = " </s>" if name == "llava_llama_2" else "</s>"
            expected += tokenize_prompt(tokenizer, answer + closing)[1:]
        assert answer_tokens == expected
        assert tokenizer.decode(answer_tokens).count("[SEG]") == 2
        # Everything before the first answer is ignored.
        first = labels.index(next(t for t in labels if t != IGNORE_INDEX))
        assert all(t == IGNORE_INDEX for t in labels[:first])


def test_seg_must_be_one_token(tokenizer):
    assert seg_token_id(tokenizer) == tokenizer.convert_tokens_to_ids("[SEG]")
    # The same tokenizer without the added [SEG]: "[SEG]" falls apart into pieces.
    layout = json.loads(tokenizer.backend_tokenizer.to_str())
    layout["added_tokens"] = [token for token in layout["added_tokens"] if token["content"] != "[SEG]"]
    splitting = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(layout)))
    with pytest.raises(ValueError, match="single added token"):
        seg_token_id(splitting)


def test_tiny_tokenizer_layout(tokenizer):
    assert [tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id] == [0, 1, 2]
    assert tokenizer.pad_token_id == 0
    added = tokenizer.convert_tokens_to_ids(["<im_patch>", "<im_start>", "<im_end>", "[SEG]"])
    assert added == list(range(len(tokenizer) - 4, len(tokenizer)))
