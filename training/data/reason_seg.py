"""ReasonSeg (LISA, §3.2) read from its released layout, including the ScanNetv2 portion.

Layout (one folder per split, image and labelme-like JSON side by side):

    {root}/train/{name}.jpg + {name}.json     239 images
    {root}/val/{name}.jpg   + {name}.json     200 images
    {root}/test/{name}.jpg  + {name}.json     779 images
    {root}/explanatory/train.json             [{"image": "{name}.jpg", "query": ..., "outputs": ...}]

Each JSON holds `text` (list of queries; train images carry several rephrasings),
`is_sentence` (True: long reasoning query, False: short phrase) and `shapes`
([{"label", "points": [[x, y], ...]}]). Images are either OpenImages photos
(Flickr-style names) or ScanNetv2 frames named `sceneXXXX_YY_N`; the `portion`
argument selects one or both.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
from PIL import Image

from lisa_model.processing.conversation import Turn, image_user_message

from . import templates
from .base import ItemDataset
from .sample import IGNORE_LABEL, Sample

SPLITS = ("train", "val", "test")
PORTIONS = ("all", "scannet", "openimages")
QUERY_TYPES = ("all", "short", "long")
SCANNET_NAME = re.compile(r"^(scene\d{4}_\d{2})_(\d+)$")


def portion_of(name: str) -> str:
    """"scannet" for ScanNetv2 frame names (`scene0104_00_0`, extension optional), else "openimages"."""
    stem = os.path.splitext(os.path.basename(name))[0]
    return "scannet" if SCANNET_NAME.match(stem) else "openimages"


def scannet_scene_of(name: str) -> str | None:
    """The ScanNet scene id ("scene0104_00") of a ReasonSeg image name, or None."""
    match = SCANNET_NAME.match(os.path.splitext(os.path.basename(name))[0])
    return match.group(1) if match else None


def _fill_polygon(mask: np.ndarray, points, value: int) -> None:
    """Draw a closed polygon with its 1-px outline into `mask` (in place).

    Points are (x, y) = (column, row), truncated to int32 as the reference does
    (cv2.polylines + cv2.fillPoly). Without OpenCV, PIL draws the same polygon;
    edge pixels may then differ slightly from the reference rasterisation.
    """
    polygon = np.asarray(points, dtype=np.float64).astype(np.int32).reshape(1, -1, 2)
    try:
        import cv2
    except ImportError:
        from PIL import ImageDraw

        canvas = Image.fromarray(np.zeros_like(mask))
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon[0].tolist()], fill=1, outline=1)
        mask[np.asarray(canvas) == 1] = value
        return
    cv2.polylines(mask, polygon, True, int(value), 1)
    cv2.fillPoly(mask, polygon, int(value))


def rasterize_shapes(shapes: list[dict], height: int, width: int) -> np.ndarray:
    """The ReasonSeg ground truth of one image.

    Polygons labelled "flag" (deprecated annotations) are skipped; the rest are
    drawn largest area first, so smaller polygons drawn later win where they
    overlap (e.g. an "ignore" hole inside a target). Labels containing "ignore"
    draw IGNORE_LABEL (255), others 1.

    Returns:
        uint8 array (height, width) with values 0, 1, 255.
    """
    valid, areas = [], []
    for shape in shapes:
        if shape["label"].lower() == "flag":
            continue
        scratch = np.zeros((height, width), dtype=np.uint8)
        _fill_polygon(scratch, shape["points"], 1)
        valid.append(shape)
        areas.append(int(scratch.sum()))
    # Stable descending order: ties keep file order.
    order = sorted(range(len(valid)), key=lambda i: -areas[i])
    mask = np.zeros((height, width), dtype=np.uint8)
    for index in order:
        shape = valid[index]
        value = IGNORE_LABEL if "ignore" in shape["label"].lower() else 1
        _fill_polygon(mask, shape["points"], value)
    return mask


def read_annotation(json_path: str) -> dict:
    """The JSON of one image: {"text": [...], "is_sentence": bool, "shapes": [...]}."""
    with open(json_path, encoding="utf-8") as handle:
        annotation = json.load(handle)
    if isinstance(annotation.get("text"), str):
        annotation["text"] = [annotation["text"]]
    return annotation


def read_image(path: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()


def read_explanations(path: str) -> dict[str, dict]:
    """`explanatory/train.json` indexed by image file name: {name.jpg: {"query", "outputs"}}."""
    with open(path, encoding="utf-8") as handle:
        items = json.load(handle)
    return {item["image"]: {"query": item["query"], "outputs": item["outputs"]} for item in items}


class ReasonSegDataset(ItemDataset):
    """ReasonSeg as Samples: one image, one conversation per query, its mask per [SEG].

    Arguments:
        root (str): folder holding train/, val/, test/ (and explanatory/).
        split (str): "train", "val" or "test".
        portion (str): "all", "scannet" (ScanNetv2 frames) or "openimages".
        query_type (str): "all", "short" (is_sentence False) or "long".
        train (bool | None): training formulation (random templates, sampled
            rephrasings, explanations) or validation formulation (the reference's
            fixed validation prompt, answer "[SEG]."). Default: split == "train".
        all_queries (bool): validation: ask every query of an image; default False asks
            only the first, as the reference's validation (one mask per image).
        queries_per_image (int): training: at most this many rephrasings, sampled
            without replacement (reference: 3).
        explanatory_ratio (float | None): training, for images in the explanatory
            JSON: probability of a text-only answer (the explanation, no [SEG], no
            mask); otherwise an even choice between a plain [SEG] answer and a [SEG]
            answer followed by the explanation (question + an explanatory request).
            None disables explanations. Reference 0.1.
        explanatory_json (str | None): default `{root}/explanatory/train.json` when present.
        use_im_start_end (bool): wrap the image placeholder (LISA-7B-v1: True).
        seed (int): base of the per-item random generators.
    """

    source = "reason_seg"

    def __init__(
        self,
        root: str,
        split: str = "train",
        portion: str = "all",
        query_type: str = "all",
        train: bool | None = None,
        queries_per_image: int = 3,
        explanatory_ratio: float | None = 0.1,
        explanatory_json: str | None = None,
        use_im_start_end: bool = True,
        seed: int = 0,
        all_queries: bool = False,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if portion not in PORTIONS:
            raise ValueError(f"portion must be one of {PORTIONS}, got {portion!r}")
        if query_type not in QUERY_TYPES:
            raise ValueError(f"query_type must be one of {QUERY_TYPES}, got {query_type!r}")
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"ReasonSeg split folder not found: {folder}")
        self.root, self.split, self.portion, self.query_type = root, split, portion, query_type
        self.train = split == "train" if train is None else train
        self.queries_per_image = queries_per_image
        self.use_im_start_end = use_im_start_end
        self.all_queries = all_queries
        super().__init__(seed)

        names = sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.lower().endswith(".jpg"))
        names = [n for n in names if portion == "all" or portion_of(n) == portion]
        self.annotations: dict[str, dict] = {}
        kept = []
        for name in names:
            annotation = read_annotation(os.path.join(folder, name + ".json"))
            sentence = bool(annotation["is_sentence"])
            if query_type == "all" or sentence == (query_type == "long"):
                self.annotations[name] = annotation
                kept.append(name)
        self.names = kept

        self.explanatory_ratio = explanatory_ratio if self.train else None
        self.explanations: dict[str, dict] = {}
        if self.explanatory_ratio is not None:
            path = explanatory_json or os.path.join(root, "explanatory", "train.json")
            if explanatory_json is not None or os.path.isfile(path):
                self.explanations = read_explanations(path)

    def __len__(self) -> int:
        return len(self.names)

    def image_path(self, index: int) -> str:
        return os.path.join(self.root, self.split, self.names[index] + ".jpg")

    def get(self, index: int, rng) -> Sample:
        name = self.names[index]
        annotation = self.annotations[name]
        image = read_image(self.image_path(index))
        mask = rasterize_shapes(annotation["shapes"], *image.shape[:2])
        is_sentence = bool(annotation["is_sentence"])
        if self.train:
            turns, masks, info = self._train_conversations(name, annotation["text"], is_sentence, mask, rng)
        else:
            turns, masks, info = self._eval_conversations(annotation["text"], is_sentence, mask)
        meta = {
            "image_name": name + ".jpg",
            "split": self.split,
            "is_sentence": is_sentence,
            "portion": portion_of(name),
            "scene": scannet_scene_of(name),
            "conversation_meta": info,
        }
        return Sample(image=image, conversations=turns, masks=masks, source=self.source, meta=meta)

    def _message(self, text: str) -> str:
        return image_user_message(text, self.use_im_start_end)

    def _eval_conversations(self, texts, is_sentence, mask):
        # The reference's fixed validation prompt, for its first query only unless all_queries.
        texts = [t.strip() for t in (texts if self.all_queries else texts[:1])]
        message = lambda t: templates.validation_user_message(t, is_sentence, self.use_im_start_end)  # noqa: E731
        turns = [[Turn(message(t), templates.VALIDATION_ANSWER)] for t in texts]
        masks = [mask[None].copy() for _ in texts]
        info = [{"query": t, "is_sentence": is_sentence} for t in texts]
        return turns, masks, info

    def _train_conversations(self, name, texts, is_sentence, mask, rng):
        chosen = rng.sample(list(texts), min(self.queries_per_image, len(texts)))
        explanation = self.explanations.get(name + ".jpg")
        # One choice per image, as the explanation belongs to the image: 0 plain [SEG]
        # answer, 1 [SEG] answer + explanation, 2 text-only explanation.
        choice = 0
        if explanation is not None:
            choice = 2 if rng.random() < self.explanatory_ratio else rng.randint(0, 1)
        turns, masks, info = [], [], []
        empty = np.zeros((0,) + mask.shape, dtype=np.uint8)
        for text in chosen:
            if choice == 0:
                turn = Turn(self._message(templates.question(text, is_sentence, rng)), templates.seg_answer(rng))
            elif choice == 1:
                question = f"{text} {templates.explanatory_question(rng)}"
                turn = Turn(self._message(question), f"{templates.seg_answer(rng)} {explanation['outputs']}")
            else:
                turn = Turn(self._message(text), explanation["outputs"])
            turns.append([turn])
            masks.append(empty if choice == 2 else mask[None].copy())
            info.append({"query": text, "is_sentence": is_sentence, "explanatory": choice})
        return turns, masks, info
