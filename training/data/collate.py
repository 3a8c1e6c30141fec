"""Batching `Sample`s into LisaModel.forward's keyword arguments.

One prompt/tokenisation path: conversations are rendered with the model's
conversation template and tokenised by lisa_model's `tokenize_conversation`; images
go through lisa_model's `preprocess_sam` / `preprocess_clip`, exactly as inference.

Ignore pixels (255): the training losses (BCE + Dice) have no ignore mechanism, so
the mask targets passed as `gt_masks` are `(mask == 1)` as float, the reference's
training rule; 255 therefore counts as background in the loss and never as a
positive. Evaluation must exclude 255, so the raw uint8 masks travel in
`meta[i]["target"]` for the metrics.
"""

from __future__ import annotations

from functools import partial

import torch

from lisa_model.config import LisaConfig
from lisa_model.processing.conversation import get_template
from lisa_model.processing.image import preprocess_clip, preprocess_sam
from lisa_model.processing.tokenization import IGNORE_INDEX, tokenize_conversation

from .sample import Sample

# Key of Sample.meta holding an optional list with one dict per conversation.
CONVERSATION_META = "conversation_meta"


def conversation_meta(sample: Sample, sample_index: int) -> list[dict]:
    """One dict per conversation: the sample's meta (minus the per-conversation list)
    merged with that conversation's own dict, plus source/sample/conversation indices."""
    shared = {key: value for key, value in sample.meta.items() if key != CONVERSATION_META}
    per_conversation = sample.meta.get(CONVERSATION_META) or [{}] * len(sample.conversations)
    if len(per_conversation) != len(sample.conversations):
        raise ValueError(
            f"{CONVERSATION_META} has {len(per_conversation)} entries for {len(sample.conversations)} conversations"
        )
    return [
        {**shared, **own, "source": sample.source, "sample_index": sample_index, "conversation_index": index}
        for index, own in enumerate(per_conversation)
    ]


def collate(samples: list[Sample], tokenizer, config: LisaConfig) -> dict:
    """Batch samples: images I = len(samples), conversations B = sum of their conversations.

    Returns a dict with LisaModel.forward's keyword arguments
        sam_pixels   float32 [I, 3, S, S]      (S = config.sam_image_size)
        clip_pixels  float32 [I, 3, s, s]      (s = config.vision.image_size)
        input_ids    int64 [B, L], right-padded with tokenizer.pad_token_id,
                     one IMAGE_TOKEN_INDEX (-200) per row
        attention_mask int64 [B, L], 1 on tokens, 0 on padding
        image_index  int64 [B], which image each conversation is about
        resized_sizes, original_sizes: per image (h, w) after SAM's resize / original
        labels       int64 [B, L], IGNORE_INDEX (-100) except the assistant answers
        gt_masks     per conversation float32 [n_i, H, W] = (mask == 1)
    plus `meta`: per conversation a dict (see `conversation_meta`) with "target", the
    raw uint8 [n_i, H, W] masks (0/1/255) for evaluation.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    template = get_template(config.conversation_template)
    sam_pixels, clip_pixels, resized_sizes, original_sizes = [], [], [], []
    ids, labels, image_index, gt_masks, meta = [], [], [], [], []
    for sample_index, sample in enumerate(samples):
        sample.validate()
        pixels, resized = preprocess_sam(sample.image, config.sam_image_size)
        sam_pixels.append(pixels)
        clip_pixels.append(preprocess_clip(sample.image, config.vision.image_size))
        resized_sizes.append(resized)
        original_sizes.append(tuple(sample.image.shape[:2]))
        for turns, masks, info in zip(sample.conversations, sample.masks, conversation_meta(sample, sample_index)):
            row_ids, row_labels = tokenize_conversation(tokenizer, template, turns)
            ids.append(row_ids)
            labels.append(row_labels)
            image_index.append(sample_index)
            gt_masks.append(torch.from_numpy(masks == 1).float())
            meta.append({**info, "target": masks})
    length = max(len(row) for row in ids)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        return torch.tensor([row + [value] * (length - len(row)) for row in rows], dtype=torch.long)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
    return dict(
        sam_pixels=torch.stack(sam_pixels),
        clip_pixels=torch.stack(clip_pixels),
        input_ids=pad(ids, pad_id),
        attention_mask=pad([[1] * len(row) for row in ids], 0),
        image_index=torch.tensor(image_index, dtype=torch.long),
        resized_sizes=resized_sizes,
        original_sizes=original_sizes,
        labels=pad(labels, IGNORE_INDEX),
        gt_masks=gt_masks,
        meta=meta,
    )


def collate_fn(tokenizer, config: LisaConfig):
    """`collate` bound to a tokenizer and config, for torch DataLoader's collate_fn."""
    return partial(collate, tokenizer=tokenizer, config=config)


def forward_kwargs(batch: dict) -> dict:
    """The batch without `meta`, i.e. only LisaModel.forward's arguments."""
    return {key: value for key, value in batch.items() if key != "meta"}


def to_device(batch: dict, device: torch.device) -> dict:
    """LisaModel.forward's arguments of a collated batch (see `forward_kwargs`), on `device`:
    the tensors and each of the `gt_masks` moved there, other values as they are."""
    moved = {}
    for key, value in forward_kwargs(batch).items():
        if torch.is_tensor(value):
            moved[key] = value.to(device, non_blocking=True)
        elif key == "gt_masks":
            moved[key] = [mask.to(device, non_blocking=True) for mask in value]
        else:
            moved[key] = value
    return moved
