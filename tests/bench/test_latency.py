"""Smoke test of the latency benchmark (tiny, CPU): it runs and reports every stage. No timing checks."""

import json

import torch

from bench.latency import PATHS, SCENARIOS, STAGES, build_on_device, main
from lisa_model.config import tiny_config
from lisa_model.tokenizer import build_tiny_tokenizer, seg_token_id

# Stages our path skips on purpose: the frame is already encoded after a new frame.
SKIPPED_BY_OURS = {"follow_up": {"clip", "sam_encoder"}, "new_command": {"clip", "sam_encoder"}}


def test_tiny_benchmark_reports_every_stage_for_both_paths(tmp_path):
    output = tmp_path / "latency.json"
    args = ["--size", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--new-tokens", "4"]
    assert main([*args, "--image-size", "48x64", "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    assert result["size"] == "tiny" and result["new_tokens"] == 4
    assert result["environment"]["dtype"] == "fp32" and result["environment"]["device"] == "cpu"
    assert result["environment"]["device_name"] and result["environment"]["torch"] == torch.__version__
    assert result["targets"]["checks"] is None  # the targets are for 7B on a GPU
    for scenario in SCENARIOS:
        entry = result["scenarios"][scenario]
        assert entry["speedup"] > 0
        for path in PATHS:
            medians = entry[path]["median_ms"]
            skipped = SKIPPED_BY_OURS.get(scenario, set()) if path == "ours" else set()
            for stage in (*STAGES, "decode_per_token", "total"):
                if stage in skipped:
                    assert medians[stage] == 0, (scenario, path, stage)
                else:
                    assert medians[stage] > 0, (scenario, path, stage)
            assert medians["other"] >= 0
            tokens = entry[path]["tokens"]
            assert tokens["new_tokens"] == 4  # EOS is disabled
            assert 0 < tokens["prefill_tokens"] <= tokens["prompt_tokens"]
        # The reference recomputes the whole prompt; ours reuses the shared prefix after a new frame.
        ours, reference = entry["ours"]["tokens"], entry["reference"]["tokens"]
        assert reference["prefill_tokens"] == reference["prompt_tokens"]
        if scenario != "new_frame":
            assert ours["prefill_tokens"] < reference["prefill_tokens"]


def test_real_size_builder_allocates_in_the_target_dtype():
    tokenizer = build_tiny_tokenizer()
    model = build_on_device(tiny_config(len(tokenizer), seg_token_id(tokenizer)), torch.device("cpu"), torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored afterwards
