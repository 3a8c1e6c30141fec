"""Visual question answering data: LLaVA-Instruct-150k (paper §4.2), kept to preserve chat ability.

Layout: `llava_instruct_150k.json`, a list of
    {"id": ..., "image": "000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat ...?"},
                       {"from": "gpt", "value": "..."}, ...]}
with the images in COCO's train2017 directory.

Each record becomes one Sample with one multi-turn conversation and no masks
(a (0, H, W) stack). As LLaVA/LISA preprocess it: a leading "gpt" message is
dropped; "<image>" is removed from wherever it is in the message that has it
and the stripped text becomes the first user turn through
`image_user_message(text, use_im_start_end)` (so "<im_start><image><im_end>\\n"
comes first, the one prompt path of inference); messages must then alternate
human/gpt, and a trailing unanswered human message is dropped.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from lisa_model.processing.conversation import IMAGE_TOKEN, Turn, image_user_message

from .base import ItemDataset
from .coco_masks import read_rgb
from .sample import Sample

_ROLES = {"human": 0, "gpt": 1}


def llava_turns(messages: list[dict], use_im_start_end: bool) -> list[Turn]:
    """LLaVA `conversations` -> answered Turns (see module doc); ValueError if malformed."""
    messages = list(messages)
    if messages and messages[0].get("from") != "human":
        messages = messages[1:]
    if len(messages) % 2 == 1:
        messages = messages[:-1]
    if not messages:
        raise ValueError("no human/gpt exchange")
    turns = []
    for position in range(0, len(messages), 2):
        human, gpt = messages[position], messages[position + 1]
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            raise ValueError(f"messages do not alternate human/gpt at position {position}")
        question = str(human["value"]).replace(IMAGE_TOKEN, "").strip()
        if position == 0:
            question = image_user_message(question, use_im_start_end)
        elif IMAGE_TOKEN in str(human["value"]):
            raise ValueError("<image> may only appear in the first human message")
        turns.append(Turn(question, str(gpt["value"]).strip()))
    return turns


class LlavaInstructDataset(ItemDataset):
    """LLaVA-Instruct-150k conversations.

    Args:
        json_path (path): llava_instruct_150k.json.
        image_dir (path): directory holding the records' "image" files (COCO train2017).
        use_im_start_end (bool): image placeholder form (the model config's mm_use_im_start_end).
        seed (int): base seed (the samples are deterministic; kept for a uniform API).
    """

    def __init__(self, json_path, image_dir, use_im_start_end: bool = True, seed: int = 0):
        super().__init__(seed)
        self.image_dir = Path(image_dir)
        self.use_im_start_end = use_im_start_end
        with open(json_path, encoding="utf-8") as f:
            records = json.load(f)
        if not isinstance(records, list):
            raise ValueError(f"{json_path}: expected a list of records")
        # Only records with an image; the text-only ones of later LLaVA mixes do not fit a Sample.
        self.records = [r for r in records if r.get("image")]
        if not self.records:
            raise ValueError(f"{json_path}: no record with an image")

    def __len__(self) -> int:
        return len(self.records)

    def get(self, index: int, rng: random.Random) -> Sample:
        record = self.records[index]
        try:
            turns = llava_turns(record["conversations"], self.use_im_start_end)
        except ValueError as error:
            raise ValueError(f"LLaVA record {record.get('id')!r}: {error}") from None
        path = self.image_dir / record["image"]
        image = read_rgb(path)
        masks = [np.zeros((0, *image.shape[:2]), dtype=np.uint8)]
        meta = {"image_path": str(path), "id": record.get("id"), "index": index}
        return Sample(image=image, conversations=[turns], masks=masks, source="llava_instruct", meta=meta)


def build_vqa_dataset(data_root, **kwargs) -> LlavaInstructDataset:
    """LLaVA-Instruct-150k from the reference's layout under `data_root`."""
    root = Path(data_root)
    annotations = root / "llava_dataset" / "llava_instruct_150k.json"
    return LlavaInstructDataset(annotations, root / "coco" / "train2017", **kwargs)
