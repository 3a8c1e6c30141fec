"""The one record every training/evaluation dataset yields.

A `Sample` is one image with one or more conversations about it. Each conversation
is a list of `Turn`s (lisa_model.processing.conversation); its first user turn starts
with the image placeholder, built by
`image_user_message(question, use_im_start_end)`. Each conversation has a mask
stack with one mask per `[SEG]` in its answers, in order of appearance.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from lisa_model.processing.conversation import Turn
from lisa_model.processing.tokenization import SEG_TOKEN

# Mask value for pixels that count neither for nor against a prediction.
IGNORE_LABEL = 255


@dataclass
class Sample:
    """One image and the conversations about it.

    Attributes:
        image: uint8 array (H, W, 3), RGB.
        conversations: list of conversations, each a list[Turn] with every turn answered.
        masks: per conversation a uint8 array (n_i, H, W) with 0/1 and 255 = ignore,
            one mask per [SEG] in that conversation's answers, in order (n_i may be 0).
        source: dataset name, e.g. "reason_seg", "ade20k", "refcoco", "llava_instruct".
        meta: details of the image, e.g. image_name, split, portion
            ("scannet"/"openimages"). Optional key "conversation_meta": a list with
            one dict per conversation; by convention it carries "query" (the raw
            expression, sentence or class name asked about) and "is_sentence"
            (bool). collate merges it into its per-conversation `meta`, and the
            evaluator rebuilds the validation prompt from query/is_sentence.
    """

    image: np.ndarray
    conversations: list[list[Turn]]
    masks: list[np.ndarray]
    source: str
    meta: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError if shapes, dtypes or [SEG] counts are inconsistent."""
        image = self.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be uint8 HxWx3, got {getattr(self.image, 'shape', None)}")
        if len(self.masks) != len(self.conversations):
            raise ValueError(f"{len(self.conversations)} conversations but {len(self.masks)} mask stacks")
        height, width = self.image.shape[:2]
        for index, (turns, masks) in enumerate(zip(self.conversations, self.masks)):
            if not turns or any(turn.assistant is None for turn in turns):
                raise ValueError(f"conversation {index} has an unanswered turn")
            if masks.dtype != np.uint8 or masks.ndim != 3 or masks.shape[1:] != (height, width):
                raise ValueError(
                    f"conversation {index}: masks must be uint8 (n, {height}, {width}), got {masks.dtype} {masks.shape}"
                )
            segs = sum(turn.assistant.count(SEG_TOKEN) for turn in turns)
            if segs != masks.shape[0]:
                raise ValueError(f"conversation {index} has {segs} [SEG] but {masks.shape[0]} masks")


def item_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The random generator of one item in one epoch.

    Depends only on (seed, epoch, index), so a resumed run or another worker/rank
    draws the same questions and answers for the same item. (Python's hash of a
    tuple of ints is deterministic across processes, unlike string hashing.)
    """
    return random.Random(hash((int(seed), int(epoch), int(index))))
