"""Semantic/part segmentation loaders on miniature ADE20K, COCO-Stuff, PACO-LVIS and PASCAL-Part."""

import numpy as np
import pytest

from tests.helpers.collate_checks import assert_labels_are_answers, command_of, tiny_collate_setup
from tests.helpers.mini_data.sources import (
    make_ade20k,
    make_cocostuff,
    make_mapillary,
    make_paco_lvis,
    make_pascal_part,
)
from training.data.class_names import ADE20K_CLASSES, COCO_STUFF_CLASSES
from training.data.collate import collate
from training.data.semantic_seg import (
    ADE20KDataset,
    CocoStuffDataset,
    PacoLvisDataset,
    PascalPartDataset,
    build_sem_seg_dataset,
    clean_stuff_name,
    coco_stuff_phrases,
    split_part_name,
)
from training.data.templates import ANSWERS, SHORT_QUESTIONS


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    expected = {
        "ade20k": make_ade20k(root),
        "cocostuff": make_cocostuff(root),
        "paco_lvis": make_paco_lvis(root),
        "pascal_part": make_pascal_part(root),
        "mapillary": make_mapillary(root),
    }
    return root, expected


def check_conversation(turns, phrase):
    """One turn: a short-phrase template about `phrase` and a [SEG] answer template."""
    assert len(turns) == 1
    assert command_of(turns[0].user) in {t.format(phrase=phrase.lower()) for t in SHORT_QUESTIONS}
    assert turns[0].assistant in ANSWERS


def test_class_lists():
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert len(COCO_STUFF_CLASSES) == 182
    assert (COCO_STUFF_CLASSES[0], COCO_STUFF_CLASSES[91], COCO_STUFF_CLASSES[181]) == ("person", "banner", "wood")


def test_name_cleaning():
    assert clean_stuff_name("wall-other") == "wall"
    assert clean_stuff_name("desk-stuff") == "desk"
    assert clean_stuff_name("tree-merged") == "tree"
    assert clean_stuff_name("wall-brick") == "wall brick"
    ignore = coco_stuff_phrases("ignore")
    assert ignore[156] == "sky" and ignore[170] is None and ignore[0] == "person"
    assert all(p is None or "-" not in p for p in ignore)
    rename = coco_stuff_phrases("rename")
    assert rename[170] == "wall brick" and rename[172] == "wall" and None not in rename
    assert split_part_name("bow_(weapon):string") == ("bow", "string")
    assert split_part_name("trash_can:lid") == ("trash can", "lid")
    assert split_part_name("tvmonitor:screen") == ("tv monitor", "screen")
    assert split_part_name("dog") == ("dog", None)
    with pytest.raises(ValueError):
        coco_stuff_phrases("drop")


def test_ade20k_masks_and_classes(data):
    root, expected = data
    dataset = ADE20KDataset(root / "ade20k")
    assert len(dataset) == 3
    stems = ["ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000003"]
    seen = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            sample = dataset[index]
            sample.validate()
            # the third image is all "other": it is replaced by the next (the first)
            stem = stems[sample.meta["index"]]
            assert sample.meta["index"] == (0 if index == 2 else index)
            classes = sample.meta["classes"]
            assert len(classes) == min(3, len(expected["ade20k"][stem])) and len(set(classes)) == len(classes)
            for turns, masks, phrase in zip(sample.conversations, sample.masks, classes):
                check_conversation(turns, phrase)
                assert masks.shape == (1, 20, 24)
                np.testing.assert_array_equal(masks[0], expected["ade20k"][stem][phrase])
                if stem == stems[0]:
                    seen.add(phrase)
    assert seen == {"wall", "sky", "person", "car"}  # each of the 4 classes gets drawn


def test_cocostuff_ignores_hyphenated_classes(data):
    root, expected = data
    dataset = CocoStuffDataset(root / "cocostuff" / "train2017", root / "coco" / "train2017")
    assert len(dataset) == 2
    sample = dataset[0]
    sample.validate()
    assert sorted(sample.meta["classes"]) == ["grass", "person", "sky"]
    raw = {"person": 0, "sky": 156, "grass": 123}
    unlabeled = expected["cocostuff"]["000000000009"]["unlabeled"]
    for phrase, masks in zip(sample.meta["classes"], sample.masks):
        want = expected["cocostuff"]["000000000009"][raw[phrase]].copy()
        want[unlabeled] = 255
        np.testing.assert_array_equal(masks[0], want)
        assert masks[0][4:8].max() == 0  # wall-brick / wall-other pixels: plain background
    assert sorted(dataset[1].meta["classes"]) == ["dog", "playingfield"]


def test_cocostuff_rename(data):
    root, _ = data
    dataset = CocoStuffDataset(root / "cocostuff" / "train2017", root / "coco" / "train2017", hyphenated="rename")
    seen = set()
    for epoch in range(10):
        dataset.set_epoch(epoch)
        classes = dataset[0].meta["classes"]
        assert len(classes) == 3
        seen.update(classes)
    assert seen == {"person", "sky", "grass", "wall brick", "wall"}


def test_paco_lvis_parts(data):
    root, expected = data
    dataset = PacoLvisDataset(root / "vlpart" / "paco" / "annotations" / "paco_lvis_v1_train.json", root / "coco")
    assert len(dataset) == 2  # image 632 has no annotation
    names = {1: "dog", 2: "dog:head", 3: "trash_can:lid", 4: "mug:handle", 5: "bow_(weapon)"}
    phrases = {
        "dog": {"dog"},
        "dog:head": {"dog head", "head of the dog"},
        "trash_can:lid": {"trash can lid", "lid of the trash can"},
        "mug:handle": {"mug handle", "handle of the mug"},
        "bow_(weapon)": {"bow"},
    }
    seen_phrases = set()
    for epoch in range(40):
        dataset.set_epoch(epoch)
        for index, image_id in enumerate((139, 285)):
            sample = dataset[index]
            sample.validate()
            assert sample.meta["image_id"] == image_id
            assert len(sample.conversations) == (3 if image_id == 139 else 1)
            per_conversation = zip(sample.conversations, sample.masks, sample.meta["classes"], sample.meta["class_ids"])
            for turns, masks, phrase, class_id in per_conversation:
                name = names[class_id]
                assert phrase in phrases[name]
                seen_phrases.add(phrase)
                check_conversation(turns, phrase)
                np.testing.assert_array_equal(masks[0], expected["paco_lvis"][image_id][name])
    assert {"dog head", "head of the dog"} <= seen_phrases


def test_pascal_part(data):
    root, expected = data
    part = root / "vlpart" / "pascal_part"
    dataset = PascalPartDataset(part / "train.json", part / "VOCdevkit" / "VOC2010" / "JPEGImages")
    sample = dataset[0]
    assert set(sample.meta["class_ids"]) == {1, 2}
    for phrase, class_id, masks in zip(sample.meta["classes"], sample.meta["class_ids"], sample.masks):
        name = {1: "person:head", 2: "tvmonitor:screen"}[class_id]
        assert phrase in {
            "person:head": {"person head", "head of the person"},
            "tvmonitor:screen": {"tv monitor screen", "screen of the tv monitor"},
        }[name]
        np.testing.assert_array_equal(masks[0], expected["pascal_part"][1][name])
    np.testing.assert_array_equal(dataset[1].masks[0][0], expected["pascal_part"][2]["dog:leg"])


def test_mapillary(data):
    root, expected = data
    dataset = build_sem_seg_dataset(root, "mapillary")
    sample = dataset[0]
    sample.validate()
    assert sorted(sample.meta["classes"]) == ["bird", "lane marking - crosswalk"]  # never "unlabeled"
    for phrase, masks in zip(sample.meta["classes"], sample.masks):
        np.testing.assert_array_equal(masks[0], expected["mapillary"]["_1a2b3c"][phrase])


def test_deterministic_per_seed_and_epoch(data):
    root, _ = data
    first = ADE20KDataset(root / "ade20k", seed=3)
    second = ADE20KDataset(root / "ade20k", seed=3)
    def draws(dataset):
        samples = (dataset[0], dataset[1])
        return [(s.meta["classes"], [(t[0].user, t[0].assistant) for t in s.conversations]) for s in samples]

    assert draws(first) == draws(second)
    results = set()
    for epoch in range(6):
        first.set_epoch(epoch)
        results.add(repr(draws(first)))
    assert len(results) > 1  # epochs draw differently


def test_build_from_layout_and_collate_labels(data):
    root, _ = data
    tokenizer, config = tiny_collate_setup()
    samples = []
    for name in ("ade20k", "cocostuff", "paco_lvis", "pascal_part"):
        dataset = build_sem_seg_dataset(root, name)
        assert dataset.name == name
        sample = dataset[0]
        assert sample.source == name
        samples.append(sample)
    batch = collate(samples, tokenizer, config)
    assert_labels_are_answers(batch, samples, tokenizer)
    flat = [m for s in samples for m in s.masks]
    assert len(batch["gt_masks"]) == len(flat)
    for gt, masks in zip(batch["gt_masks"], flat):
        np.testing.assert_array_equal(gt.numpy(), (masks == 1).astype(np.float32))
    with pytest.raises(ValueError):
        build_sem_seg_dataset(root, "partimagenet")
