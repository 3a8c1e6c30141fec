"""The synthetic reasoning scenes (lisa_ros.synthetic.scenes), their training dataset and the demo bag."""

import json
import math
import pickle
import re

import numpy as np
import pytest

from lisa_model.processing.tokenization import SEG_TOKEN
from lisa_ros.geometry import CameraIntrinsics, backproject_mask, depth_to_meters, look_at, transform_points
from lisa_ros.synthetic.catalogue import CATEGORIES, SceneObject
from lisa_ros.synthetic.intents import INTENTS, TEMPLATE_FIELDS, Extreme, OnlyOne
from lisa_ros.synthetic.scenes import DEMO_INTRINSICS, TABLE_HEIGHT, DemoScene, make_scene, vocabulary_corpus
from training.data.demo_scenes import DemoScenesDataset

# A camera whose optical axis goes through the centre of pixel (120, 160).
CENTRED = CameraIntrinsics(260.0, 260.0, 160.0, 120.0, 320, 240)


def _single(category, position=(0.0, 0.0), yaw=0.0, scale=1.0, height_above=0.5):
    obj = SceneObject(0, category, (position[0], position[1], TABLE_HEIGHT), yaw, scale)
    center, size = obj.box
    top = center[2] + size[2] / 2
    eye = (center[0], center[1], top + height_above)
    pose = look_at(eye, (center[0], center[1], 0.0), up=(0.0, 1.0, 0.0))
    return DemoScene("test", [obj], np.zeros(3), [pose], CENTRED), obj


def test_sphere_mask_area_and_centre_depth_match_the_analytic_values():
    scene, obj = _single("ball")
    radius = CATEGORIES["ball"].parts[0].dims[0]
    center = np.asarray(obj.box[0])
    frame = scene.render(0)
    distance = frame.pose[2, 3] - center[2]
    # Depth at the principal point: the sphere's top, distance - radius.
    assert frame.depth[120, 160] == pytest.approx(distance - radius, abs=1e-5)
    assert frame.labels[120, 160] == 0
    # The silhouette is a disc of radius f r / sqrt(D^2 - r^2) pixels.
    rho = CENTRED.fx * radius / math.sqrt(distance**2 - radius**2)
    area = int((frame.labels == 0).sum())
    assert abs(area - math.pi * rho**2) < 2 * math.pi * rho * 0.6
    assert frame.rgb.dtype == np.uint8 and frame.rgb.shape == (240, 320, 3)


def test_box_top_seen_from_above_has_the_analytic_area_and_constant_depth():
    scene, obj = _single("sponge")  # one box of half size (0.055, 0.038, 0.02), yaw 0
    half = CATEGORIES["sponge"].parts[0].dims
    frame = scene.render(0)
    mask = frame.labels == 0
    top_depth = 0.5  # the camera is `height_above` over the top face
    assert np.allclose(frame.depth[mask], top_depth, atol=1e-5)
    expected = (CENTRED.fx * 2 * half[0] / top_depth) * (CENTRED.fy * 2 * half[1] / top_depth)
    width, height = CENTRED.fx * 2 * half[0] / top_depth, CENTRED.fy * 2 * half[1] / top_depth
    assert abs(mask.sum() - expected) <= 2 * (width + height)
    # The sponge's top is painted green, its sides yellow: seen from above, all green-ish.
    assert (frame.rgb[mask][:, 1] > frame.rgb[mask][:, 0]).all()


def _signed_distance(primitive, points):
    """Signed distance (approximate off the surface, 0 on it) of world points to a primitive."""
    local = (points - np.asarray(primitive.center)) @ primitive.R
    if primitive.kind == "box":
        return (np.abs(local) - np.asarray(primitive.dims)).max(axis=1)
    if primitive.kind == "cylinder":
        radius, half = primitive.dims
        return np.maximum(np.hypot(local[:, 0], local[:, 1]) - radius, np.abs(local[:, 2]) - half)
    return np.linalg.norm(local, axis=1) - primitive.dims[0]


@pytest.fixture(scope="module")
def scenes():
    """Scenes that hold every category between them (with random yaws)."""
    names = sorted(CATEGORIES)
    return [make_scene(1, "train", 2, frames=3, categories=names[i : i + 4 + (i == 12)]) for i in (0, 4, 8, 12)]


def test_masks_are_consistent_with_depth_and_boxes(scenes):
    checked = set()
    for scene in scenes:
        for index in (0, 2):
            frame = scene.render(index)
            depth = depth_to_meters(frame.depth)
            assert np.isfinite(depth[frame.labels >= 0]).all()
            for obj in scene.objects:
                mask = frame.labels == obj.index
                if not mask.any():
                    continue
                checked.add(obj.category)
                points = transform_points(backproject_mask(mask, depth, scene.intrinsics, 0.05, 20.0), frame.pose)
                assert len(points) == mask.sum()
                center, size = obj.box
                assert (np.abs(points - center) <= size / 2 + 1e-4).all(), obj.category
                # Every point lies on the surface of the object's primitives (and inside none).
                sdf = np.stack([_signed_distance(p, points) for p in obj.primitives])
                assert (np.abs(sdf).min(axis=0) < 1e-4).all() and (sdf > -1e-4).all(), obj.category
            # Pixels of no object lie outside every object box (floor, wall, table).
            rest = (frame.labels < 0) & np.isfinite(depth)
            points = transform_points(backproject_mask(rest, depth, scene.intrinsics, 0.05, 20.0), frame.pose)
            for obj in scene.objects:
                center, size = obj.box
                inside = (np.abs(points - center) < size / 2 - 1e-3).all(axis=1)
                assert not inside.any()
    assert checked == set(CATEGORIES)


def test_scenes_and_frames_are_deterministic_per_seed():
    a, b = make_scene(5, "train", 7, frames=2), make_scene(5, "train", 7, frames=2)
    assert [(o.category, o.position, o.yaw, o.scale) for o in a.objects] == [
        (o.category, o.position, o.yaw, o.scale) for o in b.objects
    ]
    fa, fb = a.render(1), b.render(1)
    assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.depth, fb.depth)
    assert np.array_equal(fa.labels, fb.labels)
    assert [c.text for c in a.commands("train")] == [c.text for c in b.commands("train")]
    other = make_scene(6, "train", 7, frames=2)
    assert [(o.category, o.position) for o in other.objects] != [(o.category, o.position) for o in a.objects]
    d1, d2 = DemoScenesDataset("train", num_scenes=2, frames_per_scene=2, seed=5), DemoScenesDataset(
        "train", num_scenes=2, frames_per_scene=2, seed=5
    )
    s1, s2 = d1[3], d2[3]
    assert [t[0].user for t in s1.conversations] == [t[0].user for t in s2.conversations]
    assert all(np.array_equal(m1, m2) for m1, m2 in zip(s1.masks, s2.masks))


def test_held_out_split_is_disjoint_in_scenes_and_phrasings():
    train_phr = {t for i in INTENTS.values() for t in i.train}
    held_phr = {t for i in INTENTS.values() for t in i.heldout}
    assert train_phr and held_phr and not train_phr & held_phr
    layout = lambda s: tuple((o.category, round(o.position[0], 9), round(o.position[1], 9)) for o in s.objects)  # noqa: E731
    train = [make_scene(0, "train", i, frames=1) for i in range(40)]
    val = [make_scene(0, "val", i, frames=1) for i in range(40)]
    assert not {s.scene_id for s in train} & {s.scene_id for s in val}
    assert not {layout(s) for s in train} & {layout(s) for s in val}
    assert all(c.text in train_phr for s in train for c in s.commands("train"))
    assert all(c.text in held_phr for s in val for c in s.commands("heldout"))
    val_ds = DemoScenesDataset("val", num_scenes=1, frames_per_scene=2)
    assert all(m["query"] in held_phr for m in val_ds[0].meta["conversation_meta"])
    train_ds = DemoScenesDataset("train", num_scenes=1, frames_per_scene=2, word_dropout=0.0)
    assert all(m["query"] in train_phr for i in range(2) for m in train_ds[i].meta["conversation_meta"])


def test_word_dropout_leaves_out_words_of_a_training_phrasing():
    def is_subsequence(short, long):
        words = iter(long)
        return all(word in words for word in short)

    dataset = DemoScenesDataset("train", num_scenes=4, frames_per_scene=2, word_dropout=0.5)
    queries = [m for i in range(len(dataset)) for m in dataset[i].meta["conversation_meta"]]
    shortened = 0
    for meta in queries:
        phrasings = [text.split() for text in INTENTS[meta["intent"]].train]
        assert any(is_subsequence(meta["query"].split(), words) for words in phrasings), meta["query"]
        assert len(meta["query"].split()) >= 2
        shortened += meta["query"] not in INTENTS[meta["intent"]].train
    assert shortened > len(queries) // 4


def test_held_out_phrasings_reuse_words_of_their_intents_training_phrasings():
    # The demo model learns language from these commands alone: a held-out phrasing is a new
    # sentence, but its key words must be ones the training phrasings of that intent teach.
    words = lambda text: set(re.findall(r"[a-z]{4,}", text.lower()))  # noqa: E731
    for name, intent in INTENTS.items():
        taught = set().union(*map(words, intent.train))
        for text in intent.heldout:
            assert words(text) & taught, (name, text)


def test_intents_are_data_whose_templates_use_known_fields():
    from string import Formatter

    for intent in INTENTS.values():
        assert isinstance(intent.rule, (OnlyOne, Extreme)), intent.key
        templates = [intent.explanation] if isinstance(intent.explanation, str) else intent.explanation.values()
        for template in templates:
            assert {name for _, name, _, _ in Formatter().parse(template) if name} <= set(TEMPLATE_FIELDS)
    place = (0.0, 0.0, TABLE_HEIGHT)
    ball, lemon, kiwi = (SceneObject(i, name, place, 0.0, 1.0) for i, name in enumerate(("ball", "lemon", "kiwi")))
    objects = [ball, lemon, kiwi]
    assert INTENTS["most_vitamin_c"].target(objects) == kiwi.index
    assert INTENTS["least_vitamin_c"].target(objects) == lemon.index
    assert INTENTS["rolls"].target(objects) is None  # three round objects: no single answer
    assert INTENTS["most_vitamin_c"].explain(kiwi, objects) == (
        "The kiwi has the most vitamin C of the food here, about 93 mg per 100 g, more than the lemon."
    )
    # A template is undefined for an object without its fields (a ball has no vitamin C) or category.
    assert INTENTS["most_vitamin_c"].explain(ball, objects) is None
    assert INTENTS["cut_paper"].explain(ball, objects) is None


def test_every_command_target_exists_satisfies_its_intent_and_has_the_object_box():
    seen = set()
    for i in range(60):
        scene = make_scene(1, "train", i, frames=1)
        objects = scene.objects
        # Objects rest on the table without overlapping.
        for o in objects:
            center, size = o.box
            assert center[2] - size[2] / 2 == pytest.approx(TABLE_HEIGHT, abs=1e-9)
        for command in scene.commands("all"):
            seen.add(command.intent)
            target = objects[command.target]
            assert target.index == command.target
            assert command.answer.startswith(SEG_TOKEN + " ") and target.category in command.explanation
            foods = [o for o in objects if CATEGORIES[o.category].food]
            if command.intent == "most_vitamin_c":
                assert CATEGORIES[target.category].vitamin_c == max(CATEGORIES[o.category].vitamin_c for o in foods)
            elif command.intent == "least_vitamin_c":
                assert CATEGORIES[target.category].vitamin_c == min(CATEGORIES[o.category].vitamin_c for o in foods)
            elif command.intent == "cut_paper":
                assert target.category in ("scissors", "knife")
            elif command.intent == "rolls":
                assert [o.index for o in objects if CATEGORIES[o.category].round] == [target.index]
            elif command.intent == "tallest":
                assert all(o.height < target.height for o in objects if o is not target)
            # The box is the object's pose: spheres exactly, others around the footprint centre.
            center, size = target.box
            part = CATEGORIES[target.category].parts[0]
            if len(CATEGORIES[target.category].parts) == 1 and part.kind == "sphere":
                r = part.dims[0] * target.scale
                assert np.allclose(center, np.add(target.position, (0, 0, r)))
                assert np.allclose(size, 2 * r)
            assert np.linalg.norm(center[:2] - np.asarray(target.position[:2])) <= CATEGORIES[
                target.category
            ].footprint_radius * target.scale
    assert {"cut_paper", "most_vitamin_c", "rolls", "food_scraps", "tallest"} <= seen


def test_render_all_fills_the_cache_with_the_same_frames():
    lazy = DemoScenesDataset("train", num_scenes=2, frames_per_scene=2, seed=3)
    eager = DemoScenesDataset("train", num_scenes=2, frames_per_scene=2, seed=3, cache_frames=4)
    eager.render_all(processes=2, progress=False)
    assert len(eager._cache) == 4
    for index in range(4):
        a, b = lazy.frame(index), eager._cache[index]
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth) and np.array_equal(a.labels, b.labels)
    with pytest.raises(ValueError, match="cache_frames"):
        DemoScenesDataset("train", num_scenes=2, frames_per_scene=2, cache_frames=3).render_all(progress=False)


def test_samples_have_one_mask_per_seg_and_visible_targets():
    for split in ("train", "val"):
        dataset = DemoScenesDataset(split, num_scenes=2, frames_per_scene=2, seed=0, min_visible_pixels=50)
        assert len(dataset) == 4
        for index in range(len(dataset)):
            sample = dataset[index]
            sample.validate()
            assert sample.image.shape == (DEMO_INTRINSICS.height, DEMO_INTRINSICS.width, 3)
            assert sample.conversations
            for turns, masks, info in zip(sample.conversations, sample.masks, sample.meta["conversation_meta"]):
                assert sum(t.assistant.count(SEG_TOKEN) for t in turns) == masks.shape[0] == 1
                assert masks[0].sum() >= 50 and set(np.unique(masks)) <= {0, 1}
                assert info["query"] in turns[0].user
            if split == "val":
                assert all(t[0].assistant == "[SEG]." for t in sample.conversations)
        assert pickle.loads(pickle.dumps(dataset))[0].meta == dataset[0].meta  # DataLoader workers
    corpus = vocabulary_corpus()
    assert any("vitamin C" in text for text in corpus) and "something to cut paper with" in corpus


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_demo_bag_is_written_and_readable(tmp_path, storage, capsys):
    pytest.importorskip("rosbags")
    import cv2
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from lisa_ros.cli.demo_bag import main
    from lisa_ros.synthetic.demo_bag import ARC_DEG, START_NS, TOPICS, record_demo_bag

    out = tmp_path / "demo"
    summary = record_demo_bag(out, scenes=2, frames_per_scene=3, storage=storage, depth_encoding="32FC1")
    assert summary["frames"] == 6 and summary["commands"] >= 2
    with pytest.raises(FileExistsError):
        record_demo_bag(out, scenes=1, frames_per_scene=1, storage=storage)
    lines = [json.loads(line) for line in (out / "script.jsonl").read_text().splitlines()]
    objects = {line["object_id"]: line for line in lines if "command" not in line}
    entries = [line for line in lines if "command" in line]
    assert len(entries) == summary["commands"] and len(objects) >= 2 * 4

    store = get_typestore(Stores.ROS2_KILTED)
    with Reader(out / "bag") as reader:
        assert {c.topic for c in reader.connections} == set(TOPICS.values())
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts[TOPICS["image"]] == counts[TOPICS["depth"]] == counts[TOPICS["pose"]] == 6
        assert counts[TOPICS["command"]] == len(entries)
        stamps, images, commands = [], [], []
        for connection, timestamp, raw in reader.messages():
            stamps.append(timestamp)
            msg = store.deserialize_cdr(raw, connection.msgtype)
            if connection.topic == TOPICS["image"]:
                images.append((timestamp, msg))
            elif connection.topic == TOPICS["command"]:
                commands.append((timestamp, msg.data))
            elif connection.topic == TOPICS["depth"]:
                assert msg.encoding == "32FC1"
            elif connection.topic == TOPICS["camera_info"]:
                assert list(msg.k) == pytest.approx(list(DEMO_INTRINSICS.matrix().ravel()))
        assert stamps == sorted(stamps) and stamps[0] == START_NS == reader.start_time
    # Image stamps match the header, and the first image is the first frame's rendering.
    timestamp, first = images[0]
    assert first.header.stamp.sec * 10**9 + first.header.stamp.nanosec == timestamp
    # The default split: held out from training and model selection; the bag's wider arc.
    scene = make_scene(0, "test", 0, frames=3, arc_deg=ARC_DEG)
    assert np.array_equal(first.data.reshape(240, 320, 3), scene.render(0).rgb)
    # Script: commands in order, times within the bag, masks on disk, boxes of real objects.
    scene_json = json.loads((out / "scene.json").read_text())
    boxes = {o["object_id"]: o["box"] for s in scene_json["scenes"] for o in s["objects"]}
    for entry, (timestamp, text) in zip(entries, commands):
        assert entry["command"] == text
        assert entry["time"] == pytest.approx((timestamp - START_NS) / 1e9)
        assert 0 <= entry["time"] <= summary["duration_s"]
        mask = cv2.imread(str(out / entry["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (240, 320) and (mask > 0).sum() >= 150
        assert boxes[entry["object_id"]] == entry["box"]
        target = objects[entry["object_id"]]
        assert {"center": target["center"], "size": target["size"]} == entry["box"]
        assert target["category"] == entry["category"]
        # Three frames a scene: one command at the first, tracked over the two others.
        assert [t["frame"] for t in entry["track"]] == [entry["frame"] + 1, entry["frame"] + 2]
        assert "moved_at" not in entry
    if storage == "mcap":
        assert main(["--output", str(out), "--scenes", "1", "--frames", "2"]) == 2  # exists, no --overwrite
        capsys.readouterr()
        assert main(["--output", str(out), "--scenes", "1", "--frames", "2", "--overwrite"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["frames"] == 2 and printed["counts"][TOPICS["image"]] == 2
