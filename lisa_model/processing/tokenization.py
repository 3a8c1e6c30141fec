"""Prompt tokenisation that reproduces the ids the released LISA models were trained with,
and answer decoding that reproduces the text the reference prints.

The released models saw prompts tokenised by transformers 4.31's slow LlamaTokenizer
(see the facts file): text is split at added tokens, whitespace on both sides of
LISA's added tokens ([SEG], <im_start>, <im_end>, <im_patch>) is dropped, and each
piece of text in between is encoded on its own, so each gets SentencePiece's leading
space marker. Special tokens (<s>, </s>, <unk>) split the text too but keep the
whitespace around them. Newer tokenizers encode the whole string at once and keep
that whitespace, which changes the ids; so we split ourselves and only ever ask the
tokenizer to encode plain text.

User text (a command) is fenced by `conversation.user_text`: inside the fence nothing
is a control token, so a typed "[SEG]", "</s>" or "<image>" is tokenised as the
characters it is made of. Only the template produces control ids.

Inference and training both go through `tokenize_prompt`.
"""

import codecs
import re

from .conversation import (
    IM_END_TOKEN,
    IM_START_TOKEN,
    IMAGE_TOKEN,
    USER_TEXT_CLOSE,
    USER_TEXT_OPEN,
    ConversationTemplate,
    Turn,
    render_prompt,
)

SEG_TOKEN = "[SEG]"
IM_PATCH_TOKEN = "<im_patch>"
# Stands for the image in token id lists until the model splices in the image features.
IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100

LISA_ADDED_TOKENS = (IM_PATCH_TOKEN, IM_START_TOKEN, IM_END_TOKEN, SEG_TOKEN)

# A fence holds no fence characters, so a stray one (say, in a generated answer) opens nothing.
_FENCED = re.compile(f"{USER_TEXT_OPEN}([^{USER_TEXT_OPEN}{USER_TEXT_CLOSE}]*){USER_TEXT_CLOSE}")
_NO_FENCE = str.maketrans("", "", USER_TEXT_OPEN + USER_TEXT_CLOSE)
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")

# SentencePiece decodes an invalid UTF-8 byte run into one U+FFFD per invalid byte and
# keeps the valid characters in it; Python's "replace" would merge a truncated sequence
# into one U+FFFD, and the tokenizers library replaces the whole run byte by byte.
codecs.register_error("lisa_sentencepiece", lambda error: ("\ufffd", error.start + 1))


def _split_at_controls(text: str, controls: list[str]) -> list[str]:
    """[text, control, text, control, ..., text]: `text` cut at the control tokens that
    lie outside user-text fences; the fences themselves are removed."""
    pattern = re.compile("(" + "|".join(re.escape(token) for token in sorted(controls, key=len, reverse=True)) + ")")
    pieces = [""]
    for index, part in enumerate(_FENCED.split(text)):
        cut = [part] if index % 2 == 1 else pattern.split(part)  # odd parts are fenced user text
        pieces[-1] += cut[0]
        pieces.extend(cut[1:])
    return [piece if index % 2 else piece.translate(_NO_FENCE) for index, piece in enumerate(pieces)]


def _encode_plain(tokenizer, text: str) -> list[int]:
    """Ids of `text` as plain text: the tokenizer's normaliser, pre-tokeniser and model
    without its added-token matching, so "[SEG]" or "</s>" in `text` stay characters.

    For text without added tokens this is what `tokenizer.encode(text,
    add_special_tokens=False)` gives.
    """
    backend = tokenizer.backend_tokenizer
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    words = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer is not None else [(text, None)]
    ids = [token.id for word, _ in words for token in backend.model.tokenize(word)]
    # <unk> stands for unknown characters; any other control id would come from the
    # tokenizer's own vocabulary merging characters into it: refuse rather than inject it.
    injected = (set(tokenizer.added_tokens_decoder) - {tokenizer.unk_token_id}).intersection(ids)
    if injected:
        raise ValueError(f"the tokenizer encodes the plain text {text!r} with control tokens {sorted(injected)}")
    return ids


def tokenize_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of `prompt`: BOS, then the text with each `<image>` replaced by
    IMAGE_TOKEN_INDEX (-200).

    Text on either side of `<image>` and of the added and special tokens is tokenised
    separately, as the reference does; text fenced by `conversation.user_text` is plain
    text throughout.
    """
    added = tokenizer.get_added_vocab()
    stripped = [token for token in LISA_ADDED_TOKENS if token in added]
    kept = [token for token in {*added, *tokenizer.all_special_tokens} if token not in stripped]
    pieces = _split_at_controls(prompt, [IMAGE_TOKEN, *stripped, *kept])
    ids = [tokenizer.bos_token_id]
    for index, piece in enumerate(pieces):
        if index % 2 == 1:  # a control token
            ids.append(IMAGE_TOKEN_INDEX if piece == IMAGE_TOKEN else tokenizer.convert_tokens_to_ids(piece))
            continue
        if index > 0 and pieces[index - 1] in stripped:
            piece = piece.lstrip()
        if index + 1 < len(pieces) and pieces[index + 1] in stripped:
            piece = piece.rstrip()
        if piece:
            ids.extend(_encode_plain(tokenizer, piece))
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


def _decode_pieces(tokenizer, ids: list[int]) -> str:
    """Text of ids from the base vocabulary, as SentencePiece decodes them (byte-fallback
    runs included; see `lisa_sentencepiece` above)."""
    tokens = tokenizer.convert_ids_to_tokens(ids)
    backend = tokenizer.backend_tokenizer
    if getattr(backend.model, "byte_fallback", False):
        merged: list[str] = []
        run = bytearray()
        for token in [*tokens, ""]:  # "" flushes the last byte run
            byte = _BYTE_PIECE.fullmatch(token)
            if byte:
                run.append(int(byte.group(1), 16))
                continue
            if run:
                merged.append(run.decode("utf-8", errors="lisa_sentencepiece"))
                run.clear()
            merged.append(token)
        tokens = merged[:-1]
    return backend.decoder.decode(tokens) if backend.decoder is not None else "".join(tokens)


def decode_answer(tokenizer, ids: list[int]) -> str:
    """The text of generated answer ids, as the reference decodes it.

    transformers 4.31's slow LlamaTokenizer (which the reference runs) drops the special
    tokens (<s>, </s>, <unk>, padding), decodes each run of ordinary pieces with
    SentencePiece (each run loses its leading space marker) and joins those runs and
    the added tokens ([SEG], <im_end>, ...) with single spaces: "Sure, [SEG] and [SEG] ."
    where transformers 5 gives "Sure,[SEG] and[SEG] .". Invalid UTF-8 in byte-fallback
    pieces becomes one U+FFFD per invalid byte, as SentencePiece decodes it.

    Arguments:
        tokenizer: the model's tokenizer.
        ids (list[int]): generated token ids.

    Returns:
        str: the answer, stripped of surrounding whitespace.
    """
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id}
    added = tokenizer.added_tokens_decoder
    texts: list[str] = []
    run: list[int] = []
    for token_id in ids:
        if token_id in special:
            continue
        if token_id in added:
            if run:
                texts.append(_decode_pieces(tokenizer, run))
                run = []
            texts.append(added[token_id].content)
        else:
            run.append(token_id)
    if run:
        texts.append(_decode_pieces(tokenizer, run))
    return " ".join(texts).strip()
