"""lisa_ros.bag (evaluate, lisa-eval-bag): the node's pipeline over rosbag2 files (mcap and sqlite3), offline.

The bags are written here with rosbags: a 64x64 squares image (tests.helpers.model.squares_scene) with
depth (a box face 0.8 m away under the red square, the table plane at 1.0 m) and
camera_info (fx = fy = 80, cx = cy = 32), a few frames, commands on /command or in a
script with ground truth. The model is conftest's `trained_tiny` (saved as a checkpoint,
as tests/ros/test_node_3d.py does), so the answers carry real masks.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape

from lisa_model.metrics import SegmentationMeter, mask_iou
from lisa_ros.bag.runner import evaluate
from lisa_ros.bag.typestore import build, typestore
from lisa_ros.cli.eval_bag import main
from lisa_ros.geometry import box_iou_3d
from tests.helpers.model import squares_scene

pytestmark = pytest.mark.timeout(300)

SIZE, FX, FY, CX, CY = 64, 80.0, 80.0, 32.0, 32.0
PLANE, FACE = 1.0, 0.8
RED_AT, BLUE_AT, SIDE = (8, 8), (36, 36), 16
START = 1_700_000_000 * 10**9  # the bag's first log time, ns
FRAME_TIMES = (0.0, 0.5, 1.0, 1.5)  # seconds from START
COMMANDS = ((0.25, "segment the red square"), (0.75, "segment the blue square"), (1.25, "what colour is the table?"))
PARAMS = {"max_new_tokens": 8, "keep_conversation": False, "device": "cpu", "voxel_size": 0.005}


def ns(seconds: float) -> int:
    return START + round(seconds * 1e9)


@pytest.fixture(scope="module")
def store():
    return typestore()


@pytest.fixture(scope="module")
def params(trained_tiny_checkpoint):
    """Node parameters naming the trained tiny model saved as a checkpoint."""
    model_path, clip_path = trained_tiny_checkpoint
    return dict(PARAMS, model_path=str(model_path), vision_tower_path=str(clip_path))


def depth_meters() -> np.ndarray:
    depth = np.full((SIZE, SIZE), PLANE, np.float32)
    depth[RED_AT[0] : RED_AT[0] + SIDE, RED_AT[1] : RED_AT[1] + SIDE] = FACE
    return depth


def header(seconds, frame="camera"):
    return {"stamp": {"sec": ns(seconds) // 10**9, "nanosec": ns(seconds) % 10**9}, "frame_id": frame}


def write_bag(path, store, storage="mcap", *, commands=COMMANDS, compressed=False, image_topic="/image",
              tf=None, extra=()):  # fmt: skip
    """A rosbag2 with image, depth, camera_info (and commands, /tf_static, extra messages); returns its path."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from lisa_ros.runtime import codec

    rgb, _ = squares_scene(RED_AT, BLUE_AT)
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    writer.open()
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    connections = {
        "image": writer.add_connection(image_topic, image_type, typestore=store),
        "depth": writer.add_connection("/depth", "sensor_msgs/msg/Image", typestore=store),
        "info": writer.add_connection("/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store),
    }
    if commands:
        connections["command"] = writer.add_connection("/command", "std_msgs/msg/String", typestore=store)
    if tf is not None:
        connections["tf"] = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=store)
    messages = []
    if tf is not None:
        messages.append((0.0, "tf", "tf2_msgs/msg/TFMessage", tf))
    for t in FRAME_TIMES:
        if compressed:
            fmt, data = codec.encode_compressed(rgb, "png")
            image = {"header": header(t), "format": fmt, "data": data}
        else:
            image = {"header": header(t), **codec.rgb_to_image_fields(rgb, "rgb8")}
        depth = {"header": header(t), **codec.rgb_to_image_fields(depth_meters(), "32FC1")}
        info = {"header": header(t), "height": SIZE, "width": SIZE, "distortion_model": "plumb_bob",
                "k": [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]}  # fmt: skip
        messages += [(t, "depth", "sensor_msgs/msg/Image", depth), (t, "info", "sensor_msgs/msg/CameraInfo", info)]
        messages.append((t + 1e-6, "image", image_type, image))
    for t, text in commands or ():
        messages.append((t, "command", "std_msgs/msg/String", {"data": text}))
    messages += list(extra)
    for t, key, msgtype, values in sorted(messages, key=lambda m: m[0]):
        writer.write(connections[key], ns(t), store.serialize_cdr(build(store, msgtype, values), msgtype))
    writer.close()
    return Path(path)


def read_bag(path, store):
    """{topic: [(log time, message)]} of a rosbag2, and its storage (mcap or sqlite3)."""
    from rosbags.rosbag2 import Reader

    topics = {}
    with Reader(path) as reader:
        for connection, log_time, raw in reader.messages():
            topics.setdefault(connection.topic, []).append((log_time, raw, connection.msgtype))
    storage = "mcap" if any(Path(path).glob("*.mcap")) else "sqlite3"
    return topics, storage


def decoded(topics, topic, store):
    return [(t, store.deserialize_cdr(raw, msgtype)) for t, raw, msgtype in topics.get(topic, [])]


def union_mask(result_msg) -> np.ndarray:
    masks = [np.asarray(m.data).reshape(m.height, m.step)[:, : m.width] > 0 for m in result_msg.masks]
    return np.any(masks, axis=0) if masks else np.zeros((SIZE, SIZE), bool)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip(tmp_path, store, params, storage):
    bag = write_bag(tmp_path / "in", store, storage)
    evaluation = evaluate(bag, tmp_path / "out", params, progress=False)
    topics_in, _ = read_bag(bag, store)
    topics_out, storage_out = read_bag(tmp_path / "out" / "bag", store)
    assert storage_out == storage

    # Every input message is copied through, byte for byte, at its log time.
    for topic, messages in topics_in.items():
        assert [(t, bytes(raw)) for t, raw, _ in topics_out[topic]] == [(t, bytes(raw)) for t, raw, _ in messages]

    # Every command has its result, in order, at the command's time, answered on the newest frame.
    results = decoded(topics_out, "/lisa/result", store)
    assert [(t, r.command_id, r.command) for t, r in results] == [
        (ns(t), index, text) for index, (t, text) in enumerate(COMMANDS, 1)
    ]
    for (t, text), (_, result) in zip(COMMANDS, results):
        newest = max(f for f in FRAME_TIMES if f <= t)
        assert result.header.stamp.sec * 10**9 + result.header.stamp.nanosec == ns(newest)
        assert result.status != 2, result.error_message
    red, blue, table = (r for _, r in results)
    assert red.status == 0 and len(red.masks) == 1 and "[SEG]" in red.answer
    assert blue.status == 0 and len(blue.masks) == 1
    assert table.status == 1 and len(table.masks) == 0
    _, masks = squares_scene(RED_AT, BLUE_AT)
    assert mask_iou(union_mask(red), masks["red"].astype(np.uint8)) > 0.7
    assert mask_iou(union_mask(blue), masks["blue"].astype(np.uint8)) > 0.7

    # The 3D outputs: the red square's region on the box face, in the camera frame.
    assert len(red.centroids) == 1 and red.region_frame == "camera" and red.region_status == ""
    assert abs(red.centroids[0].z - FACE) < 0.01
    # Every answered command also gets the node's other outputs, and so does every image its
    # live target is tracked on (the red square at 0.5 s, the blue one at 1.0 s; the table's
    # answer has no target and ends the blue one).
    assert len(topics_out["/lisa/explanation"]) == 3
    times = [ns(t) for t in (0.25, 0.5 + 1e-6, 0.75, 1.0 + 1e-6, 1.25)]
    for name in ("mask", "overlay", "target_cloud", "markers"):
        assert [t for t, _, _ in topics_out[f"/lisa/{name}"]] == times, name
    targets = decoded(topics_out, "/lisa/targets", store)
    targets = [(t, [(x.id, x.status, x.command) for x in m.targets]) for t, m in targets]
    assert targets == [
        (ns(0.25), [(1, 0, "segment the red square")]),
        (ns(0.5 + 1e-6), [(1, 0, "segment the red square")]),
        (ns(0.75), [(1, 3, "segment the red square"), (2, 0, "segment the blue square")]),
        (ns(1.0 + 1e-6), [(2, 0, "segment the blue square")]),
        (ns(1.25), [(2, 3, "segment the blue square")]),
    ]
    assert [m.data for _, m in decoded(topics_out, "/lisa/explanation", store)] == [r.answer for _, r in results]
    cloud = decoded(topics_out, "/lisa/target_cloud", store)[0][1]
    assert cloud.width == red.point_counts[0] or cloud.width > 0
    assert [m.type for m in decoded(topics_out, "/lisa/markers", store)[0][1].markers] == [0, 1, 2, 9]

    counts = evaluation.metrics["counts"]
    assert (counts["frames"], counts["commands"], counts["answers"], counts["errors"]) == (4, 3, 3, 0)
    assert (counts["ok"], counts["no_target"]) == (2, 1)
    assert (counts["answers_truncated"], counts["conversation_resets"]) == (0, 0)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["complete"] is True and metrics["stopped_by"] is None and evaluation.stopped_by is None
    assert metrics["segmentation_2d"] is None and metrics["regions_3d"] is None  # no ground truth
    for stage, count in (("total", 3), ("prefill", 3), ("mask_decoder", 2), ("regions", 3)):
        stats = metrics["latency_s"][stage]  # the mask decoder runs for the two answers with a [SEG] only
        assert stats["count"] == count and 0 <= stats["median"] <= stats["p90"] <= stats["max"], stage
    report = (tmp_path / "out" / "report.html").read_text()
    assert "segment the red square" in report and escape(red.answer) in report  # autoescaped
    for item in ("overlays/command_0001.png", "latency_total.png", "latency_stages.png"):
        assert item in report and (tmp_path / "out" / item).is_file()


def test_script_ground_truth_and_metrics(tmp_path, store, params):
    """Commands from a YAML script with a mask file, a polygon and 3D boxes; mcap in,
    sqlite3 out; the metrics equal lisa_model.metrics / box_iou_3d on the bag's answers."""
    from PIL import Image

    bag = write_bag(tmp_path / "in", store, "mcap", commands=())
    _, masks = squares_scene(RED_AT, BLUE_AT)
    Image.fromarray(masks["red"].astype(np.uint8) * 255).save(tmp_path / "red.png")
    x, y = BLUE_AT[1], BLUE_AT[0]
    blue_polygon = [[x, y], [x + SIDE - 1, y], [x + SIDE - 1, y + SIDE - 1], [x, y + SIDE - 1]]
    face = np.array(
        [(RED_AT[1] + SIDE / 2 - 0.5 - CX) * FACE / FX, (RED_AT[0] + SIDE / 2 - 0.5 - CY) * FACE / FY, FACE]
    )
    script = tmp_path / "script.yaml"
    script.write_text(
        json.dumps(
            {
                "objects": {"red_box": {"center": face.tolist(), "size": [0.16, 0.16, 0.01]}},
                "commands": [
                    {"time": 0.2, "command": "segment the red square", "mask": "red.png", "object_id": "red_box"},
                    {"time": 0.6, "command": "segment the blue square", "polygon": blue_polygon},
                    {"time": 1.5, "command": "what colour is the table?", "polygon": blue_polygon,
                     "box": {"center": [0, 0, 1], "size": [0.1, 0.1, 0.1]}},  # fmt: skip
                ],
            }
        )
    )
    evaluation = evaluate(bag, tmp_path / "out", params, script=script, output_format="sqlite3", progress=False)
    topics_out, storage = read_bag(tmp_path / "out" / "bag", store)
    assert storage == "sqlite3"
    assert len(topics_out["/image"]) == len(FRAME_TIMES)
    results = [r for _, r in decoded(topics_out, "/lisa/result", store)]
    assert [r.command for r in results] == [
        "segment the red square",
        "segment the blue square",
        "what colour is the table?",
    ]
    assert [t for t, _ in decoded(topics_out, "/lisa/result", store)] == [ns(0.2), ns(0.6), ns(1.5)]

    # 2D: recomputed from the output bag's masks with lisa_model.metrics.
    truths = [masks["red"], masks["blue"], masks["blue"]]
    meter = SegmentationMeter()
    for result, truth in zip(results, truths):
        meter.update(union_mask(result), truth.astype(np.uint8))
    got = evaluation.metrics["segmentation_2d"]
    assert got["count"] == 3 and got["giou"] == pytest.approx(meter.giou, abs=1e-12)
    assert got["ciou"] == pytest.approx(meter.ciou, abs=1e-12)
    assert 0.4 < got["giou"] < 0.95  # two good masks, one "no target" against a blue truth
    ious = [c["iou"] for c in evaluation.metrics["commands"]]
    assert ious[2] == 0.0 and ious[0] > 0.7

    # 3D: box IoU of the region's points' axis-aligned box (grown by a voxel), centroid error from the result.
    red = results[0]
    points = np.frombuffer(bytes(decoded(topics_out, "/lisa/target_cloud", store)[0][1].data), "<f4").reshape(-1, 3)
    low, high = points.min(axis=0), points.max(axis=0)
    expected_iou = box_iou_3d((low + high) / 2, high - low + PARAMS["voxel_size"], face, [0.16, 0.16, 0.01])
    regions = evaluation.metrics["regions_3d"]
    assert regions["count"] == 2 and regions["without_region"] == 1  # the table answer has no region
    commands = evaluation.metrics["commands"]
    assert commands[0]["box_iou_3d"] == pytest.approx(expected_iou, abs=1e-5) and expected_iou > 0.2
    centroid = np.array([red.centroids[0].x, red.centroids[0].y, red.centroids[0].z])
    assert commands[0]["centroid_error_m"] == pytest.approx(float(np.linalg.norm(centroid - face)), abs=1e-9)
    assert regions["mean_box_iou"] == pytest.approx(expected_iou / 2, abs=1e-5)
    assert (tmp_path / "out" / "overlays" / "command_0003.png").is_file()


def test_jsonl_script_compressed_images_and_tf(tmp_path, store, params):
    """CompressedImage input (sqlite3), a JSONL script, regions in a target frame through /tf_static."""
    from lisa_ros.runtime.message_fields import matrix_from_pose

    quaternion = (0.0, 0.0, float(np.sin(np.pi / 8)), float(np.cos(np.pi / 8)))
    transform = {
        "header": header(0.0, "map"),
        "child_frame_id": "camera",
        "transform": {"translation": {"x": 1.0, "y": -2.0, "z": 0.5},
                      "rotation": dict(zip("xyzw", quaternion))},  # fmt: skip
    }
    bag = write_bag(tmp_path / "in", store, "sqlite3", commands=(), compressed=True, tf={"transforms": [transform]})
    script = tmp_path / "script.jsonl"
    script.write_text(
        '{"time": 0.1, "command": "segment the red square"}\n\n{"time": 1.4, "command": "segment both squares"}\n'
    )
    params = dict(params, target_frame="map", max_image_age=0.5)
    evaluation = evaluate(bag, tmp_path / "out", params, script=script, progress=False)
    results = [r for _, r in decoded(read_bag(tmp_path / "out" / "bag", store)[0], "/lisa/result", store)]
    assert [r.status for r in results] == [0, 0], [r.error_message for r in results]
    red = results[0]
    assert red.region_frame == "map" and red.region_status == ""
    camera_to_map = matrix_from_pose((1.0, -2.0, 0.5), quaternion)
    c = red.centroids[0]
    in_camera = (np.array([c.x, c.y, c.z]) - camera_to_map[:3, 3]) @ camera_to_map[:3, :3]
    assert abs(in_camera[2] - FACE) < 0.01
    assert len(results[1].masks) == 2
    assert evaluation.metrics["counts"]["frames"] == 4


def test_stale_frame_is_an_error_result(tmp_path, store, params):
    commands = ((0.0, "segment the red square"), (1.49, "segment the red square"))
    bag = write_bag(tmp_path / "in", store, "mcap", commands=commands)
    evaluation = evaluate(bag, tmp_path / "out", dict(params, max_image_age=0.2), progress=False)
    statuses = [(c["status"], c["error"]) for c in evaluation.metrics["commands"]]
    # At 0.0 s the command comes before the first image (log-time order: commands at equal times follow
    # the frames written before them; here the image is 1 us later): no image yet.
    assert statuses[0][0] == "ERROR" and "no image" in statuses[0][1]
    assert statuses[1][0] == "ERROR" and "no recent image" in statuses[1][1]
    assert evaluation.metrics["counts"]["errors"] == 2
    topics_out, _ = read_bag(tmp_path / "out" / "bag", store)
    assert len(topics_out["/lisa/result"]) == 2 and "/lisa/overlay" not in topics_out


# --- errors ------------------------------------------------------------------------------------


def run_main(capsys, *argv):
    code = main([str(a) for a in argv] + ["--no-progress"])
    return code, capsys.readouterr().err


def test_bad_inputs_fail_with_clear_messages(tmp_path, store, capsys):
    bag = write_bag(tmp_path / "in", store, "mcap")

    code, err = run_main(capsys, bag, "-o", tmp_path / "o1", "--image-topic", "/camera/color/image_raw")
    assert code == 2 and "no image topic /camera/color/image_raw" in err and "/image (sensor_msgs/msg/Image)" in err

    code, err = run_main(capsys, bag, "-o", tmp_path / "o2", "--depth-topic", "/aligned_depth")
    assert code == 2 and "no depth topic /aligned_depth" in err

    no_commands = write_bag(tmp_path / "quiet", store, "sqlite3", commands=())
    code, err = run_main(capsys, no_commands, "-o", tmp_path / "o3")
    assert code == 2 and "no command topic /command (and no --script was given)" in err

    code, err = run_main(capsys, bag, "-o", tmp_path / "o4", "--camera-info-topic", "/image")
    assert code == 2 and "/image (camera_info) is sensor_msgs/msg/Image, expected sensor_msgs/msg/CameraInfo" in err

    code, err = run_main(capsys, tmp_path / "missing_bag", "-o", tmp_path / "o5")
    assert code == 2 and "cannot read bag" in err and "missing_bag" in err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9, storage_identifier: mcap}\n")
    code, err = run_main(capsys, broken, "-o", tmp_path / "o6")
    assert code == 2 and "cannot read bag" in err

    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"not an mcap file at all")
    code, err = run_main(capsys, garbage, "-o", tmp_path / "o7")
    assert code == 2 and "cannot read bag" in err

    script = tmp_path / "late.yaml"
    script.write_text("- {time: 0.5, command: fine}\n- {time: 7.5, command: too late}\n- {time: -1, command: early}\n")
    code, err = run_main(capsys, bag, "-o", tmp_path / "o8", "--script", script)
    assert code == 2 and "2 command(s) at times outside the bag (0 to 1.500 s" in err and "'too late'" in err

    for text, fragment in (
        ("- {command: no time}\n", "entry 1: each entry needs 'time'"),
        ("- {time: soon, command: x}\n", "time must be a number"),
        ("- {time: 0.1, command: x, mask: nowhere.png}\n", "nowhere.png does not exist"),
        ("- {time: 0.1, command: x, polygon: [[1, 2]]}\n", "polygon must be a list of at least 3"),
        ("- {time: 0.1, command: x, object_id: 7}\n", "object_id '7' is not among the script's objects"),
        ("- {time: 0.1, command: x, box: {center: [1, 2]}}\n", "a box needs center"),
        ("[unclosed\n", "cannot parse script"),
    ):
        script.write_text(text)
        code, err = run_main(capsys, bag, "-o", tmp_path / "o9", "--script", script)
        assert code == 2 and fragment in err, (text, err)

    code, err = run_main(capsys, bag, "-o", tmp_path / "o10", "--script", tmp_path / "none.yaml")
    assert code == 2 and "cannot read script" in err

    code, err = run_main(capsys, bag, "-o", tmp_path / "o11", "-p", "max_image_age:=soon")
    assert code == 2 and "max_image_age" in err

    code, err = run_main(capsys, bag, "-o", tmp_path / "o12", "--model-path", tmp_path / "no_model")
    assert code == 2 and "cannot load the model" in err

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, err = run_main(capsys, bag, "-o", tmp_path / "full")
    assert code == 2 and "exists and is not empty" in err


def test_unusable_output_is_one_line_before_the_model_loads(tmp_path, store, capsys, monkeypatch):
    """An output that is a file or cannot be created: one line naming it, status 2, nothing loaded
    (the missing model is never reached); --debug or LISA_DEBUG=1 adds the traceback."""
    bag = write_bag(tmp_path / "in", store, "mcap")
    afile = tmp_path / "afile"
    afile.write_text("x")
    no_model = ("--model-path", tmp_path / "no_model")
    for output, fragment in (
        (afile, f"output {afile} is a file, not a folder"),
        (afile / "out", f"cannot write the output folder {afile / 'out'}: Not a directory"),
    ):
        code, err = run_main(capsys, bag, "-o", output, *no_model)
        assert code == 2 and err == f"lisa-eval-bag: error: {fragment}\n", err

    code, err = run_main(capsys, bag, "-o", afile, *no_model, "--debug")
    assert code == 2 and "Traceback (most recent call last)" in err and "_prepare_output" in err
    assert err.endswith(f"lisa-eval-bag: error: output {afile} is a file, not a folder\n")
    monkeypatch.setenv("LISA_DEBUG", "1")
    code, err = run_main(capsys, tmp_path / "missing_bag", "-o", tmp_path / "o")
    assert code == 2 and "Traceback" in err and err.endswith(
        f"lisa-eval-bag: error: cannot read bag {tmp_path / 'missing_bag'}: "
        f"FileNotFoundError: File '{tmp_path / 'missing_bag'}' does not exist.\n"
    )


def test_demo_bag_errors_are_one_line(tmp_path, capsys):
    """lisa-demo-bag with an output that is a file or a folder under one: one line, status 2."""
    from lisa_ros.cli.demo_bag import main as demo_bag

    afile = tmp_path / "afile"
    afile.write_text("x")
    for output in (afile, afile / "out"):
        code = demo_bag(["--output", str(output), "--scenes", "1", "--frames", "2"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("lisa-demo-bag: error: ") and err.count("\n") == 1, err
        assert str(afile) in err and "Not a directory" in err


def test_truncated_answers_and_conversation_resets_are_counted(tmp_path):
    """metrics.json's counts and rows and report.html count and mark the results' flags."""
    from lisa_ros.bag.metrics import Answer, compute_metrics
    from lisa_ros.bag.report import write_report
    from lisa_ros.bag.runner import Evaluation
    from lisa_ros.cli.eval_bag import summary
    from lisa_ros.runtime.types import Result, Status

    image, masks = squares_scene(RED_AT, BLUE_AT)

    def answer(command_id, **flags):
        result = Result(command_id, "segment the red square", ns(0.5), status=Status.OK, answer="It is [SEG].",
                        masks=masks["red"][None], image=image, timings={"total": 0.1}, **flags)  # fmt: skip
        return Answer(result, ns(0.5))

    answers = [answer(1, truncated=True), answer(2, conversation_reset=True, truncated=True), answer(3)]
    counts = {"frames": 1, "commands": 3, "answers": 3, "errors": 0, "no_target": 0, "ok": 3}
    metrics = compute_metrics(answers, counts, 0.005, (SIZE, SIZE))
    assert (metrics["counts"]["answers_truncated"], metrics["counts"]["conversation_resets"]) == (2, 1)
    assert [(row["truncated"], row["conversation_reset"]) for row in metrics["commands"]] == [
        (True, False), (True, True), (False, False)
    ]  # fmt: skip
    metrics.update(stopped_by=None, input={"bag": "b", "duration_s": 1.0, "messages": 4}, output={"bag": "o"})
    report = write_report(tmp_path, answers, metrics).read_text()
    assert "<th>answers_truncated</th><td>2</td>" in report and "<th>conversation_resets</th><td>1</td>" in report
    assert "OK (truncated)" in report and "OK (truncated, conversation reset)" in report
    printed = summary(Evaluation(answers, metrics, tmp_path), 1.0)
    assert "answers cut at the context limit 2, conversations reset to make room 1" in printed


# --- the live node on the same bag ------------------------------------------------------------


def test_live_node_gives_the_same_results(tmp_path, store, params):
    """lisa_node (its own process, DDS on loopback) fed by a test publisher from the bag, message
    by message, answers as the evaluator does: every output message equal but for timings and
    the command's receive stamp (the node's clock)."""
    import threading
    import time

    from tests.helpers import ros_env

    missing = ros_env.missing()
    if missing:
        pytest.fail(missing, pytrace=False)
    from tests.helpers.ros_env import STARTUP_TIMEOUT, TIMEOUT, start_node, wait_until

    bag = write_bag(tmp_path / "in", store, "mcap")
    same = dict(params, max_image_age=0.0)  # the node's clock is not the bag's: accept any image age
    evaluate(bag, tmp_path / "out", same, progress=False, report=False)
    expected, _ = read_bag(tmp_path / "out" / "bag", store)

    home = tmp_path / "ros_home"
    home.mkdir()
    ros_env.activate(home)
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message

    def get_message(msgtype):  # "pkg/msg/Name" -> the rclpy class
        import importlib

        package, _, type_name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.msg"), type_name)

    namespace = "/lisa_bag"
    names = ("result", "explanation", "mask", "overlay", "target_cloud", "markers", "targets")
    node_args = [f"{name}:={value}" for name, value in same.items()] + ["reliable_inputs:=true"]
    lisa = start_node(home, namespace, *node_args)
    context = Context()
    rclpy.init(context=context)
    try:
        client = Node("bag_player", context=context)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        received, lock = {name: [] for name in names}, threading.Lock()

        def collect(name):
            def callback(msg):
                with lock:
                    received[name].append(serialize_message(msg))

            return callback

        from lisa_ros.runtime import message_fields

        for name in names:
            msgtype = message_fields.OUTPUT_TYPES[name]
            client.create_subscription(get_message(msgtype), f"{namespace}/{name}", collect(name), qos)
        publishers = {}
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(client)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()

        from rosbags.rosbag2 import Reader

        with Reader(bag) as reader:
            for connection in reader.connections:
                publishers[connection.topic] = client.create_publisher(
                    get_message(connection.msgtype), f"{namespace}{connection.topic}", qos
                )
            ready = lambda: all(p.get_subscription_count() > 0 for p in publishers.values())  # noqa: E731
            wait_until(ready, lisa, STARTUP_TIMEOUT, "subscribed to the bag's topics")
            wait_until(lambda: client.count_publishers(f"{namespace}/markers") > 0, lisa, TIMEOUT, "ready")
            for connection, _, raw in reader.messages():  # log-time order, as the evaluator
                msg = deserialize_message(bytes(raw), get_message(connection.msgtype))
                if connection.topic != "/command":
                    publishers[connection.topic].publish(msg)
                    time.sleep(0.05)
                    continue
                time.sleep(0.3)  # the frame, depth and camera_info reach the node before the command
                with lock:
                    start = len(received["result"])
                publishers[connection.topic].publish(msg)
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    with lock:
                        if len(received["result"]) > start and len(received["markers"]) > start:
                            break
                    time.sleep(0.02)
                else:
                    pytest.fail(f"no answer from lisa_node:\n{lisa.log()}")
        time.sleep(0.3)
        executor.shutdown()
        spinner.join(5)
    finally:
        lisa.stop()
        rclpy.try_shutdown(context=context)

    for name in names:
        ours = [store.deserialize_cdr(raw, msgtype) for _, raw, msgtype in expected[f"/lisa/{name}"]]
        msgtype = message_fields.OUTPUT_TYPES[name]
        theirs = [store.deserialize_cdr(raw, msgtype) for raw in received[name]]
        assert len(theirs) == len(ours) == (3 if name in ("result", "explanation") else 5), (name, len(theirs))
        for a, b in zip(ours, theirs):
            if name == "result":
                # The node encodes each image as it arrives (pre_encode): its commands start at the language model.
                encoders = {"clip", "sam_encoder"}
                assert [t for t in a.timing_stages if t not in encoders] == [
                    t for t in b.timing_stages if t not in encoders]  # fmt: skip
                a.timing_stages = b.timing_stages = a.timing_seconds = b.timing_seconds = None
                a.command_stamp = b.command_stamp = None
                assert a.session_id and b.session_id and a.session_id != b.session_id  # two runs
                a.session_id = b.session_id = None
            assert_same(a, b, name)


def assert_same(a, b, where):
    """Field-by-field equality of two rosbags messages (NaN equals NaN; float32 scores to 1e-6)."""
    import dataclasses

    if dataclasses.is_dataclass(a):
        for item in dataclasses.fields(a):
            assert_same(getattr(a, item.name), getattr(b, item.name), f"{where}.{item.name}")
    elif isinstance(a, np.ndarray):
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=where)
        else:
            assert np.array_equal(a, b), where
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, float):
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-6 * max(1.0, abs(a)), (where, a, b)
    else:
        assert a == b, (where, a, b)
