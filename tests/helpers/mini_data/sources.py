"""Miniature ADE20K, COCO-Stuff, PACO-LVIS, PASCAL-Part, refCOCO-family and LLaVA-Instruct
datasets, written in the real on-disk layouts under one data root (the reference's
`dataset/` tree, see docs/training_datasets.md), with the expected masks.

Label maps are drawn from rectangles, so every expected mask is known exactly.
COCO polygons are axis-aligned rectangles [x0, y0, x1, y0, x1, y1, x0, y1] with
integer corners, which pycocotools fills as the half-open box [x0, x1) x [y0, y1).
RLE annotations are encoded here, independently of pycocotools: uncompressed
(column-major run lengths starting with zeros, COCO's iscrowd form) and compressed
(COCO's string form, `_rle_string`).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

# ---------------------------------------------------------------- helpers


def _write_jpg(path: Path, height: int, width: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def _write_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), mode="L").save(path)


def _box(height: int, width: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _rect_polygon(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts: runs over the column-major pixels, starting with zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return [int(c) for c in counts]


def _rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string (maskApi.c rleToString): deltas vs. the count two back,
    5 bits per character plus a continuation bit, offset by 48."""
    chars = []
    for index, count in enumerate(counts):
        value = count - counts[index - 2] if index > 2 else count
        more = True
        while more:
            char = value & 0x1F
            value >>= 5
            more = value != -1 if char & 0x10 else value != 0
            if more:
                char |= 0x20
            chars.append(chr(char + 48))
    return "".join(chars)


# ---------------------------------------------------------------- semantic segmentation


def make_ade20k(data_root: Path) -> dict:
    """`ade20k/images/training/*.jpg` + `ade20k/annotations/training/*.png` (0 = other).

    Returns {stem: {phrase: expected uint8 mask with 255 on "other"}}; the third image
    is all "other".
    """
    root = Path(data_root) / "ade20k"
    height, width = 20, 24
    expected = {}
    # image 1: wall (1) top, sky (3) / person (13) middle, car (21) / other (0) bottom
    label = np.zeros((height, width), dtype=np.uint8)
    label[0:10, :] = 1
    label[10:15, 0:12] = 3
    label[10:15, 12:24] = 13
    label[15:20, 0:12] = 21
    label2 = np.zeros((height, width), dtype=np.uint8)
    label2[4:12, 6:18] = 5  # tree
    label3 = np.zeros((height, width), dtype=np.uint8)
    names = {1: "wall", 3: "sky", 13: "person", 21: "car", 5: "tree"}
    for number, lab in enumerate((label, label2, label3), start=1):
        stem = f"ADE_train_{number:08d}"
        _write_jpg(root / "images" / "training" / f"{stem}.jpg", height, width, number)
        _write_png(root / "annotations" / "training" / f"{stem}.png", lab)
        masks = {}
        for value in np.unique(lab):
            if value == 0:
                continue
            mask = (lab == value).astype(np.uint8)
            mask[lab == 0] = 255
            masks[names[int(value)]] = mask
        expected[stem] = masks
    return expected


def make_cocostuff(data_root: Path) -> dict:
    """`cocostuff/train2017/*.png` (stuffthingmaps, 255 unlabelled) + `coco/train2017/*.jpg`.

    Returns {stem: {label value: mask}} (the raw class masks) and the unlabelled mask per stem
    under the key "unlabeled".
    """
    height, width = 16, 20
    label = np.full((height, width), 255, dtype=np.uint8)
    label[0:4, :] = 156  # sky-other
    label[4:8, 0:10] = 170  # wall-brick
    label[4:8, 10:20] = 172  # wall-other
    label[8:12, 0:10] = 0  # person
    label[12:16, :] = 123  # grass
    label2 = np.full((height, width), 144, dtype=np.uint8)  # playingfield
    label2[2:10, 3:9] = 17  # dog
    expected = {}
    for number, lab in ((9, label), (25, label2)):
        stem = f"{number:012d}"
        _write_jpg(Path(data_root) / "coco" / "train2017" / f"{stem}.jpg", height, width, 100 + number)
        _write_png(Path(data_root) / "cocostuff" / "train2017" / f"{stem}.png", lab)
        expected[stem] = {int(v): (lab == v).astype(np.uint8) for v in np.unique(lab) if v != 255}
        expected[stem]["unlabeled"] = lab == 255
    return expected


def make_paco_lvis(data_root: Path) -> dict:
    """`vlpart/paco/annotations/paco_lvis_v1_train.json` with images in `coco/train2017`.

    Image 139 has four categories (dog; dog:head twice, unioned; trash_can:lid as a
    compressed RLE; mug:handle), image 285 one (bow_(weapon)), image 632 none.
    Returns {image_id: {category name: expected mask}}.
    """
    root = Path(data_root)
    height, width = 18, 22
    categories = [
        {"id": 1, "name": "dog"},
        {"id": 2, "name": "dog:head"},
        {"id": 3, "name": "trash_can:lid"},
        {"id": 4, "name": "mug:handle"},
        {"id": 5, "name": "bow_(weapon)"},
    ]
    lid = _box(height, width, 15, 1, 21, 4)
    annotations = [
        {"id": 1, "image_id": 139, "category_id": 1, "segmentation": [_rect_polygon(0, 0, 10, 10)], "iscrowd": 0},
        {"id": 2, "image_id": 139, "category_id": 2, "segmentation": [_rect_polygon(1, 1, 4, 4)], "iscrowd": 0},
        {"id": 3, "image_id": 139, "category_id": 2, "segmentation": [_rect_polygon(12, 10, 16, 14)], "iscrowd": 0},
        {"id": 4, "image_id": 139, "category_id": 3, "iscrowd": 0,
         "segmentation": {"size": [height, width], "counts": _rle_string(rle_counts(lid))}},
        {"id": 5, "image_id": 139, "category_id": 4, "segmentation": [_rect_polygon(5, 12, 9, 18)], "iscrowd": 0},
        {"id": 6, "image_id": 285, "category_id": 5, "segmentation": [_rect_polygon(2, 3, 20, 6)], "iscrowd": 0},
    ]
    images = []
    for image_id in (139, 285, 632):
        name = f"train2017/{image_id:012d}.jpg"
        _write_jpg(root / "coco" / name, height, width, image_id)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    path = root / "vlpart" / "paco" / "annotations" / "paco_lvis_v1_train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return {
        139: {
            "dog": _box(height, width, 0, 0, 10, 10),
            "dog:head": _box(height, width, 1, 1, 4, 4) | _box(height, width, 12, 10, 16, 14),
            "trash_can:lid": lid,
            "mug:handle": _box(height, width, 5, 12, 9, 18),
        },
        285: {"bow_(weapon)": _box(height, width, 2, 3, 20, 6)},
    }


def make_pascal_part(data_root: Path) -> dict:
    """`vlpart/pascal_part/train.json` + `vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages/*.jpg`.

    Returns {image_id: {category name: expected mask}}.
    """
    root = Path(data_root) / "vlpart" / "pascal_part"
    height, width = 14, 16
    categories = [{"id": 1, "name": "person:head"}, {"id": 2, "name": "tvmonitor:screen"}, {"id": 3, "name": "dog:leg"}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [_rect_polygon(0, 0, 5, 5)], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [_rect_polygon(8, 2, 15, 9)], "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 3, "iscrowd": 0,
         "segmentation": [_rect_polygon(3, 3, 6, 13), _rect_polygon(9, 3, 12, 13)]},
    ]
    images = []
    for image_id, name in ((1, "2008_000002.jpg"), (2, "2008_000003.jpg")):
        _write_jpg(root / "VOCdevkit" / "VOC2010" / "JPEGImages" / name, height, width, 200 + image_id)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    root.mkdir(parents=True, exist_ok=True)
    instances = {"images": images, "annotations": annotations, "categories": categories}
    (root / "train.json").write_text(json.dumps(instances))
    return {
        1: {"person:head": _box(height, width, 0, 0, 5, 5), "tvmonitor:screen": _box(height, width, 8, 2, 15, 9)},
        2: {"dog:leg": _box(height, width, 3, 3, 6, 13) | _box(height, width, 9, 3, 12, 13)},
    }


MAPILLARY_LABELS = [
    {"name": "animal--bird", "readable": "Bird", "color": [165, 42, 42]},
    {"name": "construction--barrier--curb", "readable": "Curb", "color": [196, 196, 196]},
    {"name": "marking--discrete--crosswalk-zebra", "readable": "Lane Marking - Crosswalk", "color": [200, 128, 128]},
    {"name": "unlabeled", "readable": "Unlabeled", "color": [0, 0, 0]},
]


def make_mapillary(data_root: Path) -> dict:
    """`mapillary/config_v2.0.json` + `mapillary/training/v2.0/labels/*.png` (palette PNG of
    label indices) + `mapillary/training/images/*.jpg`. Returns {stem: {phrase: mask}}."""
    root = Path(data_root) / "mapillary"
    height, width = 12, 16
    label = np.full((height, width), 3, dtype=np.uint8)  # unlabeled
    label[0:6, 0:8] = 0
    label[6:12, :] = 2
    (root / "training" / "v2.0" / "labels").mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label, mode="P")
    image.putpalette([c for entry in MAPILLARY_LABELS for c in entry["color"]])
    image.save(root / "training" / "v2.0" / "labels" / "_1a2b3c.png")
    _write_jpg(root / "training" / "images" / "_1a2b3c.jpg", height, width, 500)
    (root / "config_v2.0.json").write_text(json.dumps({"labels": MAPILLARY_LABELS, "version": "2.0"}))
    masks = {}
    for value, phrase in ((0, "bird"), (2, "lane marking - crosswalk")):
        mask = (label == value).astype(np.uint8)
        mask[label == 3] = 255
        masks[phrase] = mask
    return {"_1a2b3c": masks}


# ---------------------------------------------------------------- referring segmentation


def _sentences(texts: list[str], first_id: int) -> list[dict]:
    return [
        {"tokens": text.split(), "raw": text.capitalize(), "sent_id": first_id + i, "sent": text}
        for i, text in enumerate(texts)
    ]


def make_refer_seg(data_root: Path, dataset: str = "refcoco") -> dict:
    """`refer_seg/{dataset}/refs(unc|umd).p` (pickle of plain dicts) + `instances.json`,
    images in `refer_seg/images/mscoco/images/train2014` (or `saiapr_tc-12` for refclef).

    Train images 9 and 25, val image 30 (refcocog: splits train/val via umd). Image 9 has
    five expressions over three annotations: a polygon, two polygons, and an RLE
    (uncompressed counts; refclef: a list with one compressed-string RLE).
    Returns {"masks": {ann_id: mask}, "sentences": {split: {image_id: [(sentence, ann_id)]}},
    "files": {image_id: path}}.
    """
    root = Path(data_root) / "refer_seg"
    height, width = 15, 17
    refclef = dataset == "refclef"
    split_by = "umd" if dataset == "refcocog" else "unc"
    masks = {
        101: _box(height, width, 0, 0, 6, 10),
        102: _box(height, width, 8, 0, 12, 4) | _box(height, width, 13, 6, 16, 9),
        103: _box(height, width, 2, 11, 15, 14),
        104: _box(height, width, 4, 4, 9, 9),
        105: _box(height, width, 10, 10, 17, 15),
    }
    segmentation = {
        101: [_rect_polygon(0, 0, 6, 10)],
        102: [_rect_polygon(8, 0, 12, 4), _rect_polygon(13, 6, 16, 9)],
        103: (
            [{"size": [height, width], "counts": _rle_string(rle_counts(masks[103]))}]
            if refclef
            else {"size": [height, width], "counts": rle_counts(masks[103])}
        ),
        104: [_rect_polygon(4, 4, 9, 9)],
        105: [_rect_polygon(10, 10, 17, 15)],
    }
    image_of = {101: 9, 102: 9, 103: 9, 104: 25, 105: 30}
    refs_spec = [
        (0, 101, "train", ["the man on the left", "left guy"]),
        (1, 102, "train", ["red car"]),
        (2, 103, "train", ["crowd in back", "people behind"]),
        (3, 104, "train", ["white dog"]),
        (4, 105, "val", ["blue chair", "chair near window"]),
    ]
    files = {}
    images = []
    for image_id in (9, 25, 30):
        if refclef:
            name = f"{image_id:02d}/images/{image_id + 25000}.jpg"
            path = root / "images" / "saiapr_tc-12" / name
        else:
            name = f"COCO_train2014_{image_id:012d}.jpg"
            path = root / "images" / "mscoco" / "images" / "train2014" / name
        _write_jpg(path, height, width, 300 + image_id)
        files[image_id] = path
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    annotations = [
        {"id": ann_id, "image_id": image_of[ann_id], "category_id": 1, "segmentation": segmentation[ann_id],
         "iscrowd": int(ann_id == 103), "area": int(masks[ann_id].sum()), "bbox": [0, 0, 1, 1]}
        for ann_id in masks
    ]
    refs, sentences, sent_id = [], {}, 0
    for ref_id, ann_id, split, texts in refs_spec:
        image_id = image_of[ann_id]
        refs.append({
            "ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "category_id": 1,
            "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
            "sentences": _sentences(texts, sent_id), "sent_ids": list(range(sent_id, sent_id + len(texts))),
        })
        sent_id += len(texts)
        sentences.setdefault(split, {}).setdefault(image_id, []).extend((t, ann_id) for t in texts)
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)  # protocol 2 as the original Python 2 files
    (folder / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]})
    )
    return {"masks": masks, "sentences": sentences, "files": files}


# ---------------------------------------------------------------- VQA


LLAVA_RECORDS = [
    {
        "id": "000000000009",
        "image": "000000000009.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is the man doing?"},
            {"from": "gpt", "value": "He is riding a horse along the beach."},
            {"from": "human", "value": "What color is the horse?"},
            {"from": "gpt", "value": "The horse is brown."},
        ],
    },
    {
        "id": "000000000025",
        "image": "000000000025.jpg",
        "conversations": [
            {"from": "human", "value": "What animal is in the picture?\n<image>"},
            {"from": "gpt", "value": "A dog playing on a field."},
        ],
    },
]


def make_llava_instruct(data_root: Path) -> list[dict]:
    """`llava_dataset/llava_instruct_150k.json` with images in `coco/train2017`."""
    root = Path(data_root)
    for number, record in enumerate(LLAVA_RECORDS):
        path = root / "coco" / "train2017" / record["image"]
        if not path.exists():
            _write_jpg(path, 12, 14, 400 + number)
    path = root / "llava_dataset" / "llava_instruct_150k.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(LLAVA_RECORDS, indent=1))
    return LLAVA_RECORDS


def make_all(data_root: Path) -> dict:
    """Every miniature dataset above under one data root; returns their expectations by name."""
    data_root = Path(data_root)
    expected = {
        "ade20k": make_ade20k(data_root),
        "cocostuff": make_cocostuff(data_root),
        "paco_lvis": make_paco_lvis(data_root),
        "pascal_part": make_pascal_part(data_root),
        "mapillary": make_mapillary(data_root),
        "llava_instruct": make_llava_instruct(data_root),
    }
    for dataset in ("refclef", "refcoco", "refcoco+", "refcocog"):
        expected[dataset] = make_refer_seg(data_root, dataset)
    return expected
