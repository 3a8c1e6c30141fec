"""Checks shared by the data loaders' tests: labels decode to the answers, commands, a tiny collate setup."""

from lisa_model.processing.tokenization import IGNORE_INDEX


def answer_spans(labels) -> list[list[int]]:
    """The runs of label ids that are not IGNORE_INDEX (one per assistant answer)."""
    spans, current = [], []
    for label in list(labels):
        label = int(label)
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return spans


def assert_labels_are_answers(batch: dict, samples: list, tokenizer) -> None:
    """Each conversation's unmasked label tokens decode to its answers + "</s>", turn by turn.

    Compared without whitespace: LLaMA-style tokenisation drops the space before
    [SEG] (see lisa_model.processing.tokenization), which decoding cannot restore.
    """
    answers = [[turn.assistant for turn in turns] for sample in samples for turns in sample.conversations]
    assert len(answers) == batch["labels"].shape[0]
    for row, expected in zip(batch["labels"], answers):
        spans = answer_spans(row)
        decoded = [tokenizer.decode(span).replace(" ", "") for span in spans]
        assert decoded == [(answer + "</s>").replace(" ", "") for answer in expected], (decoded, expected)


def command_of(first_user_turn: str, use_im_start_end: bool = True) -> str:
    """The command of a first user turn, checking it starts with the image placeholder."""
    from lisa_model.processing.conversation import image_user_message

    prefix = image_user_message("", use_im_start_end)
    assert first_user_turn.startswith(prefix), first_user_turn
    return first_user_turn[len(prefix) :]


def tiny_collate_setup():
    """The tiny tokenizer and a tiny model config for collate()."""
    from lisa_model.config import tiny_config
    from lisa_model.tokenizer import build_tiny_tokenizer, seg_token_id

    tokenizer = build_tiny_tokenizer()
    return tokenizer, tiny_config(len(tokenizer), seg_token_id(tokenizer))
