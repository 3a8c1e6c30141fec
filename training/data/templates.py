"""The paper's question and answer templates (LISA, appendix A.1) and the validation prompts.

The strings exclude the image placeholder: `image_user_message(question, ...)` from
lisa_model puts "<im_start><image><im_end>\\n" (or "<image>\\n") in front, the one
prompt path shared with inference. Answers use the literal "[SEG]" token (the
paper's <SEG>). `rng` is a `random.Random` (see sample.item_rng).
"""

from __future__ import annotations

import random

from lisa_model.processing.conversation import image_user_message

SHORT_QUESTIONS = [
    "Can you segment the {phrase} in this image?",
    "Please segment the {phrase} in this image.",
    "What is {phrase} in this image? Please respond with segmentation mask.",
    "What is {phrase} in this image? Please output segmentation mask.",
]

LONG_QUESTIONS = [
    "{sentence} Please respond with segmentation mask.",
    "{sentence} Please output segmentation mask.",
]

EXPLANATORY_QUESTIONS = [
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
]

ANSWERS = [
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
]

# Validation (reference protocol): one fixed prompt per query kind, answer teacher-forced.
VALIDATION_SHORT = "What is {phrase} in this image? Please output segmentation mask."
VALIDATION_LONG = "{sentence} Please output segmentation mask."
VALIDATION_ANSWER = "[SEG]."


def short_question(phrase: str, rng: random.Random) -> str:
    """A short-phrase question; the phrase is lower-cased, as the reference does for class names."""
    return rng.choice(SHORT_QUESTIONS).format(phrase=phrase.lower())


def long_question(sentence: str, rng: random.Random) -> str:
    """A long-sentence (reasoning) question."""
    return rng.choice(LONG_QUESTIONS).format(sentence=sentence)


def question(text: str, is_sentence: bool, rng: random.Random) -> str:
    """`long_question` for sentence queries, `short_question` for phrases."""
    return long_question(text, rng) if is_sentence else short_question(text, rng)


def explanatory_question(rng: random.Random) -> str:
    """The request for an explanation appended after a query."""
    return rng.choice(EXPLANATORY_QUESTIONS)


def seg_answer(rng: random.Random) -> str:
    """One of the answers containing a single [SEG]."""
    return rng.choice(ANSWERS)


def validation_question(text: str, is_sentence: bool) -> str:
    """The reference's validation prompt for a query (no randomness, phrase kept as given)."""
    return VALIDATION_LONG.format(sentence=text) if is_sentence else VALIDATION_SHORT.format(phrase=text)


def validation_user_message(text: str, is_sentence: bool, use_im_start_end: bool) -> str:
    """The first user turn of a validation conversation, as the reference writes it:
    the image placeholder, "\\n", a space, then `validation_question` (query stripped).

    The space only reaches the token ids without <im_start>/<im_end>: the released
    tokenisation drops whitespace next to <im_end> (see lisa_model.processing.tokenization).
    """
    return image_user_message(" " + validation_question(text.strip(), is_sentence), use_im_start_end)
