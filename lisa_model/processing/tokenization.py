"""Prompt tokenisation that reproduces the ids the released LISA models were trained with.

The released models saw prompts tokenised by transformers 4.31's slow LlamaTokenizer
(see the facts file): text is split at added tokens, whitespace on both sides of
LISA's added tokens ([SEG], <im_start>, <im_end>, <im_patch>) is dropped, and each
piece of text in between is encoded on its own, so each gets SentencePiece's leading
space marker. Special tokens (<s>, </s>, <unk>) split the text too but keep the
whitespace around them. Newer tokenizers encode the whole string at once and keep
that whitespace, which changes the ids; so we split ourselves and only ever ask the
tokenizer to encode plain text.

Inference and training both go through `tokenize_prompt`.
"""

import re

from .conversation import IM_END_TOKEN, IM_START_TOKEN, IMAGE_TOKEN, ConversationTemplate, Turn, render_prompt

SEG_TOKEN = "[SEG]"
IM_PATCH_TOKEN = "<im_patch>"
# Stands for the image in token id lists until the model splices in the image features.
IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100

LISA_ADDED_TOKENS = (IM_PATCH_TOKEN, IM_START_TOKEN, IM_END_TOKEN, SEG_TOKEN)


def _encode_text(tokenizer, text: str) -> list[int]:
    stripped = [token for token in LISA_ADDED_TOKENS if token in tokenizer.get_added_vocab()]
    kept = [token for token in tokenizer.all_special_tokens if token not in stripped]
    pattern = "|".join(re.escape(token) for token in sorted(stripped + kept, key=len, reverse=True))
    pieces = re.split(f"({pattern})", text) if pattern else [text]
    ids: list[int] = []
    for index, piece in enumerate(pieces):
        if index % 2 == 1:  # an added or special token
            ids.append(tokenizer.convert_tokens_to_ids(piece))
            continue
        if index > 0 and pieces[index - 1] in stripped:
            piece = piece.lstrip()
        if index + 1 < len(pieces) and pieces[index + 1] in stripped:
            piece = piece.rstrip()
        if piece:
            ids.extend(tokenizer.encode(piece, add_special_tokens=False))
    return ids


def tokenize_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of `prompt`: BOS, then the text with each `<image>` replaced by
    IMAGE_TOKEN_INDEX (-200).

    Text on either side of `<image>` is tokenised separately, as the reference does.
    """
    ids = [tokenizer.bos_token_id]
    for index, chunk in enumerate(prompt.split(IMAGE_TOKEN)):
        if index > 0:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(_encode_text(tokenizer, chunk))
    return ids


def tokenize_conversation(
    tokenizer, template: ConversationTemplate, turns: list[Turn]
) -> tuple[list[int], list[int]]:
    """Token ids and training labels of a fully answered conversation.

    Labels are IGNORE_INDEX (-100) everywhere except each assistant answer and its
    closing "</s>", the only tokens the language-model loss is computed on.
    """
    if not turns or any(turn.assistant is None for turn in turns):
        raise ValueError("every turn of a training conversation needs an answer")
    input_ids = tokenize_prompt(tokenizer, render_prompt(template, turns))
    labels = [IGNORE_INDEX] * len(input_ids)
    for index, turn in enumerate(turns):
        question = tokenize_prompt(tokenizer, render_prompt(template, turns[:index] + [Turn(turn.user)]))
        answered = tokenize_prompt(tokenizer, render_prompt(template, turns[: index + 1]))
        if input_ids[: len(answered)] != answered or answered[: len(question)] != question:
            # Labels are located by prefix lengths; that needs prefix-stable tokenisation.
            raise ValueError(f"turn {index} does not tokenise as a prefix of the conversation")
        labels[len(question) : len(answered)] = answered[len(question) :]
    return input_ids, labels
