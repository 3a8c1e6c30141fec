"""training.data.scannet_frames and training.scannet3d on a miniature ScanNet export."""

import os

import numpy as np
import pytest
from PIL import Image

from tests.helpers.mini_data.reason_seg import (
    INVALID_POSE_FRAME,
    SCANNET,
    SCANNET_SCENES,
    TARGET_FRAME,
    expected_mask,
    make_all,
    scannet_frame,
)
from training.data.reason_seg import ReasonSegDataset
from training.data.scannet_frames import associate, list_frames, pose_is_valid


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    make_all(str(root))
    return str(root)


def _reason_image(mini, split, name):
    return os.path.join(mini, "reason_seg", split, name + ".jpg")


def test_export_layout_lists_frames_and_invalid_poses(mini):
    scene_dir = os.path.join(mini, "scannet", SCANNET_SCENES[0])
    assert list_frames(scene_dir) == list(range(0, 80, 10))
    assert not pose_is_valid(scene_dir, INVALID_POSE_FRAME) and pose_is_valid(scene_dir, TARGET_FRAME)


@pytest.mark.parametrize("index", [0, 1])
def test_association_finds_the_source_frame_among_near_duplicates(mini, index):
    name, scene = SCANNET[index], SCANNET_SCENES[index]
    frame, score = associate(_reason_image(mini, "val", name), os.path.join(mini, "scannet", scene))
    assert frame == TARGET_FRAME and score > 0.95
    # The neighbouring frames (4 px shifted views) are the hardest distractors and score lower.
    neighbour, neighbour_score = associate(
        _reason_image(mini, "val", name), os.path.join(mini, "scannet", scene), frame_range=(TARGET_FRAME + 10, 70)
    )
    assert neighbour == TARGET_FRAME + 10 and neighbour_score < score


def test_association_with_the_wrong_scene_scores_low(mini):
    _, score = associate(_reason_image(mini, "val", SCANNET[1]), os.path.join(mini, "scannet", SCANNET_SCENES[0]))
    assert score < 0.5


def test_association_skips_frames_without_a_valid_pose(tmp_path):
    from tests.helpers.mini_data.reason_seg import make_scannet_export

    scene_dir = make_scannet_export(str(tmp_path), "scene0009_00")
    query = scannet_frame(INVALID_POSE_FRAME)
    assert associate(query, scene_dir)[0] != INVALID_POSE_FRAME
    assert associate(query, scene_dir, require_valid_pose=False)[0] == INVALID_POSE_FRAME


def test_association_accepts_arrays_and_resized_copies(mini):
    image = np.asarray(Image.open(_reason_image(mini, "val", SCANNET[0])).convert("RGB"))
    big = np.asarray(Image.fromarray(image).resize((320, 240)))
    assert associate(big, os.path.join(mini, "scannet", SCANNET_SCENES[0]))[0] == TARGET_FRAME


def test_3d_scorer_lifts_gt_and_prediction_on_the_associated_frame(mini):
    pytest.importorskip("open3d")
    pytest.importorskip("cv2")
    from training.scannet3d import ScanNet3DScorer

    scorer = ScanNet3DScorer(os.path.join(mini, "scannet"))
    dataset = ReasonSegDataset(os.path.join(mini, "reason_seg"), "val", portion="scannet")
    sample = dataset[0]
    target = sample.masks[0]
    info = {**sample.meta, "target": target}
    # An oracle prediction scores 1 everywhere.
    sums = scorer.empty()
    scorer.add(sums, sample, info, target == 1)
    summary = scorer.summary(sums)
    assert scorer.associations[sample.meta["image_name"]][0] == TARGET_FRAME
    assert summary["count"] == 1 and summary["point_iou"] == 1.0 and summary["acc@0.5"] == 1.0
    # Half the target predicted: point IoU about a half, box IoU lower than 1.
    half = target == 1
    half[:, :, 32:] = False
    sums = scorer.empty()
    scorer.add(sums, sample, info, half)
    summary = scorer.summary(sums)
    assert 0.3 < summary["point_iou"] < 0.8 and summary["box_iou"] < 1.0
    # An empty prediction and an image of a missing scene.
    sums = scorer.empty()
    scorer.add(sums, sample, info, np.zeros_like(half))
    assert scorer.summary(sums)["acc@0.25"] == 0.0
    missing = {**info, "scene": "scene0999_00", "image_name": "scene0999_00_0.jpg"}
    scorer.add(sums, sample, missing, target == 1)
    assert sums["skipped"] == 1 and sums["count"] == 1
    assert expected_mask().shape == target.shape[1:]
