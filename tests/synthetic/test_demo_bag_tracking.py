"""The demo bag as a tracking sequence: per-frame ground truth, a target leaving the view, a moved object.

Also the scene options it uses (a camera that looks away, an object moved mid-sequence),
which must leave the default scenes (the training data) unchanged.
"""

import json

import numpy as np
import pytest

from lisa_ros.geometry import backproject_mask, depth_to_meters, transform_points
from lisa_ros.synthetic.scenes import ObjectMove, look_away_pans, make_scene

MIN_PIXELS = 150


def test_default_path_and_objects_are_unchanged_by_the_new_options():
    plain = make_scene(3, "train", 4, frames=6)
    zeros = make_scene(3, "train", 4, frames=6, pans=[0.0] * 6)
    assert all(np.array_equal(a, b) for a, b in zip(plain.poses, zeros.poses))
    assert plain.moves == () and plain.objects_at(5) == plain.objects
    turned = make_scene(3, "train", 4, frames=6, pans=look_away_pans(6, 1, 2), arc_deg=90.0)
    # Same objects and table from the same random stream; only the camera differs.
    assert turned.objects == plain.objects and turned.table_tint == plain.table_tint
    assert np.array_equal(turned.poses[0][:3, 3], make_scene(3, "train", 4, frames=6, arc_deg=90.0).poses[0][:3, 3])
    assert [round(p, 1) for p in look_away_pans(6, 1, 2)] == [0.0, 45.0, 100.0, 100.0, 45.0, 0.0]
    away = turned.render(2)
    assert (away.labels < 0).all() and (away.depth > 0).any()  # the floor: no object in view
    with pytest.raises(ValueError, match="one angle per view"):
        make_scene(3, "train", 4, frames=6, pans=[0.0] * 5)


def test_a_moved_object_is_rendered_at_its_new_place_from_its_frame_on():
    scene = make_scene(0, "train", 1, frames=4, categories=["ball", "mug"])
    ball, mug = scene.objects
    offset = (-np.sign(ball.position[0]) * 0.2, 0.0)
    if not scene.fits(0, (ball.position[0] + offset[0], ball.position[1], ball.position[2])):
        offset = (0.0, -np.sign(ball.position[1]) * 0.2)
    moved = scene.moved(0, offset, 2)
    assert moved.moves == (ObjectMove(2, 0, moved.objects_at(2)[0].position),) and scene.moves == ()
    assert moved.objects_at(1)[0] == ball and moved.objects_at(2)[1] == mug
    new_center, new_size = moved.objects_at(3)[0].box
    old_center, old_size = ball.box
    assert np.allclose(new_center - old_center, (*offset, 0.0)) and np.allclose(new_size, old_size)
    assert np.array_equal(moved.render(1).labels, scene.render(1).labels)
    view = moved.render(3)
    mask = view.labels == 0
    assert mask.sum() > MIN_PIXELS
    points = backproject_mask(mask, depth_to_meters(view.depth), moved.intrinsics, 0.05, 20.0)
    points = transform_points(points, view.pose)
    assert (np.abs(points - new_center) <= new_size / 2 + 1e-4).all()
    # Off the table or onto the mug: refused.
    with pytest.raises(ValueError, match="does not fit"):
        scene.moved(0, (2.0, 0.0), 2)
    with pytest.raises(ValueError, match="does not fit"):
        scene.moved(0, np.subtract(mug.position, ball.position)[:2], 2)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """The demo bag's first scene with the default frames and commands (the look-away and the move)."""
    pytest.importorskip("rosbags")
    from rosbags.rosbag2 import Reader

    from lisa_ros.synthetic.demo_bag import START_NS, TOPICS, record_demo_bag

    out = tmp_path_factory.mktemp("tracking") / "bag"
    summary = record_demo_bag(out, scenes=1)
    lines = [json.loads(line) for line in (out / "script.jsonl").read_text().splitlines()]
    entries = [line for line in lines if "command" in line]
    objects = {line["object_id"]: line for line in lines if "command" not in line}
    with Reader(out / "bag") as reader:
        stamps = [t for c, t, _ in reader.messages() if c.topic == TOPICS["image"]]
    times = [round((t - START_NS) / 1e9, 6) for t in stamps]
    scene_json = json.loads((out / "scene.json").read_text())
    return {"out": out, "summary": summary, "entries": entries, "objects": objects, "times": times,
            "scene": scene_json["scenes"][0]}


def _pixels(out, name) -> int:
    import cv2

    mask = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (240, 320) and set(np.unique(mask)) <= {0, 255}
    return int((mask > 0).sum())


def _replayed_scene(bag):
    """The bag's scene rebuilt from the public scene API: the bag's camera path, the moves of scene.json."""
    from lisa_ros.synthetic.demo_bag import ARC_DEG, LOOK_AWAY_FRAMES, LOOK_AWAY_START

    frames = bag["summary"]["frames"]
    second = bag["entries"][1]["frame"]  # the look-away happens in the second command's slot
    pans = look_away_pans(frames, second + LOOK_AWAY_START, LOOK_AWAY_FRAMES)
    scene = make_scene(0, "test", 0, frames=frames, arc_deg=ARC_DEG, pans=pans)
    for obj in bag["scene"]["objects"]:
        for move in obj["moves"]:
            index = int(obj["object_id"].rsplit("/", 1)[1])
            scene = scene.moved(index, np.subtract(move["position"], obj["position"])[:2], move["frame"])
    return scene


def test_each_command_is_tracked_over_every_later_frame_of_its_slot(bag):
    entries, times, out = bag["entries"], bag["times"], bag["out"]
    assert bag["summary"]["frames"] == len(times) == 40 and len(entries) == 4
    assert bag["summary"]["track_frames"] == sum(len(e["track"]) for e in entries)
    for number, entry in enumerate(entries):
        following = entries[number + 1]["frame"] if number + 1 < len(entries) else len(times) - 1
        assert following - entry["frame"] >= 9  # >= 8 images between two commands
        track = entry["track"]
        assert [t["frame"] for t in track] == list(range(entry["frame"] + 1, following + 1))
        for t in track:
            assert t["time"] == times[t["frame"]] and t["time"] > entry["time"]
            if number + 1 < len(entries):
                assert t["time"] < entries[number + 1]["time"]
            assert set(t["box"]) == {"center", "size"} and len(t["box"]["center"]) == 3
            if t["mask"] is not None:
                assert t["mask"] == f"masks/{number:03d}_{t['frame']:03d}.png" and _pixels(out, t["mask"]) > 0
        if "moved_at" not in entry:
            box = {"center": bag["objects"][entry["object_id"]]["center"],
                   "size": bag["objects"][entry["object_id"]]["size"]}
            assert all(t["box"] == box for t in track)


def test_track_masks_are_null_exactly_when_the_target_is_out_of_sight(bag):
    scene = _replayed_scene(bag)
    entries, out = bag["entries"], bag["out"]
    # Every null frame, and the frames around them and around the move: rendered again, they agree.
    moved = next(e for e in entries if "moved_at" in e)
    move_frame = bag["times"].index(moved["moved_at"])
    frames = {t["frame"] for e in entries for t in e["track"] if t["mask"] is None}
    frames |= {f + d for f in frames for d in (-1, 1)} | {move_frame - 1, move_frame, move_frame + 1}
    checked = 0
    for number, entry in enumerate(entries):
        target = int(entry["object_id"].rsplit("/", 1)[1])
        for t in entry["track"]:
            if t["frame"] not in frames:
                continue
            view = scene.render(t["frame"])
            labels = view.labels == target
            if t["mask"] is None:
                assert not labels.any()
            else:
                import cv2

                assert np.array_equal(cv2.imread(str(out / t["mask"]), cv2.IMREAD_UNCHANGED) > 0, labels)
            center, size = scene.objects_at(t["frame"])[target].box
            assert t["box"] == {"center": [round(float(v), 6) for v in center],
                                "size": [round(float(v), 6) for v in size]}
            checked += 1
    assert checked >= 8
    # The first image is the bag's (same path, same objects).
    assert bag["entries"][0]["frame"] == 0


def test_a_commanded_target_leaves_the_view_and_comes_back(bag):
    runs = []
    for entry in bag["entries"]:
        seen = [t["mask"] is not None for t in entry["track"]]
        if all(seen):
            continue
        first_out, last_out = seen.index(False), len(seen) - 1 - seen[::-1].index(False)
        # Visible at the command, lost for one stretch of 3-5 images, then back for the rest of the slot.
        assert not any(seen[first_out : last_out + 1])
        assert 3 <= last_out - first_out + 1 <= 5 and all(seen[last_out + 1 :]) and len(seen) - last_out - 1 >= 2
        assert all(_pixels(bag["out"], t["mask"]) >= MIN_PIXELS for t in entry["track"][last_out + 1 :])
        runs.append(entry["command"])
    assert len(runs) == 1 and runs[0] == bag["entries"][1]["command"]


def test_the_moved_target_box_follows_it_and_its_mask_agrees(bag):
    entries, out = bag["entries"], bag["out"]
    moved = [e for e in entries if "moved_at" in e]
    assert len(moved) == 1
    entry = moved[0]
    at = entry["moved_at"]
    before = [t for t in entry["track"] if t["time"] < at]
    after = [t for t in entry["track"] if t["time"] >= at]
    assert before and after and after[0]["time"] == at
    original = bag["objects"][entry["object_id"]]
    assert entry["box"] == {"center": original["center"], "size": original["size"]}
    assert all(t["box"] == entry["box"] for t in before)
    new_box = after[0]["box"]
    assert all(t["box"] == new_box for t in after)
    shift = np.subtract(new_box["center"], original["center"])
    assert 0.19 <= np.hypot(*shift[:2]) <= 0.31 and abs(shift[2]) < 1e-6 and new_box["size"] == original["size"]
    # Visible just before and at the move.
    assert _pixels(out, before[-1]["mask"]) >= MIN_PIXELS and _pixels(out, after[0]["mask"]) >= MIN_PIXELS
    # scene.json has the second pose; the moved object is asked for by no later command.
    obj = next(o for o in bag["scene"]["objects"] if o["object_id"] == entry["object_id"])
    assert [m["time"] for m in obj["moves"]] == [at] and obj["moves"][0]["box"] == new_box
    assert obj["moves"][0]["frame"] == after[0]["frame"]
    assert all(e["object_id"] != entry["object_id"] for e in entries if e["time"] > at)
    assert sum(bool(o["moves"]) for o in bag["scene"]["objects"]) == 1
    # The rendered label mask at the move lies in the new box, not the old one.
    scene = _replayed_scene(bag)
    view = scene.render(after[0]["frame"])
    target = int(entry["object_id"].rsplit("/", 1)[1])
    points = transform_points(
        backproject_mask(view.labels == target, depth_to_meters(view.depth), scene.intrinsics, 0.05, 20.0), view.pose
    )
    assert len(points) == _pixels(out, after[0]["mask"])
    assert (np.abs(points - new_box["center"]) <= np.asarray(new_box["size"]) / 2 + 1e-4).all()
    assert not (np.abs(points - original["center"]) <= np.asarray(original["size"]) / 2 + 1e-4).all(axis=1).all()


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
def test_the_rate_must_be_positive_and_finite(tmp_path, rate):
    from lisa_ros.synthetic.demo_bag import record_demo_bag

    with pytest.raises(ValueError, match="rate must be positive and finite"):
        record_demo_bag(tmp_path / "bag", rate_hz=rate)
