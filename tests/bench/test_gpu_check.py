"""Smoke test of bench/gpu_check.sh on the CPU: it parses its arguments, measures the tiny model,
reports the pieces it cannot run (int8/int4 need CUDA) and writes its JSON. No timing checks."""

import json
import subprocess
import sys
from pathlib import Path

from bench.gpu_check import main
from bench.latency import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--size", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--new-tokens", "4",
         "--image-size", "48x64", "--decode-modes", "eager,static"]


def test_tiny_gpu_check_writes_every_piece(tmp_path):
    output = tmp_path / "gpu_check.json"
    assert main([*SMOKE, "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["complete"] and result["sizes"] == ["tiny"] and result["elapsed_s"] < result["budget_s"]
    pieces = {(p["precision"], p["decode_mode"]): p for p in result["pieces"]}
    assert set(pieces) == {("bf16", "build"), ("bf16", "eager"), ("bf16", "static"), ("bf16", "tracking"),
                           ("int8", "build"), ("int4", "build")}
    for precision in ("int8", "int4"):  # no CUDA here: said so, not crashed
        assert pieces[precision, "build"]["status"] == "unavailable"
        assert "CUDA" in pieces[precision, "build"]["reason"]
    eager, static = pieces["bf16", "eager"], pieces["bf16", "static"]
    assert eager["status"] == static["status"] == "ok" and static["decode_mode_in_use"] == "static"
    for scenario in SCENARIOS:
        timing = eager["results"][scenario]
        assert 0 < timing["first_mask_ms"] <= timing["answer_ms"]
    assert eager["results"]["decode_per_token_ms"] > 0
    assert eager["results"]["reference"]["new_frame"] > 0  # the reference path: once per precision
    assert "reference" not in static["results"]
    assert pieces["bf16", "tracking"]["per_frame_ms"] > 0


def test_a_spent_budget_skips_pieces_instead_of_running_them(tmp_path):
    output = tmp_path / "gpu_check.json"
    assert main([*SMOKE, "--precisions", "bf16", "--budget-s", "0", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert [p["status"] for p in result["pieces"]] == ["skipped"]
    assert "time budget" in result["pieces"][0]["reason"]


def test_the_shell_entry_point_runs_and_rejects_bad_arguments(tmp_path):
    script = ROOT / "bench" / "gpu_check.sh"
    env = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    bad = subprocess.run([script, "--precisions", "fp8"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "fp8" in bad.stderr
    output = tmp_path / "gpu_check.json"
    good = subprocess.run([script, *SMOKE, "--precisions", "bf16", "--decode-modes", "eager", "--output", str(output)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert good.returncode == 0, good.stderr[-2000:]
    assert json.loads(output.read_text())["complete"]


def test_a_hung_piece_is_cut_off_by_the_watchdog_with_what_was_measured(tmp_path):
    output = tmp_path / "gpu_check.json"
    hang = (
        "import time, torch\n"
        "from pathlib import Path\n"
        "from bench.gpu_check import Report, start_watchdog\n"
        f"report = Report(Path({str(output)!r}), 0.0, torch.device('cpu'))\n"
        "report.add({'size': 'tiny', 'precision': 'bf16', 'decode_mode': 'build', 'status': 'ok'})\n"
        "report.data['now'] = 'tiny bf16 eager'\n"
        "start_watchdog(report, grace_s=0.5)\n"
        "time.sleep(120)\n"
    )
    run = subprocess.run([sys.executable, "-c", hang], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "over the 0 s budget" in run.stderr
    result = json.loads(output.read_text())
    assert result["timed_out_in"] == "tiny bf16 eager" and not result["complete"] and len(result["pieces"]) == 1
