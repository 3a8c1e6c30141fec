"""training.evaluate: protocol metrics, per-group splits, distributed equality, outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lisa_model.metrics import SegmentationMeter
from tests.helpers.mini_data.reason_seg import make_all
from training import evaluate
from training.data.collate import collate, forward_kwargs
from training.data.reason_seg import ReasonSegDataset, portion_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_eval")
    make_all(str(root))
    return str(root)


def _tasks(mini, portion="all", splits=("val", "test")):
    return [
        evaluate.EvalTask(f"reason_seg/{split}",
                          ReasonSegDataset(os.path.join(mini, "reason_seg"), split, portion=portion, train=False),
                          evaluate.REASON_SEG_GROUPS, evaluate.reason_seg_groups)
        for split in splits
    ]


def _direct(model, tokenizer, dataset):
    """Predictions straight from LisaModel.forward, scored with numpy and lisa_model.metrics."""
    meters = {group: SegmentationMeter() for group in evaluate.REASON_SEG_GROUPS}
    ious, inter_sum, union_sum = [], 0, 0
    for index in range(len(dataset)):
        sample = dataset[index]
        batch = collate([sample], tokenizer, model.config)
        kwargs = forward_kwargs(batch)
        kwargs.pop("labels"), kwargs.pop("gt_masks")
        with torch.no_grad():
            logits = model(**kwargs).mask_logits
        for conversation, target in enumerate(sample.masks):
            pred = (logits[conversation] > 0).numpy()[0]
            gt = target[0]
            valid = gt != 255
            inter = int(np.sum(pred & (gt == 1) & valid))
            union = int(np.sum((pred | (gt == 1)) & valid))
            ious.append(1.0 if union == 0 else inter / (union + 1e-5))
            inter_sum, union_sum = inter_sum + inter, union_sum + union
            kind = "long" if sample.meta["is_sentence"] else "short"
            for group in ("overall", kind, portion_of(sample.meta["image_name"])):
                meters[group].update(pred, gt)
    return meters, float(np.mean(ious)), inter_sum / union_sum


def test_metrics_equal_a_direct_computation_on_the_same_predictions(mini, tiny):
    model, tokenizer = tiny
    results = evaluate.run(model, tokenizer, _tasks(mini))
    for task in _tasks(mini):
        meters, giou, ciou = _direct(model, tokenizer, task.dataset)
        reported = results["metrics"][task.name]
        assert reported["overall"]["giou"] == pytest.approx(giou, abs=1e-9)
        assert reported["overall"]["ciou"] == pytest.approx(ciou, abs=1e-9)
        for group in evaluate.REASON_SEG_GROUPS:
            assert reported[group] == pytest.approx(meters[group].as_dict(), abs=1e-12)


def test_groups_split_overall_by_query_kind_and_portion(mini, tiny):
    model, tokenizer = tiny
    results = evaluate.run(model, tokenizer, _tasks(mini, splits=("val",)))["metrics"]["reason_seg/val"]
    assert results["overall"]["count"] == 4  # 4 images, the first query of each
    assert results["short"]["count"] + results["long"]["count"] == 4
    assert results["short"]["count"] == 2 and results["long"]["count"] == 2
    assert results["scannet"]["count"] == 2 and results["openimages"]["count"] == 2
    # Evaluating one portion alone gives that portion's group of the full run.
    for portion in ("scannet", "openimages"):
        alone = evaluate.run(model, tokenizer, _tasks(mini, portion, ("val",)))["metrics"]["reason_seg/val"]
        assert alone["overall"] == pytest.approx(results[portion], abs=1e-12)
        assert alone[portion] == pytest.approx(results[portion], abs=1e-12)


def test_validation_sample_rebuilds_prompts_from_queries(mini):
    from lisa_model.processing.conversation import Turn
    from training.data.sample import Sample

    image = np.zeros((4, 4, 3), np.uint8)
    masks = [np.ones((1, 4, 4), np.uint8), np.zeros((0, 4, 4), np.uint8)]
    sample = Sample(image, [[Turn("x", "Sure, [SEG].")], [Turn("y", "text only")]], masks, "refcoco",
                    {"conversation_meta": [{"query": "the cat"}, {"query": "why"}]})
    converted = evaluate.validation_sample(sample, use_im_start_end=False)
    assert len(converted.conversations) == 1
    assert converted.conversations[0][0].user == (
        "<image>\n What is the cat in this image? Please output segmentation mask."
    )
    assert converted.conversations[0][0].assistant == "[SEG]."


def _run_cli(mini, output, extra_env=None, launcher=None):
    args = ["--model", "tiny", "--reason-seg-root", os.path.join(mini, "reason_seg"), "--splits", "val,test",
            "--scannet-root", os.path.join(mini, "scannet"), "--output", output, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "CUDA_VISIBLE_DEVICES": ""}
    command = (launcher or [sys.executable]) + ["-m", "training.evaluate"] + args
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with open(output, encoding="utf-8") as handle:
        return json.load(handle), completed.stdout


@pytest.mark.timeout(900)
def test_torchrun_two_processes_equals_single_process(mini, tmp_path):
    pytest.importorskip("open3d")
    single, table = _run_cli(mini, str(tmp_path / "single.json"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double, _ = _run_cli(mini, str(tmp_path / "double.json"), launcher=torchrun)
    assert single["world_size"] == 1 and double["world_size"] == 2
    assert single["metrics"].keys() == double["metrics"].keys()
    for task, groups in single["metrics"].items():
        for group, value in groups.items():
            assert double["metrics"][task][group]["count"] == value["count"]
            assert double["metrics"][task][group] == pytest.approx(value, rel=1e-9, abs=1e-12)
    for task, value in single["scannet_3d"].items():
        assert double["scannet_3d"][task] == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert single["scannet_3d"]["reason_seg/val"]["count"] == 2
    assert "reason_seg/val" in table and "openimages" in table and "gIoU" in table


def test_worst_case_overlays_are_written(mini, tiny, tmp_path):
    model, tokenizer = tiny
    results = evaluate.run(model, tokenizer, _tasks(mini, splits=("val",)), overlays=str(tmp_path), worst=2)
    worst = results["worst"]
    assert len(worst) == 2 and worst[0]["iou"] <= worst[1]["iou"]
    assert all(os.path.isfile(item["overlay"]) for item in worst)
    # The worst record's IoU is the lowest of the split.
    assert worst[0]["iou"] <= results["metrics"]["reason_seg/val"]["overall"]["giou"]


def test_format_table_lists_every_group():
    table = evaluate.format_table({"reason_seg/val": {"overall": {"giou": 0.5, "ciou": 0.25, "count": 3}}})
    assert "50.00" in table and "25.00" in table and "overall" in table


def test_refcoco_cli_scores_every_expression(tmp_path):
    from tests.helpers.mini_data import sources as other
    other.make_refer_seg(tmp_path, "refcoco")
    results = evaluate.main(["--model", "tiny", "--refer-root", str(tmp_path / "refer_seg"),
                             "--refer-datasets", "refcoco", "--refer-splits", "val", "--no-progress",
                             "--output", str(tmp_path / "r.json")])
    metrics = results["metrics"]["refcoco/val"]
    assert list(metrics) == ["overall"] and metrics["overall"]["count"] == 2  # "blue chair", "chair near window"
    from training.data.refer_seg import ReferSegDataset

    item = ReferSegDataset(tmp_path / "refer_seg", "refcoco", "val", train=False)[0]
    sample = evaluate.validation_sample(item, True)
    question = "What is blue chair in this image? Please output segmentation mask."
    assert sample.conversations[0][0].user.endswith(question)
