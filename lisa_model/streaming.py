"""An answer as it is generated: its text so far, streamed increments, early masks, short answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .processing.tokenization import decode_answer

# Tokens that may join one [SEG] to the next in a list of targets ("[SEG], [SEG] and [SEG]").
LIST_CONNECTORS = frozenset({"", ",", "and", "&"})


@dataclass
class EarlyMask:
    """The mask of one [SEG], published the moment the [SEG] is generated.

    index (int): which [SEG] of the answer it is (0 for the first).
    mask (ndarray bool [H,W]): the mask at the image size (mask = mask_logits > 0).
    mask_logits (ndarray float32 [H,W]): its logits.
    score (float): SAM's predicted IoU, a confidence.
    seg_embedding (Tensor [C]): the projected [SEG] embedding (the mask's SAM prompt).
    text (str): the answer so far, ending with this [SEG].
    seconds (float): time from the start of `predict` to this mask.

    The final Prediction's masks, logits, scores and embeddings are these, stacked.
    """

    index: int
    mask: np.ndarray
    mask_logits: np.ndarray
    score: float
    seg_embedding: torch.Tensor
    text: str
    seconds: float


class AnswerStream:
    """Follows an answer token by token.

    Short answers: generation stops at the first token after a [SEG] that neither is a
    [SEG] nor joins a list of them (LIST_CONNECTORS: ",", "and", "&", whitespace), and the
    answer is the text through the last [SEG]. So "Sure, [SEG]." ends after "[SEG]" (the
    "." is generated and dropped), "[SEG], [SEG] and [SEG]. The first..." after the third
    [SEG], and "[SEG] The mug has a handle..." after "[SEG]". A [SEG] beyond that point (in
    a later sentence, or after other words) is not generated. An answer without any [SEG]
    is kept whole: it says why there is no target.

    Arguments:
        tokenizer: the model's tokenizer.
        seg_token_id (int): the id of [SEG].
        short (bool): stop after the last [SEG] as above.
        on_text (callable(str) | None): gets the text as it grows, in increments whose
            concatenation is the final text (a short answer's text after its latest [SEG]
            is held back until another [SEG] confirms it).
    """

    def __init__(self, tokenizer, seg_token_id: int, short: bool, on_text: Callable[[str], None] | None = None):
        self.tokenizer = tokenizer
        self.seg_token_id = seg_token_id
        self.short = short
        self.on_text = on_text
        self.tokens: list[int] = []
        self._last_seg: int | None = None
        self._streamed = ""
        self._connectors: dict[int, bool] = {}

    def add(self, token: int) -> bool:
        """Take the next token; True when a short answer is complete (generation should stop)."""
        self.tokens.append(token)
        if token == self.seg_token_id:
            self._last_seg = len(self.tokens) - 1
            return False
        return self.short and self._last_seg is not None and not self._is_connector(token)

    def text(self) -> str:
        """The answer's text so far (through the last [SEG] once a short answer has one)."""
        return decode_answer(self.tokenizer, self._kept())

    def emit(self) -> None:
        """Stream the text added since the last call to on_text."""
        if self.on_text is None:
            return
        text = self.text().rstrip("\ufffd")  # a character whose bytes have not all arrived yet
        if len(text) > len(self._streamed) and text.startswith(self._streamed):
            increment, self._streamed = text[len(self._streamed):], text
            self.on_text(increment)

    def finish(self) -> str:
        """The final text; streams whatever of it has not been streamed yet."""
        text = self.text()
        if self.on_text is not None and len(text) > len(self._streamed) and text.startswith(self._streamed):
            self.on_text(text[len(self._streamed):])
            self._streamed = text
        return text

    def _kept(self) -> list[int]:
        if self.short and self._last_seg is not None:
            return self.tokens[: self._last_seg + 1]
        return self.tokens

    def _is_connector(self, token: int) -> bool:
        if token not in self._connectors:
            self._connectors[token] = self.tokenizer.decode([token]).strip().lower() in LIST_CONNECTORS
        return self._connectors[token]
