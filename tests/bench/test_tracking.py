"""bench.tracking runs end to end (tiny random model and the demo model) and writes its JSON; no timing asserted."""

import json

import pytest

from bench import tracking


@pytest.mark.parametrize("model", ["tiny", "demo"])
def test_tracking_benchmark_runs(tmp_path, capsys, model):
    output = tmp_path / "tracking.json"
    argv = ["--model", model, "--scenes", "1", "--commands", "1", "--frames", "3", "--output", str(output)]
    assert tracking.main(argv) == 0
    result = json.loads(output.read_text())
    assert result["frames"] == 2 and result["track_ms"] > 0 and result["reanswer_ms"] > 0
    assert (result["track_giou"] is None) == (model == "tiny")
    assert "tracking (mask decoder + 3D fusion)" in capsys.readouterr().out


def test_live_camera_mode_counts_tracked_and_skipped_images(tmp_path):
    output = tmp_path / "camera.json"
    argv = ["--camera-hz", "15", "--seconds", "2", "--frames", "4", "--output", str(output)]
    assert tracking.main(argv) == 0
    result = json.loads(output.read_text())
    assert result["images_tracked"] >= 1
    assert result["images_tracked"] + result["images_skipped"] <= result["images_offered"] + 1
