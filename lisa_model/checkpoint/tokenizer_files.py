"""The tokenizer files of the released layout, readable by the reference tooling."""

from __future__ import annotations

import json
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.model",
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "tokenizer.json",
)


def save_released_tokenizer(tokenizer, directory: str | Path) -> bool:
    """Write the tokenizer as the released checkpoints hold it, for transformers 4.31's
    slow LlamaTokenizer (the reference tooling) as well as for us.

    That layout is the SentencePiece `tokenizer.model` the tokenizer was loaded from,
    `added_tokens.json` (the ids after the base vocabulary, which must be consecutive),
    `special_tokens_map.json` and a `tokenizer_config.json` naming LlamaTokenizer.
    transformers 5's own save_pretrained writes none of these but tokenizer_config.json,
    naming a class 4.31 lacks. A tokenizer without a SentencePiece file (the built-in
    tiny one) is written by save_pretrained instead; returns False then.
    """
    directory = Path(directory)
    model_file = getattr(tokenizer, "vocab_file", None)
    sentencepiece_model = None
    if model_file and str(model_file).endswith(".model") and Path(model_file).is_file():
        sentencepiece_model = Path(model_file).read_bytes()  # before a save in place removes it
    for name in TOKENIZER_FILES:  # an earlier save's files would shadow the new ones
        (directory / name).unlink(missing_ok=True)
    if sentencepiece_model is None:
        tokenizer.save_pretrained(directory)
        return False
    import sentencepiece

    base = sentencepiece.SentencePieceProcessor(model_proto=sentencepiece_model).get_piece_size()
    added = {token: index for token, index in tokenizer.get_added_vocab().items() if index >= base}
    if sorted(added.values()) != list(range(base, base + len(added))):
        raise ValueError(f"added token ids {added} do not follow the {base} SentencePiece pieces consecutively")
    (directory / "tokenizer.model").write_bytes(sentencepiece_model)

    def write(name: str, value: dict) -> None:
        (directory / name).write_text(json.dumps(value, indent=2) + "\n")

    def special(token: str) -> dict:
        flags = dict(lstrip=False, normalized=True, rstrip=False, single_word=False)
        return {"__type": "AddedToken", "content": token, **flags}

    write("added_tokens.json", dict(sorted(added.items(), key=lambda item: item[1])))
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    write("special_tokens_map.json", {name: getattr(tokenizer, name) for name in names if getattr(tokenizer, name)})
    max_length = tokenizer.model_max_length
    write(
        "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": special(tokenizer.bos_token),
            "eos_token": special(tokenizer.eos_token),
            "unk_token": special(tokenizer.unk_token),
            "pad_token": None,  # special_tokens_map.json sets it (to <unk>)
            "clean_up_tokenization_spaces": False,
            "model_max_length": max_length if max_length < 1e9 else 512,
            "padding_side": tokenizer.padding_side,
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
        },
    )
    return True
