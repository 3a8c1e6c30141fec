"""LLaVA-Instruct-150k conversations -> Samples with our image placeholder, no masks."""

import json

import numpy as np
import pytest

from lisa_model.processing.conversation import image_user_message
from tests.helpers.collate_checks import assert_labels_are_answers, tiny_collate_setup
from tests.helpers.mini_data.sources import LLAVA_RECORDS, make_llava_instruct
from training.data.collate import collate
from training.data.vqa import LlavaInstructDataset, build_vqa_dataset, llava_turns


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_llava_instruct(root)
    return root


@pytest.mark.parametrize("use_im_start_end", [True, False])
def test_turns_and_placeholder(root, use_im_start_end):
    dataset = LlavaInstructDataset(root / "llava_dataset" / "llava_instruct_150k.json", root / "coco" / "train2017",
                                   use_im_start_end=use_im_start_end)
    assert len(dataset) == 2
    first, second = dataset[0], dataset[1]
    for sample in (first, second):
        sample.validate()
        assert sample.source == "llava_instruct"
        assert len(sample.conversations) == 1 and sample.masks[0].shape == (0, 12, 14)
    turns = first.conversations[0]
    assert [(t.user, t.assistant) for t in turns] == [
        (image_user_message("What is the man doing?", use_im_start_end), "He is riding a horse along the beach."),
        ("What color is the horse?", "The horse is brown."),
    ]
    # "<image>" at the end of the message moves to the front
    assert second.conversations[0][0].user == image_user_message("What animal is in the picture?", use_im_start_end)
    assert second.meta["id"] == "000000000025"


def test_message_rules():
    messages = [
        {"from": "gpt", "value": "Hello."},
        {"from": "human", "value": "<image>\nHi?"},
        {"from": "gpt", "value": "Hi."},
        {"from": "human", "value": "Dangling question?"},
    ]
    turns = llava_turns(messages, True)  # leading gpt and trailing human dropped
    assert [(t.user, t.assistant) for t in turns] == [(image_user_message("Hi?", True), "Hi.")]
    with pytest.raises(ValueError, match="alternate"):
        llava_turns([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], True)
    with pytest.raises(ValueError, match="first human"):
        llava_turns([{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                     {"from": "human", "value": "<image> c"}, {"from": "gpt", "value": "d"}], True)


def test_malformed_record_names_its_id(tmp_path, root):
    path = tmp_path / "llava.json"
    path.write_text(json.dumps([{**LLAVA_RECORDS[0], "id": "bad1", "conversations": [{"from": "gpt", "value": "x"}]}]))
    dataset = LlavaInstructDataset(path, root / "coco" / "train2017")
    with pytest.raises(ValueError, match="bad1"):
        dataset[0]


def test_collate_labels_cover_every_answer(root):
    tokenizer, config = tiny_collate_setup()
    dataset = build_vqa_dataset(root)
    samples = [dataset[0], dataset[1]]
    batch = collate(samples, tokenizer, config)
    assert_labels_are_answers(batch, samples, tokenizer)  # both answers of the two-turn record
    assert [m.shape[0] for m in batch["gt_masks"]] == [0, 0]
    assert np.all(batch["labels"].numpy()[:, :5] == -100)
