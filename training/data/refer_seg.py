"""Referring segmentation data: refCOCO, refCOCO+, refCOCOg and refCLEF (paper §4.2).

Our own reader of the standard REFER layout (see docs/training_datasets.md):
    refer_seg/{dataset}/refs({split_by}).p   pickled list of refs, each a dict
        {ref_id, ann_id, image_id, split, sentences: [{sent, raw, tokens, sent_id}],
         category_id, file_name, sent_ids}
    refer_seg/{dataset}/instances.json       COCO-style images/annotations/categories
    refer_seg/images/mscoco/images/train2014/ (refCOCO family) or
    refer_seg/images/saiapr_tc-12/            (refCLEF) holding each image's file_name.

The pickle is untrusted input: it is read with `RestrictedUnpickler`, which builds
only plain data (dict, list, tuple, str, int, float, bool, None) and refuses any
global (os.system, builtins.eval, ...), so loading it cannot run code.

Training (`train=True`, the default for split "train"): one Sample per image that
has refs in the split; up to `num_sentences_per_sample` (3, as the reference) of
the image's referring expressions are drawn without replacement, each one
single-turn conversation with a short-phrase question
(templates.short_question, which lower-cases) and a [SEG] answer
(templates.seg_answer); its mask is the referred annotation (polygons or RLE).
Validation (`train=False`): one Sample per image with every expression of the
split, each with the reference's validation prompt
(templates.validation_question(sentence, is_sentence=False)) and the
teacher-forced answer "[SEG].", in ref order then sentence order.
"""

from __future__ import annotations

import builtins
import json
import pickle
import random
from pathlib import Path

from lisa_model.processing.conversation import Turn, image_user_message

from .base import ItemDataset
from .coco_masks import read_rgb, segmentation_mask
from .collate import CONVERSATION_META
from .sample import Sample
from .templates import VALIDATION_ANSWER, seg_answer, short_question, validation_question

NUM_SENTENCES_PER_SAMPLE = 3
REFER_SEG_SOURCES = ("refclef", "refcoco", "refcoco+", "refcocog")
# The usual split of each dataset: refs(unc).p, refs(umd).p.
DEFAULT_SPLIT_BY = {"refclef": "unc", "refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for untrusted files that only builds plain data.

    dict, list, tuple, str, int, float, bool and None are built by pickle opcodes
    without any lookup; the only globals allowed are those same builtin types
    (some writers reference them by name). Everything else, e.g. `os.system`,
    `posix.system`, `builtins.eval`, `builtins.set` or any class, raises
    pickle.UnpicklingError before it is resolved, so nothing can be called or
    imported. Persistent ids are refused too.
    """

    _ALLOWED = frozenset({"dict", "list", "tuple", "str", "int", "float", "bool"})

    def find_class(self, module: str, name: str):
        # "__builtin__" is how Python 2 pickles name the builtins module.
        if module in ("builtins", "__builtin__") and name in self._ALLOWED:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from an untrusted pickle")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id in an untrusted pickle")


def load_refs(path) -> list[dict]:
    """The refs of a `refs(*).p` file, read with RestrictedUnpickler and checked.

    Python 2 byte strings are decoded as UTF-8 (bad bytes replaced). Raises
    pickle.UnpicklingError for forbidden content and ValueError when the result is
    not a list of refs with image_id, ann_id, split and sentences.
    """
    with open(path, "rb") as f:
        refs = RestrictedUnpickler(f, encoding="utf-8", errors="replace").load()
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    for ref in refs:
        if not isinstance(ref, dict) or not {"image_id", "ann_id", "split", "sentences"} <= ref.keys():
            raise ValueError(f"{path}: a ref lacks image_id/ann_id/split/sentences: {str(ref)[:200]}")
        if not isinstance(ref["sentences"], list) or not all(
            isinstance(s, dict) and isinstance(s.get("sent"), str) for s in ref["sentences"]
        ):
            raise ValueError(f"{path}: ref {ref.get('ref_id')} has malformed sentences")
    return refs


class ReferSegDataset(ItemDataset):
    """One referring-segmentation dataset split.

    Args:
        root (path): the `refer_seg` directory (holding `{dataset}/` and `images/`).
        dataset (str): "refcoco", "refcoco+", "refcocog" or "refclef".
        split (str): the refs' split: "train", "val", "testA", "testB", "test", ...
        split_by (str | None): the refs file `refs({split_by}).p`; default unc
            (umd for refcocog).
        image_dir (path | None): where images' file_names live; default
            `root/images/mscoco/images/train2014` or `root/images/saiapr_tc-12` (refclef).
        train (bool | None): training sampling (True) or validation (False);
            default: split == "train".
        num_sentences_per_sample (int): training draws at most this many expressions per image.
        use_im_start_end (bool): image placeholder form (the model config's mm_use_im_start_end).
        seed (int): base seed of the per-item generators.
    """

    def __init__(
        self,
        root,
        dataset: str = "refcoco",
        split: str = "train",
        split_by: str | None = None,
        image_dir=None,
        train: bool | None = None,
        num_sentences_per_sample: int = NUM_SENTENCES_PER_SAMPLE,
        use_im_start_end: bool = True,
        seed: int = 0,
    ):
        super().__init__(seed)
        if dataset not in REFER_SEG_SOURCES:
            raise ValueError(f"unknown referring dataset {dataset!r}; choose from {REFER_SEG_SOURCES}")
        root = Path(root)
        self.dataset = dataset
        self.split = split
        self.train = (split == "train") if train is None else bool(train)
        self.num_sentences_per_sample = int(num_sentences_per_sample)
        self.use_im_start_end = use_im_start_end
        split_by = split_by or DEFAULT_SPLIT_BY[dataset]
        if image_dir is None:
            image_dir = root / "images" / ("saiapr_tc-12" if dataset == "refclef" else "mscoco/images/train2014")
        self.image_dir = Path(image_dir)

        refs = load_refs(root / dataset / f"refs({split_by}).p")
        split_refs = sorted((r for r in refs if r["split"] == split), key=lambda r: (r.get("ref_id", 0), r["ann_id"]))
        if not split_refs:
            available = sorted({str(r["split"]) for r in refs})
            raise ValueError(f"{dataset} refs({split_by}).p has no split {split!r}; it has {available}")
        with open(root / dataset / "instances.json", encoding="utf-8") as f:
            instances = json.load(f)
        wanted = {r["ann_id"] for r in split_refs}
        self.annotations = {a["id"]: a["segmentation"] for a in instances["annotations"] if a["id"] in wanted}
        images = {
            img["id"]: (str(img["file_name"]), int(img["height"]), int(img["width"])) for img in instances["images"]
        }
        by_image: dict[int, list[tuple[str, int, int]]] = {}
        for ref in split_refs:
            if ref["ann_id"] not in self.annotations or ref["image_id"] not in images:
                raise ValueError(f"{dataset}: ref {ref.get('ref_id')} points to a missing annotation or image")
            for sentence in ref["sentences"]:
                entry = (sentence["sent"].strip(), ref["ann_id"], ref.get("ref_id"))
                by_image.setdefault(ref["image_id"], []).append(entry)
        # (image id, file_name, height, width, [(sentence, ann_id, ref_id), ...]) by image id.
        self.entries = [(image_id, *images[image_id], by_image[image_id]) for image_id in sorted(by_image)]

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, index: int, rng: random.Random) -> Sample:
        image_id, file_name, height, width, expressions = self.entries[index]
        if self.train:
            chosen = rng.sample(expressions, min(self.num_sentences_per_sample, len(expressions)))
            qa = [(short_question(sentence, rng), seg_answer(rng)) for sentence, _, _ in chosen]
        else:
            chosen = list(expressions)
            qa = [(validation_question(sentence, is_sentence=False), VALIDATION_ANSWER) for sentence, _, _ in chosen]
        path = self.image_dir / file_name
        image = read_rgb(path)
        if image.shape[:2] != (height, width):
            raise ValueError(f"{path}: image is {image.shape[:2]}, instances.json says {(height, width)}")
        conversations = [[Turn(image_user_message(q, self.use_im_start_end), a)] for q, a in qa]
        masks = [segmentation_mask(self.annotations[ann_id], height, width)[None] for _, ann_id, _ in chosen]
        meta = {
            "image_path": str(path),
            "image_id": image_id,
            "dataset": self.dataset,
            "split": self.split,
            "sentences": [sentence for sentence, _, _ in chosen],
            "is_sentence": False,
            CONVERSATION_META: [
                {"sentence": sentence, "ann_id": ann_id, "ref_id": ref_id} for sentence, ann_id, ref_id in chosen
            ],
        }
        return Sample(image=image, conversations=conversations, masks=masks, source=self.dataset, meta=meta)


def build_refer_seg_dataset(data_root, name: str, split: str = "train", **kwargs) -> ReferSegDataset:
    """One referring source from the reference's layout: `data_root/refer_seg/...`."""
    return ReferSegDataset(Path(data_root) / "refer_seg", name, split, **kwargs)


__all__ = [
    "DEFAULT_SPLIT_BY",
    "REFER_SEG_SOURCES",
    "ReferSegDataset",
    "RestrictedUnpickler",
    "build_refer_seg_dataset",
    "load_refs",
]
