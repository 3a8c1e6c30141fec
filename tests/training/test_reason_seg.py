"""training.data: ReasonSeg loader, templates, Sample and collate on a miniature ReasonSeg."""

import json
import random

import numpy as np
import pytest
import torch

from lisa_model.processing.tokenization import IGNORE_INDEX, SEG_TOKEN
from tests.helpers.mini_data.reason_seg import EXPLANATION, OPENIMAGES, SCANNET, expected_mask, make_reason_seg
from training.data import templates
from training.data.collate import collate, forward_kwargs
from training.data.reason_seg import ReasonSegDataset, portion_of, rasterize_shapes, scannet_scene_of
from training.data.sample import Sample, item_rng

IMAGE_PREFIX = "<im_start><image><im_end>\n"


@pytest.fixture(scope="module")
def reason_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reason_seg")
    written = make_reason_seg(str(root))
    return str(root), written


def _fills(question: str, pattern: str) -> bool:
    """Whether `question` is `pattern` with its one {field} filled in."""
    head, tail = pattern.split("{")[0], pattern.split("}")[1]
    return question.startswith(head) and question.endswith(tail) and len(question) > len(head) + len(tail)


def template_of(question: str) -> str | None:
    for pattern in templates.SHORT_QUESTIONS + templates.LONG_QUESTIONS:
        if _fills(question, pattern):
            return pattern
    return None


def test_templates_match_the_paper_appendix():
    rng = random.Random(0)
    assert len(templates.SHORT_QUESTIONS) == 4 and len(templates.LONG_QUESTIONS) == 2
    assert len(templates.EXPLANATORY_QUESTIONS) == 3 and len(templates.ANSWERS) == 5
    assert all(answer.count(SEG_TOKEN) == 1 for answer in templates.ANSWERS)
    short_questions = [q.format(phrase="the radiator") for q in templates.SHORT_QUESTIONS]
    assert templates.short_question("The Radiator", rng) in short_questions
    assert templates.validation_question("radiator", False) == (
        "What is radiator in this image? Please output segmentation mask."
    )
    assert templates.validation_question("Why?", True) == "Why? Please output segmentation mask."
    assert templates.VALIDATION_ANSWER == "[SEG]."


def test_rasterize_draws_largest_first_skips_flag_and_marks_ignore(reason_root):
    root, written = reason_root
    shapes = written["val"][OPENIMAGES[0]]["shapes"]
    mask = rasterize_shapes(shapes, 48, 64)
    np.testing.assert_array_equal(mask, expected_mask())
    # File order would let the large target cover the ignore and small regions.
    assert [s["label"] for s in shapes][:2] == ["target", "ignore"]


def test_portion_is_read_from_the_image_name():
    assert portion_of("scene0104_00_0.jpg") == "scannet" and scannet_scene_of("scene0104_00_12") == "scene0104_00"
    assert portion_of("4971309080_370ab0baf3_o.jpg") == "openimages" and scannet_scene_of("x.jpg") is None
    assert portion_of("scene0104_00.jpg") == "openimages"  # a scene, not a ReasonSeg frame name


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_split_yields_valid_samples_with_the_expected_mask(reason_root, split):
    root, written = reason_root
    dataset = ReasonSegDataset(root, split, explanatory_ratio=None)
    image_names = [dataset[i].meta["image_name"] for i in range(len(dataset))]
    assert sorted(n + ".jpg" for n in written[split]) == sorted(image_names)
    for index in range(len(dataset)):
        sample = dataset[index]
        sample.validate()
        assert sample.source == "reason_seg" and sample.image.shape == (48, 64, 3)
        for masks in sample.masks:
            assert masks.shape == (1, 48, 64)
            np.testing.assert_array_equal(masks[0], expected_mask())


def test_portion_and_query_type_select_images(reason_root):
    root, written = reason_root
    scannet = ReasonSegDataset(root, "val", portion="scannet")
    openimages = ReasonSegDataset(root, "val", portion="openimages")
    assert sorted(scannet.names) == sorted(SCANNET)
    assert sorted(openimages.names) == sorted(n for n in written["val"] if n in OPENIMAGES)
    assert all(scannet[i].meta["portion"] == "scannet" for i in range(len(scannet)))
    long = ReasonSegDataset(root, "val", query_type="long")
    short = ReasonSegDataset(root, "val", query_type="short")
    assert sorted(long.names + short.names) == sorted(written["val"])
    assert all(written["val"][n]["is_sentence"] for n in long.names)
    assert not any(written["val"][n]["is_sentence"] for n in short.names)


@pytest.mark.parametrize("all_queries", [False, True])
def test_validation_formulation_uses_the_fixed_prompt(reason_root, all_queries):
    root, written = reason_root
    dataset = ReasonSegDataset(root, "val", all_queries=all_queries)
    for index in range(len(dataset)):
        sample = dataset[index]
        annotation = written["val"][dataset.names[index]]
        # The reference validates the first query of each image only.
        texts = annotation["text"] if all_queries else annotation["text"][:1]
        assert len(sample.conversations) == len(texts)
        for turns, text in zip(sample.conversations, texts):
            # The reference writes "<image>\n {question}"; the space vanishes in the ids (next test).
            assert turns[0].user == IMAGE_PREFIX + " " + templates.validation_question(text, annotation["is_sentence"])
            assert turns[0].assistant == "[SEG]."


def test_validation_prompt_space_is_dropped_after_im_end(tiny):
    from lisa_model.processing.conversation import Turn, get_template, render_prompt
    from lisa_model.processing.tokenization import tokenize_prompt

    _, tokenizer = tiny
    template = get_template("llava_v1")
    question = templates.validation_question("the radiator", False)
    spaced = templates.validation_user_message("the radiator ", False, use_im_start_end=True)
    plain = IMAGE_PREFIX + question
    assert tokenize_prompt(tokenizer, render_prompt(template, [Turn(spaced)])) == tokenize_prompt(
        tokenizer, render_prompt(template, [Turn(plain)])
    )


def test_training_samples_use_templates_and_sample_rephrasings(reason_root):
    root, written = reason_root
    dataset = ReasonSegDataset(root, "train", queries_per_image=2, explanatory_ratio=None)
    seen_queries, seen_templates = set(), set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            sample = dataset[index]
            annotation = written["train"][dataset.names[index]]
            assert len(sample.conversations) == 2
            queries = [info["query"] for info in sample.meta["conversation_meta"]]
            assert len(set(queries)) == 2 and set(queries) <= set(annotation["text"])
            for turns, query in zip(sample.conversations, queries):
                question = turns[0].user[len(IMAGE_PREFIX):]
                assert turns[0].user.startswith(IMAGE_PREFIX)
                pattern = template_of(question)
                phrase = query if annotation["is_sentence"] else query.lower()
                assert pattern is not None and question == pattern.format(phrase=phrase, sentence=phrase)
                assert (pattern in templates.LONG_QUESTIONS) == annotation["is_sentence"]
                assert turns[0].assistant in templates.ANSWERS
                seen_templates.add(pattern)
                seen_queries.add(query)
    assert len(seen_templates) == 6  # every template appears over a few epochs
    assert seen_queries == {t for a in written["train"].values() for t in a["text"]}


def test_training_items_are_reproducible_per_seed_epoch_index(reason_root):
    root, _ = reason_root
    a = ReasonSegDataset(root, "train", seed=3)
    b = ReasonSegDataset(root, "train", seed=3)
    a.set_epoch(2), b.set_epoch(2)
    assert [a[i].conversations for i in range(len(a))] == [b[i].conversations for i in range(len(b))]
    assert item_rng(3, 2, 1).random() == item_rng(3, 2, 1).random() != item_rng(3, 3, 1).random()


def test_explanatory_answers_and_text_only_ratio(reason_root):
    root, written = reason_root
    explained = {item["image"][:-4] for item in written["explanatory"]}
    counts = {0: 0, 1: 0, 2: 0}
    dataset = ReasonSegDataset(root, "train", explanatory_ratio=0.3)
    for epoch in range(200):
        dataset.set_epoch(epoch)
        for index, name in enumerate(dataset.names):
            if name not in explained:
                continue
            sample = dataset[index]
            sample.validate()
            choices = {info["explanatory"] for info in sample.meta["conversation_meta"]}
            assert len(choices) == 1
            choice = choices.pop()
            counts[choice] += 1
            for turns, masks, info in zip(sample.conversations, sample.masks, sample.meta["conversation_meta"]):
                user, answer = turns[0].user[len(IMAGE_PREFIX):], turns[0].assistant
                if choice == 0:
                    assert answer in templates.ANSWERS and masks.shape[0] == 1
                elif choice == 1:
                    assert any(user == f"{info['query']} {q}" for q in templates.EXPLANATORY_QUESTIONS)
                    assert any(answer == f"{a} {EXPLANATION}" for a in templates.ANSWERS) and masks.shape[0] == 1
                else:
                    assert user == info["query"] and answer == EXPLANATION and masks.shape[0] == 0
    total = sum(counts.values())
    assert abs(counts[2] / total - 0.3) < 0.07
    assert abs(counts[0] - counts[1]) / total < 0.12
    # Images without an explanation never get one.
    dataset.set_epoch(0)
    others = [i for i, n in enumerate(dataset.names) if n not in explained]
    assert all(info["explanatory"] == 0 for i in others for info in dataset[i].meta["conversation_meta"])


def _squash(text: str) -> str:
    # The tiny tokenizer's decode spaces text differently around [SEG]; compare without whitespace.
    return "".join(text.split())


def test_collate_masks_labels_up_to_each_answer(reason_root, tiny):
    model, tokenizer = tiny
    root, _ = reason_root
    dataset = ReasonSegDataset(root, "train", explanatory_ratio=0.5)
    samples = [dataset[i] for i in range(len(dataset))]
    batch = collate(samples, tokenizer, model.config)
    conversations = [turns for s in samples for turns in s.conversations]
    assert batch["input_ids"].shape[0] == len(conversations) == len(batch["meta"]) == len(batch["gt_masks"])
    assert batch["sam_pixels"].shape[0] == len(samples) == len(batch["original_sizes"])
    for row, turns in enumerate(conversations):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        supervised = labels != IGNORE_INDEX
        assert torch.equal(labels[supervised], ids[supervised])
        decoded = tokenizer.decode(labels[supervised].tolist(), skip_special_tokens=False)
        assert _squash(decoded) == _squash(turns[0].assistant + "</s>")
        # Padding is on the right and never attended.
        length = int(batch["attention_mask"][row].sum())
        assert (batch["attention_mask"][row, :length] == 1).all() and (ids[length:] == tokenizer.pad_token_id).all()
    expected_index = [i for i, s in enumerate(samples) for _ in s.conversations]
    assert batch["image_index"].tolist() == expected_index
    json.dumps([{k: v for k, v in m.items() if k != "target"} for m in batch["meta"]])  # plain metadata


def test_collate_keeps_ignore_out_of_the_loss_targets(reason_root, tiny):
    model, tokenizer = tiny
    root, _ = reason_root
    sample = ReasonSegDataset(root, "val")[0]
    batch = collate([sample], tokenizer, model.config)
    target = batch["meta"][0]["target"]
    assert (target == 255).any()
    np.testing.assert_array_equal(batch["gt_masks"][0].numpy(), (target == 1).astype(np.float32))
    output = model(**forward_kwargs(batch))  # the batch is exactly forward's arguments
    assert output.loss is not None and torch.isfinite(output.loss.total)
    assert output.mask_logits[0].shape == (1, 48, 64)


def test_sample_validate_rejects_mismatched_masks():
    from lisa_model.processing.conversation import Turn

    image = np.zeros((4, 5, 3), np.uint8)
    turn = [Turn(IMAGE_PREFIX + "q", "[SEG] and [SEG].")]
    with pytest.raises(ValueError, match="2 \\[SEG\\] but 1 masks"):
        Sample(image, [turn], [np.zeros((1, 4, 5), np.uint8)], "x").validate()
