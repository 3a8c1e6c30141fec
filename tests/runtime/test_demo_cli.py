import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lisa_ros.cli.demo import demo_scene_frame, main

ROOT = Path(__file__).resolve().parents[2]
RESULT_KEYS = {"command", "answer", "num_masks", "scores", "mask_pixels", "image", "model", "timings"}


def _run(tmp_path, *extra):
    out = tmp_path / "out"
    assert main(["--output", str(out), "--max-new-tokens", "4", *extra]) == 0
    return out


def _check_outputs(out: Path, shape):
    for name in ("input.png", "overlay.png", "answer.txt", "result.json"):
        assert (out / name).is_file(), name
    overlay = np.asarray(Image.open(out / "overlay.png").convert("RGB"))
    assert overlay.shape == shape
    result = json.loads((out / "result.json").read_text())
    assert RESULT_KEYS <= result.keys()
    assert result["num_masks"] == len(result["scores"]) == len(result["mask_pixels"])
    assert result["answer"] == (out / "answer.txt").read_text().strip()
    assert {"set_image", "predict"} <= result["timings"].keys()
    assert {"clip", "sam_encoder"} <= result["timings"]["set_image"].keys()
    assert result["timings"]["predict"]
    assert all(v >= 0 for v in result["timings"]["predict"].values())
    return result


def test_demo_on_a_held_out_scene_with_the_demo_model(tmp_path, capsys):
    out = _run(tmp_path)
    result = _check_outputs(out, (240, 320, 3))
    frame, command = demo_scene_frame()
    assert result["command"] == command
    assert np.array_equal(np.asarray(Image.open(out / "input.png")), frame)
    assert result["model"]["path"].endswith("demo_model")
    printed = capsys.readouterr().out
    assert "built-in demo model" in printed
    assert "Answer:" in printed and "Masks:" in printed
    assert str(out / "overlay.png") in printed


def test_demo_with_image_file(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    out = _run(tmp_path, "--image", str(path), "--command", "Segment the cup.")
    result = _check_outputs(out, (50, 70, 3))
    assert result["command"] == "Segment the cup."
    assert np.array_equal(np.asarray(Image.open(out / "input.png")), image)


def test_demo_grayscale_image_converted_to_rgb(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((40, 30), 128, np.uint8), mode="L").save(path)
    _check_outputs(_run(tmp_path, "--image", str(path)), (40, 30, 3))


@pytest.mark.parametrize("kind", ["missing", "not_an_image"])
def test_demo_bad_image_exits_2(tmp_path, capsys, kind):
    path = tmp_path / "nope.png"
    if kind == "not_an_image":
        path.write_text("this is not a png")
    with pytest.raises(SystemExit) as info:
        main(["--image", str(path), "--output", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_demo_rejects_a_missing_model_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--model-path", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")])
    assert info.value.code == 2 and "cannot load" in capsys.readouterr().err


def _command_lines(text):
    """Non-comment lines of a shell script, with their 0-based index."""
    lines = [(i, line.strip()) for i, line in enumerate(text.splitlines())]
    return [(i, line) for i, line in lines if line and not line.startswith("#")]


def test_setup_script_installs_pinned_torch_before_project():
    """An unpinned torch (pulled in by the project) would be a multi-GB CUDA build."""
    text = (ROOT / "scripts" / "setup.sh").read_text()
    lines = _command_lines(text)
    # Resolve the pinned version, written literally or through TORCH_VERSION.
    version = re.search(r'^TORCH_VERSION="?([^"\s]+)"?$', text, re.M)
    pinned = ("torch==2.13.0",) + (("torch==$TORCH_VERSION", "torch==${TORCH_VERSION}") if version else ())
    if version:
        assert version.group(1) == "2.13.0"
    torch_installs = [i for i, line in lines if "install" in line and any(p in line for p in pinned)]
    project_installs = [i for i, line in lines if re.search(r"\binstall\b.*\s-e\s", line)]
    assert torch_installs, "setup.sh does not install torch==2.13.0"
    assert project_installs, "setup.sh does not pip install -e the project"
    assert max(torch_installs) < min(project_installs)
    # No other line installs an unpinned torch.
    for _, line in lines:
        if re.search(r"\binstall\b.*\btorch\b", line):
            assert any(p in line for p in pinned), line


def test_setup_py_name_is_not_the_ros_package():
    text = (ROOT / "setup.py").read_text()
    assert re.search(r'name="lisa-ros-model"', text)
    assert "lisa-demo = lisa_ros.cli.demo:main" in text
