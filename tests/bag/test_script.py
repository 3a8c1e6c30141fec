"""lisa_ros.bag.script: a command script is checked whole when it is loaded, before the model is.

Each case was accepted (or failed only after the whole run) before these checks: a NaN box
centre crashed the final metrics write, a 1e12 polygon overflowed int32 into a one-pixel
mask, an object id defined twice took the later box, a mask file that does not decode (or
has the wrong size) failed after the run.
"""

import json

import numpy as np
import pytest
from PIL import Image

from lisa_ros.bag.errors import EvalError
from lisa_ros.bag.script import load_script
from lisa_ros.bag.typestore import typestore
from lisa_ros.cli.eval_bag import main
from tests.bag.test_bag_eval import SIZE, write_bag

BOX = {"center": [0.0, 0.0, 1.0], "size": [0.1, 0.1, 0.1]}
SQUARE = [[1, 1], [9, 1], [9, 9], [1, 9]]


def write_jsonl(path, *items):
    """A JSON-lines script; items are dicts or raw lines (for NaN, Infinity and duplicate keys)."""
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items))
    return path


@pytest.mark.parametrize(
    "truth, fragment",
    [
        ('"box": {"center": [NaN, 0, 1], "size": [1, 1, 1]}', "box center must be finite"),
        ('"box": {"center": [0, 0, 1], "size": [Infinity, 1, 1]}', "box size must be finite"),
        ('"box": {"center": [0, 0, 1], "size": [0.1, 0, 0.1]}', "box size must be positive"),
        ('"box": {"center": ["1", 0, 1], "size": [1, 1, 1]}', "a box needs center"),
        ('"box": {"center": [true, 0, 1], "size": [1, 1, 1]}', "a box needs center"),
        ('"polygon": [[NaN, 0], [1, 1], [2, 0]]', "polygon must be finite"),
        ('"polygon": [[1e12, 0], [1, 1e12], [2, 0]]', "within ±100000 pixels"),
        ('"polygon": [[1, 2], [3, 4], [5]]', "polygon must be a list of at least 3"),
        ('"time": 0.2', "key 'time' is given twice"),
        ('"mask": ', "not JSON: Expecting value"),
    ],
)
def test_bad_values_name_the_line(tmp_path, truth, fragment):
    entry = '{"time": 0.1, "command": "x", ' + truth + "}"
    script = write_jsonl(tmp_path / "script.jsonl", {"time": 0.0, "command": "fine"}, entry)
    with pytest.raises(EvalError, match="script.jsonl line 2: ") as caught:
        load_script(script)
    assert fragment in str(caught.value)


def test_objects_are_checked_and_defined_once(tmp_path):
    script = write_jsonl(
        tmp_path / "script.jsonl",
        {"object_id": "cup", **BOX},
        {"time": 0.1, "command": "x", "object_id": "cup"},
        {"object_id": "cup", "center": [5, 5, 5], "size": [1, 1, 1]},
    )
    with pytest.raises(EvalError, match=r"line 3: object_id 'cup' is defined twice \(first at script.jsonl line 1\)"):
        load_script(script)

    # An object no command refers to is checked too.
    write_jsonl(script, {"object_id": "cup", "center": [0, 0, float("nan")], "size": [1, 1, 1]})
    with pytest.raises(EvalError, match="line 1: object 'cup': box center must be finite"):
        load_script(script)

    yaml_script = tmp_path / "script.yaml"
    yaml_script.write_text(
        "objects:\n"
        "  cup: {center: [0, 0, 1], size: [1, 1, 1]}\n"
        "  cup: {center: [5, 5, 5], size: [1, 1, 1]}\n"
        "commands:\n"
        "  - {time: 0.1, command: x, object_id: cup}\n"
    )
    with pytest.raises(EvalError, match=r"script.yaml line 3: key 'cup' is given twice \(lines 2 and 3\)"):
        load_script(yaml_script)
    yaml_script.write_text("- {time: 0.1, command: x, polygon: [[.nan, 0], [1, 1], [2, 0]]}\n")
    with pytest.raises(EvalError, match="script.yaml entry 1: polygon must be finite"):
        load_script(yaml_script)


def test_masks_are_decoded_at_load(tmp_path):
    (tmp_path / "text.png").write_text("not a png")
    with pytest.raises(EvalError, match="script.jsonl line 1: cannot read ground-truth mask .*text.png"):
        load_script(write_jsonl(tmp_path / "script.jsonl", {"time": 0.1, "command": "x", "mask": "text.png"}))

    Image.fromarray(np.full((5, 7), 255, np.uint8)).save(tmp_path / "ok.png")
    (entry,) = load_script(write_jsonl(tmp_path / "script.jsonl", {"time": 0.1, "command": "x", "mask": "ok.png"}))
    assert entry.truth.mask_size == (5, 7) and entry.where == "script.jsonl line 1"


def test_valid_polygon_is_clipped_to_the_image(tmp_path):
    far = [[-90000, -90000], [90000, -90000], [90000, 90000], [-90000, 90000]]
    (entry,) = load_script(write_jsonl(tmp_path / "script.jsonl", {"time": 0.1, "command": "x", "polygon": far}))
    assert entry.truth.mask(6, 4).sum() == 24  # the whole image, drawn in no time


def test_script_is_checked_before_the_model_loads(tmp_path, capsys):
    """lisa-eval-bag names the script's problem, not the missing model: the script (and its
    masks against the bag's image size) is checked first."""
    bag = write_bag(tmp_path / "in", typestore(), "mcap", commands=())
    Image.fromarray(np.zeros((SIZE // 2, SIZE), np.uint8)).save(tmp_path / "half.png")
    for number, (item, fragment) in enumerate(
        [
            ({"time": 0.1, "command": "x", "mask": "half.png"},
             "half.png is 64x32, the images on /image are 64x64"),
            ('{"time": 0.1, "command": "x", "box": {"center": [NaN, 0, 1], "size": [1, 1, 1]}}',
             "line 2: box center must be finite"),
            ({"time": 0.1, "command": "x", "polygon": [[1e12, 0], [1, 1e12], [2, 0]]}, "line 2: polygon coordinates"),
        ]
    ):  # fmt: skip
        script = write_jsonl(tmp_path / "script.jsonl", {"time": 0.0, "command": "fine", "polygon": SQUARE}, item)
        argv = [bag, "-o", tmp_path / f"out{number}", "--script", script, "--model-path", tmp_path / "no_model"]
        code = main([str(a) for a in argv] + ["--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and fragment in err and "cannot load the model" not in err, err
        assert err.count("\n") == 1  # one line
        assert not (tmp_path / f"out{number}").exists()


def test_unreadable_or_misshapen_scripts_are_one_line_errors(tmp_path):
    """Before: a traceback (UnicodeDecodeError, AttributeError) or a many-line YAML message."""
    binary = tmp_path / "script.jsonl"
    binary.write_bytes(b"\xff\xfe not text")
    with pytest.raises(EvalError, match="cannot read script .*script.jsonl: 'utf-8' codec can't decode"):
        load_script(binary)
    script = tmp_path / "script.yaml"
    for text, message in (
        ("objects: [1, 2]\ncommands: []\n", "objects must be a mapping of object id to {center, size}"),
        ("[unclosed\n", "script.yaml line 2: expected ',' or ']', but got '<stream end>'"),
    ):
        script.write_text(text)
        with pytest.raises(EvalError) as caught:
            load_script(script)
        assert message in str(caught.value) and "\n" not in str(caught.value)


def test_image_size_comes_from_the_first_image_that_decodes(tmp_path):
    """The size the masks are checked against: a corrupt first compressed image is skipped
    (the run answers around it); a topic without a decodable image is an error before the run."""
    from rosbags.rosbag2 import Writer

    from lisa_ros.bag.bagfile import first_image_size, open_reader

    store = typestore()
    garbage = (0.0, "image", "sensor_msgs/msg/CompressedImage", {"format": "png", "data": b"not a png"})
    bag = write_bag(tmp_path / "in", store, "mcap", compressed=True, extra=[garbage])
    reader = open_reader(bag)
    assert first_image_size(reader, bag, "/image", store, compressed=True) == (SIZE, SIZE)
    reader.close()

    writer = Writer(tmp_path / "empty", version=9)
    writer.open()
    writer.add_connection("/image", "sensor_msgs/msg/Image", typestore=store)
    writer.close()
    reader = open_reader(tmp_path / "empty")
    with pytest.raises(EvalError, match="has no image on /image"):
        first_image_size(reader, tmp_path / "empty", "/image", store, compressed=False)
    reader.close()
