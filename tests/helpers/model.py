"""Tiny-model test pieces: the squares scenes, the lessons the trained fixture learns, its batch and training loop."""

import numpy as np
import torch

from lisa_model.losses import LossWeights
from lisa_model.processing.conversation import Turn, get_template, image_user_message
from lisa_model.processing.image import preprocess_clip, preprocess_sam
from lisa_model.processing.tokenization import IGNORE_INDEX, tokenize_conversation

# Commands the trained fixture learns, with their answers and which squares they mask.
LESSONS = [
    ("segment the red square", "It is [SEG].", ["red"]),
    ("segment the blue square", "Sure, [SEG].", ["blue"]),
    ("segment both squares", "[SEG] and [SEG].", ["red", "blue"]),
    ("what colour is the table?", "The table is gray.", []),
]


def squares_scene(red_at: tuple[int, int], blue_at: tuple[int, int], size: int = 64, side: int = 16):
    """A gray image with a red and a blue square; returns the image and the two masks."""
    image = np.full((size, size, 3), 128, dtype=np.uint8)
    masks = {}
    for name, (row, col), colour in (("red", red_at, (220, 30, 30)), ("blue", blue_at, (30, 30, 220))):
        mask = np.zeros((size, size), dtype=bool)
        mask[row : row + side, col : col + side] = True
        image[mask] = colour
        masks[name] = mask
    return image, masks


def synthetic_batch(model, tokenizer):
    """Two images, every lesson asked about each: the arguments of LisaModel.forward."""
    config = model.config
    scenes = [squares_scene((8, 8), (36, 36)), squares_scene((36, 12), (10, 40))]
    template = get_template(config.conversation_template)
    sam_pixels, clip_pixels, resized, originals = [], [], [], []
    ids, labels, image_index, gt_masks = [], [], [], []
    for index, (image, masks) in enumerate(scenes):
        pixels, size = preprocess_sam(image, config.sam_image_size)
        sam_pixels.append(pixels)
        clip_pixels.append(preprocess_clip(image, config.vision.image_size))
        resized.append(size)
        originals.append(image.shape[:2])
        for command, answer, targets in LESSONS:
            turn = Turn(image_user_message(command, config.mm_use_im_start_end), answer)
            conversation_ids, conversation_labels = tokenize_conversation(tokenizer, template, [turn])
            ids.append(conversation_ids)
            labels.append(conversation_labels)
            image_index.append(index)
            stacked = np.stack([masks[t] for t in targets]) if targets else np.zeros((0, 64, 64), bool)
            gt_masks.append(torch.from_numpy(stacked).float())
    length = max(len(row) for row in ids)
    pad = lambda rows, value: torch.tensor([row + [value] * (length - len(row)) for row in rows])  # noqa: E731
    return dict(
        sam_pixels=torch.stack(sam_pixels),
        clip_pixels=torch.stack(clip_pixels),
        input_ids=pad(ids, tokenizer.pad_token_id),
        attention_mask=pad([[1] * len(row) for row in ids], 0),
        labels=pad(labels, IGNORE_INDEX),
        image_index=torch.tensor(image_index),
        resized_sizes=resized,
        original_sizes=originals,
        gt_masks=gt_masks,
    ), scenes


def train(model, batch, steps: int, lr: float = 3e-3):
    """Plain AdamW on every parameter the forward pass reaches but LISA's frozen image
    encoders (CLIP, SAM's ViT); returns per-step losses."""
    for encoder in (model.vision_tower, model.visual_model.image_encoder):
        encoder.requires_grad_(False)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    history = []
    for _ in range(steps):
        loss = model(**batch, loss_weights=LossWeights()).loss
        optimizer.zero_grad()
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the paper's recipe
        optimizer.step()
        history.append({name: getattr(loss, name).item() for name in ("total", "ce", "bce", "dice")})
    model.eval()
    return history
