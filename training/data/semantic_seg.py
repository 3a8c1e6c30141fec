"""Semantic and part segmentation data (paper §4.2): ADE20K, COCO-Stuff, PACO-LVIS, PASCAL-Part (+ Mapillary).

Per image, up to `num_classes_per_sample` (3, as the reference) of the classes
present are drawn without replacement; each becomes one single-turn conversation
    USER: <image>\\n{short-phrase question about the class}  ASSISTANT: {answer with [SEG]}
(templates.short_question / templates.seg_answer) whose one mask is that class's
pixels: 1 on the class, 0 elsewhere, 255 where the dataset marks the pixel
unlabelled (ADE20K value 0, COCO-Stuff 255). PACO/PASCAL-Part have no
"unlabelled" notion, so their masks are 0/1. An image with no usable class is
replaced by the next image (index + 1, + 2, ... cyclically), deterministically.

Class names -> phrases (what the question says; lower-cased by short_question):
- ADE20K: class_names.ADE20K_CLASSES as they are.
- COCO-Stuff, `hyphenated="ignore"` (default, as the reference): classes whose
  official name has a hyphen ("wall-brick", "floor-other", "desk-stuff", ...) are
  sub-divisions of one thing, so "the wall" would be ambiguous; they are never
  asked about (their pixels are simply 0 in the other classes' masks). The one
  exception is "sky-other", the only sky class, asked about as "sky" (the
  reference's class list names it so). `hyphenated="rename"`: every class is
  used; the suffixes "-other", "-stuff" and "-merged" are dropped and remaining
  hyphens become spaces ("wall-other" -> "wall", "wall-brick" -> "wall brick").
- PACO-LVIS / PASCAL-Part category names are "object" or "object:part". Each
  side loses an LVIS disambiguation suffix "_(...)" ("bow_(weapon)" -> "bow"),
  underscores become spaces ("trash_can" -> "trash can") and PASCAL VOC's run-
  together names are split ("tvmonitor" -> "tv monitor"). A part is then asked
  about, with probability 1/2 each, as "{object} {part}" ("dog head") or as
  "{part} of the {object}" ("head of the dog"; the reference writes "the head of
  the dog", which after the templates' own "the" reads "the the head ...").
- Unlike the reference, which draws up to 3 *annotations* for PACO/PASCAL-Part
  (so "dog head" could mean one of two dogs' heads), we draw up to 3 *categories*
  and the mask is the union of all that category's annotations in the image.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lisa_model.processing.conversation import Turn, image_user_message

from .base import ItemDataset
from .class_names import ADE20K_CLASSES, COCO_STUFF_CLASSES
from .coco_masks import read_label_map, read_rgb, segmentation_mask
from .collate import CONVERSATION_META
from .sample import IGNORE_LABEL, Sample
from .templates import seg_answer, short_question

NUM_CLASSES_PER_SAMPLE = 3

# Suffixes that mark a "remainder" sub-class in COCO-Stuff / COCO panoptic names.
_STUFF_SUFFIXES = ("-other", "-stuff", "-merged")
# PASCAL VOC class names written as one word.
_VOC_NAMES = {"tvmonitor": "tv monitor", "pottedplant": "potted plant", "diningtable": "dining table"}


def clean_stuff_name(name: str) -> str:
    """"wall-other" -> "wall", "desk-stuff" -> "desk", "wall-brick" -> "wall brick"."""
    for suffix in _STUFF_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.replace("-", " ").strip()


def coco_stuff_phrases(hyphenated: str = "ignore") -> list[str | None]:
    """Phrase per COCO-Stuff label value 0..181; None = never asked about (see module doc)."""
    if hyphenated == "ignore":
        return [
            "sky" if name == "sky-other" else (None if "-" in name else name) for name in COCO_STUFF_CLASSES
        ]
    if hyphenated == "rename":
        return [clean_stuff_name(name) for name in COCO_STUFF_CLASSES]
    raise ValueError(f"hyphenated must be 'ignore' or 'rename', got {hyphenated!r}")


def clean_category_name(name: str) -> str:
    """An LVIS/PASCAL category word as plain text: "bow_(weapon)" -> "bow", "trash_can" -> "trash can"."""
    name = name.strip().split("_(")[0].replace("_", " ").strip()
    return _VOC_NAMES.get(name, name)


def split_part_name(name: str) -> tuple[str, str | None]:
    """"dog:head" -> ("dog", "head"); "dog" -> ("dog", None); names cleaned."""
    pieces = name.strip().split(":")
    if len(pieces) == 1:
        return clean_category_name(pieces[0]), None
    if len(pieces) != 2:
        raise ValueError(f"category name {name!r} is neither 'object' nor 'object:part'")
    return clean_category_name(pieces[0]), clean_category_name(pieces[1])


def part_phrase(name: str, rng: random.Random) -> str:
    """The phrase asked about a PACO/PASCAL-Part category (see module doc)."""
    obj, part = split_part_name(name)
    if part is None:
        return obj
    return f"{obj} {part}" if rng.random() < 0.5 else f"{part} of the {obj}"


def _class_sample(
    image: np.ndarray,
    phrases: list[str],
    masks: list[np.ndarray],
    class_ids: list[int],
    rng: random.Random,
    source: str,
    use_im_start_end: bool,
    meta: dict,
) -> Sample:
    conversations = [
        [Turn(image_user_message(short_question(phrase, rng), use_im_start_end), seg_answer(rng))] for phrase in phrases
    ]
    meta = dict(meta)
    meta["classes"] = list(phrases)
    meta["class_ids"] = list(class_ids)
    meta[CONVERSATION_META] = [{"class_name": p, "class_id": c} for p, c in zip(phrases, class_ids)]
    return Sample(image=image, conversations=conversations, masks=[m[None] for m in masks], source=source, meta=meta)


class LabelMapSegDataset(ItemDataset):
    """Images with a per-pixel class-index PNG (ADE20K, COCO-Stuff).

    Args:
        name (str): the source name put in Sample.source.
        images, labels (list of paths): paired image and label files.
        class_phrases (list[str | None]): phrase per class index; None = not asked about.
        label_offset (int): class index = raw label value - label_offset.
        unlabeled (int): raw label value meaning "unlabelled" (mask value 255); -1 for none.
        num_classes_per_sample (int): at most this many classes (conversations) per image.
        use_im_start_end (bool): image placeholder form, as the model config's
            mm_use_im_start_end (True for the released LISA models).
        seed (int): base seed of the per-item generators.
    """

    def __init__(
        self,
        name: str,
        images: Sequence,
        labels: Sequence,
        class_phrases: Sequence[str | None],
        label_offset: int,
        unlabeled: int,
        num_classes_per_sample: int = NUM_CLASSES_PER_SAMPLE,
        use_im_start_end: bool = True,
        seed: int = 0,
    ):
        super().__init__(seed)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} label maps")
        if not images:
            raise ValueError(f"{name}: no images found")
        if num_classes_per_sample < 1:
            raise ValueError("num_classes_per_sample must be >= 1")
        self.name = name
        self.images = [Path(p) for p in images]
        self.labels = [Path(p) for p in labels]
        self.class_phrases = list(class_phrases)
        self.label_offset = int(label_offset)
        self.unlabeled = int(unlabeled)
        self.num_classes_per_sample = int(num_classes_per_sample)
        self.use_im_start_end = use_im_start_end

    def __len__(self) -> int:
        return len(self.images)

    def class_map(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Class indices (H, W) int32 of image `index` and its unlabelled-pixel mask (H, W) bool."""
        raw = read_label_map(self.labels[index])
        classes = raw - self.label_offset
        unlabeled = (raw == self.unlabeled) | (classes < 0) | (classes >= len(self.class_phrases))
        return classes, unlabeled

    def get(self, index: int, rng: random.Random) -> Sample:
        for attempt in range(len(self)):
            current = (index + attempt) % len(self)
            classes, unlabeled = self.class_map(current)
            present = [int(c) for c in np.unique(classes[~unlabeled]) if self.class_phrases[int(c)] is not None]
            if present:
                break
        else:
            raise RuntimeError(f"{self.name}: no image has a class to ask about")
        chosen = rng.sample(present, min(self.num_classes_per_sample, len(present)))
        image = read_rgb(self.images[current])
        if image.shape[:2] != classes.shape:
            raise ValueError(f"{self.images[current]}: image {image.shape[:2]} and label map {classes.shape} differ")
        masks = []
        for class_id in chosen:
            mask = (classes == class_id).astype(np.uint8)
            mask[unlabeled] = IGNORE_LABEL
            masks.append(mask)
        meta = {"image_path": str(self.images[current]), "label_path": str(self.labels[current]), "index": current}
        phrases = [self.class_phrases[c] for c in chosen]
        return _class_sample(image, phrases, masks, chosen, rng, self.name, self.use_im_start_end, meta)


def _paired_files(image_dir: Path, label_dir: Path, image_ext: str, label_ext: str, by_labels: bool):
    anchor_dir, anchor_ext = (label_dir, label_ext) if by_labels else (image_dir, image_ext)
    stems = sorted(p.stem for p in anchor_dir.glob(f"*{anchor_ext}"))
    images = [image_dir / f"{stem}{image_ext}" for stem in stems]
    labels = [label_dir / f"{stem}{label_ext}" for stem in stems]
    missing = [p for p in (labels if not by_labels else images) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} files missing, e.g. {missing[0]}")
    return images, labels


class ADE20KDataset(LabelMapSegDataset):
    """ADE20K SceneParsing (ADEChallengeData2016).

    Layout: `root/images/{split}/*.jpg` with `root/annotations/{split}/*.png` of the
    same stem; label value 0 = other/unlabelled (-> 255), v = ADE20K_CLASSES[v - 1].
    """

    def __init__(self, root, split: str = "training", **kwargs):
        root = Path(root)
        images, labels = _paired_files(root / "images" / split, root / "annotations" / split, ".jpg", ".png", False)
        super().__init__("ade20k", images, labels, ADE20K_CLASSES, label_offset=1, unlabeled=0, **kwargs)


class CocoStuffDataset(LabelMapSegDataset):
    """COCO-Stuff 164k.

    Layout: label maps `label_dir/*.png` (stuffthingmaps_trainval2017/train2017:
    value v = COCO_STUFF_CLASSES[v], 255 = unlabelled) and the COCO images
    `image_dir/{stem}.jpg` (train2017). `hyphenated`: see the module doc.
    """

    def __init__(self, label_dir, image_dir, hyphenated: str = "ignore", **kwargs):
        images, labels = _paired_files(Path(image_dir), Path(label_dir), ".jpg", ".png", True)
        phrases = coco_stuff_phrases(hyphenated)
        super().__init__("cocostuff", images, labels, phrases, label_offset=0, unlabeled=255, **kwargs)


class MapillaryDataset(LabelMapSegDataset):
    """Mapillary Vistas v2.0 (optional; the reference's default mix includes it).

    Layout: `root/config_v2.0.json` ({"labels": [{"readable": "Bird", ...}, ...]},
    label value v = labels[v]), label maps `root/{split}/v2.0/labels/*.png` (palette
    indices) and images `root/{split}/images/{stem}.jpg`. Phrases are the
    "readable" names lower-cased, as the reference; the "Unlabeled" class is
    treated as unlabelled (255) instead of being asked about.
    """

    def __init__(self, root, split: str = "training", **kwargs):
        root = Path(root)
        with open(root / "config_v2.0.json", encoding="utf-8") as f:
            phrases = [str(label["readable"]).lower() for label in json.load(f)["labels"]]
        unlabeled = phrases.index("unlabeled") if "unlabeled" in phrases else -1
        if unlabeled >= 0:
            phrases[unlabeled] = None
        images, labels = _paired_files(root / split / "images", root / split / "v2.0" / "labels", ".jpg", ".png", True)
        super().__init__("mapillary", images, labels, phrases, label_offset=0, unlabeled=unlabeled, **kwargs)


class CocoPartSegDataset(ItemDataset):
    """Part segmentation from a COCO-format annotation file (PACO-LVIS, PASCAL-Part).

    Args:
        name (str): source name.
        annotation_file (path): COCO json with "images" ({id, file_name, height,
            width}), "annotations" ({image_id, category_id, segmentation}) and
            "categories" ({id, name} with "object" or "object:part" names).
        image_root (path): directory that `file_name` is relative to.
        num_classes_per_sample, use_im_start_end, seed: as LabelMapSegDataset.
    """

    def __init__(
        self,
        name: str,
        annotation_file,
        image_root,
        num_classes_per_sample: int = NUM_CLASSES_PER_SAMPLE,
        use_im_start_end: bool = True,
        seed: int = 0,
    ):
        super().__init__(seed)
        self.name = name
        self.image_root = Path(image_root)
        self.num_classes_per_sample = int(num_classes_per_sample)
        self.use_im_start_end = use_im_start_end
        with open(annotation_file, encoding="utf-8") as f:
            data = json.load(f)
        self.category_names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        by_image: dict[int, dict[int, list]] = {}
        for ann in data["annotations"]:
            if not ann.get("segmentation"):
                continue
            category = int(ann["category_id"])
            if category not in self.category_names:
                raise ValueError(f"{annotation_file}: annotation {ann.get('id')} has unknown category {category}")
            by_image.setdefault(int(ann["image_id"]), {}).setdefault(category, []).append(ann["segmentation"])
        # (image id, file_name, height, width, {category: [segmentations]}) per annotated image, by id.
        self.entries = [
            (int(img["id"]), str(img["file_name"]), int(img["height"]), int(img["width"]), by_image[int(img["id"])])
            for img in sorted(data["images"], key=lambda img: int(img["id"]))
            if int(img["id"]) in by_image
        ]
        if not self.entries:
            raise ValueError(f"{annotation_file}: no image has a segmentation annotation")

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, index: int, rng: random.Random) -> Sample:
        image_id, file_name, height, width, categories = self.entries[index]
        present = sorted(categories)
        chosen = rng.sample(present, min(self.num_classes_per_sample, len(present)))
        path = self.image_root / file_name
        image = read_rgb(path)
        if image.shape[:2] != (height, width):
            raise ValueError(f"{path}: image is {image.shape[:2]}, the annotation says {(height, width)}")
        masks = []
        for category in chosen:
            mask = np.zeros((height, width), dtype=np.uint8)
            for segmentation in categories[category]:
                mask |= segmentation_mask(segmentation, height, width)
            masks.append(mask)
        phrases = [part_phrase(self.category_names[c], rng) for c in chosen]
        meta = {"image_path": str(path), "image_id": image_id, "index": index}
        return _class_sample(image, phrases, masks, chosen, rng, self.name, self.use_im_start_end, meta)


class PacoLvisDataset(CocoPartSegDataset):
    """PACO-LVIS: `paco_lvis_v1_train.json`; `file_name`s ("train2017/....jpg") are relative to the COCO root."""

    def __init__(self, annotation_file, coco_root, **kwargs):
        super().__init__("paco_lvis", annotation_file, coco_root, **kwargs)


class PascalPartDataset(CocoPartSegDataset):
    """PASCAL-Part (VLPart's `pascal_part/train.json`); `file_name`s are relative to VOC2010's JPEGImages."""

    def __init__(self, annotation_file, image_root, **kwargs):
        super().__init__("pascal_part", annotation_file, image_root, **kwargs)


SEM_SEG_SOURCES = ("ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary")


def build_sem_seg_dataset(data_root, name: str, **kwargs) -> ItemDataset:
    """One semantic-segmentation source from the reference's directory layout under `data_root`
    (see docs/training_datasets.md)."""
    root = Path(data_root)
    if name == "ade20k":
        return ADE20KDataset(root / "ade20k", "training", **kwargs)
    if name == "cocostuff":
        return CocoStuffDataset(root / "cocostuff" / "train2017", root / "coco" / "train2017", **kwargs)
    if name == "paco_lvis":
        annotations = root / "vlpart" / "paco" / "annotations" / "paco_lvis_v1_train.json"
        return PacoLvisDataset(annotations, root / "coco", **kwargs)
    if name == "pascal_part":
        part = root / "vlpart" / "pascal_part"
        return PascalPartDataset(part / "train.json", part / "VOCdevkit" / "VOC2010" / "JPEGImages", **kwargs)
    if name == "mapillary":
        return MapillaryDataset(root / "mapillary", "training", **kwargs)
    raise ValueError(f"unknown semantic segmentation source {name!r}; choose from {SEM_SEG_SOURCES}")
