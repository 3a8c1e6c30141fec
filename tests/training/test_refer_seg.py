"""refCOCO-family reader on miniature refs(*).p + instances.json; the restricted unpickler; RLE decoding."""

import os
import pickle
import warnings

import numpy as np
import pytest

from tests.helpers.collate_checks import assert_labels_are_answers, command_of, tiny_collate_setup
from tests.helpers.mini_data.sources import _rle_string, make_refer_seg, rle_counts
from training.data.coco_masks import mask_from_rle_counts, rle_counts_from_string, segmentation_mask
from training.data.collate import collate
from training.data.refer_seg import ReferSegDataset, build_refer_seg_dataset, load_refs
from training.data.templates import ANSWERS, SHORT_QUESTIONS, VALIDATION_ANSWER


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    expected = {name: make_refer_seg(root, name) for name in ("refcoco", "refcoco+", "refcocog", "refclef")}
    return root, expected


@pytest.mark.parametrize("name", ["refcoco", "refcoco+", "refcocog", "refclef"])
def test_training_samples(data, name):
    root, expected = data
    expected = expected[name]
    dataset = ReferSegDataset(root / "refer_seg", name, "train")
    assert len(dataset) == 2  # images 9 and 25; image 30 is val only
    seen = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        for index, image_id in enumerate((9, 25)):
            sample = dataset[index]
            sample.validate()
            assert sample.source == name and sample.meta["image_id"] == image_id
            assert sample.meta["image_path"] == str(expected["files"][image_id])
            pairs = dict(expected["sentences"]["train"][image_id])
            assert len(sample.conversations) == min(3, len(pairs))
            assert len(set(sample.meta["sentences"])) == len(sample.meta["sentences"])
            for turns, masks, info in zip(sample.conversations, sample.masks, sample.meta["conversation_meta"]):
                sentence = info["sentence"]
                assert pairs[sentence] == info["ann_id"]
                assert len(turns) == 1
                assert command_of(turns[0].user) in {t.format(phrase=sentence.lower()) for t in SHORT_QUESTIONS}
                assert turns[0].assistant in ANSWERS
                np.testing.assert_array_equal(masks[0], expected["masks"][info["ann_id"]])
                seen.add(sentence)
    assert seen == {s for sentences in expected["sentences"]["train"].values() for s, _ in sentences}


def test_validation_samples(data):
    root, expected = data
    dataset = build_refer_seg_dataset(root, "refcoco", "val")
    assert not dataset.train and len(dataset) == 1
    sample = dataset[0]
    sample.validate()
    assert [command_of(t[0].user) for t in sample.conversations] == [
        "What is blue chair in this image? Please output segmentation mask.",
        "What is chair near window in this image? Please output segmentation mask.",
    ]
    assert all(t[0].assistant == VALIDATION_ANSWER for t in sample.conversations)
    for masks in sample.masks:
        np.testing.assert_array_equal(masks[0], expected["refcoco"]["masks"][105])
    assert dataset[0].conversations == sample.conversations  # no randomness in validation


def test_unknown_split_and_dataset(data):
    root, _ = data
    with pytest.raises(ValueError, match="testA"):
        ReferSegDataset(root / "refer_seg", "refcoco", "testA")
    with pytest.raises(ValueError):
        ReferSegDataset(root / "refer_seg", "refcoco++", "train")


class _Exploit:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps([{"ref_id": 0, "x": _Exploit(f"touch {marker}")}], protocol=protocol))
        with pytest.raises(pickle.UnpicklingError, match="system"):
            load_refs(path)
    assert not marker.exists()
    # other globals: a builtin function and a non-plain builtin type
    path.write_bytes(pickle.dumps([eval], protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="eval"):
        load_refs(path)
    path.write_bytes(pickle.dumps([{1, 2}], protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="set"):
        load_refs(path)
    # plain data in a wrong shape: refused with a clear message
    path.write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="list of refs"):
        load_refs(path)


def test_malicious_refs_file_in_layout(data, tmp_path):
    root, _ = data
    folder = tmp_path / "refer_seg" / "refcoco"
    folder.mkdir(parents=True)
    (folder / "instances.json").write_text((root / "refer_seg" / "refcoco" / "instances.json").read_text())
    marker = tmp_path / "pwned"
    (folder / "refs(unc).p").write_bytes(pickle.dumps(_Exploit(f"touch {marker}"), protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        ReferSegDataset(tmp_path / "refer_seg", "refcoco", "train")
    assert not marker.exists()


def test_rle_decoding_matches_pycocotools():
    from pycocotools import mask as mask_api

    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (7, 5), (31, 40)):
        for density in (0.0, 0.3, 0.9, 1.0):
            mask = (rng.random((height, width)) < density).astype(np.uint8)
            encoded = mask_api.encode(np.asfortranarray(mask))
            counts = rle_counts_from_string(encoded["counts"])
            np.testing.assert_array_equal(mask_from_rle_counts(counts, height, width), mask)
            assert counts == rle_counts(mask)
            assert _rle_string(counts).encode() == encoded["counts"]  # the test generator's encoder
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                np.testing.assert_array_equal(mask_api.decode(encoded), mask)
            for form in (encoded, {"size": [height, width], "counts": encoded["counts"].decode()},
                         {"size": [height, width], "counts": counts}, [encoded]):
                np.testing.assert_array_equal(segmentation_mask(form, height, width), mask)
    with pytest.raises(ValueError):
        segmentation_mask({"size": [3, 3], "counts": [2, 2]}, 3, 3)


def test_collate_labels(data):
    root, _ = data
    tokenizer, config = tiny_collate_setup()
    train = ReferSegDataset(root / "refer_seg", "refcoco", "train")
    samples = [train[0], build_refer_seg_dataset(root, "refcoco", "val")[0]]
    batch = collate(samples, tokenizer, config)
    assert batch["input_ids"].shape[0] == 3 + 2
    assert_labels_are_answers(batch, samples, tokenizer)


def test_python2_pickle_strings_are_read_as_utf8():
    import io

    from training.data.refer_seg import RestrictedUnpickler

    # What Python 2 writes for [{'split': 'train', 'ann_id': 7L, 'sent': 'caf\xc3\xa9'}] (protocol 2,
    # byte strings as SHORT_BINSTRING): no global is referenced, strings decode as UTF-8.
    data = (
        b"\x80\x02]q\x00}q\x01(U\x05splitq\x02U\x05trainq\x03U\x06ann_idq\x04\x8a\x01\x07"
        b"U\x04sentq\x05U\x05caf\xc3\xa9q\x06ua."
    )
    loaded = RestrictedUnpickler(io.BytesIO(data), encoding="utf-8", errors="replace").load()
    assert loaded == [{"split": "train", "ann_id": 7, "sent": "caf\u00e9"}]
