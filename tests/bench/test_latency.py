"""Smoke test of the latency benchmark (tiny, CPU): it runs and reports every stage. No timing checks."""

import json

import torch

from bench.latency import PATHS, SCENARIOS, STAGES, build_on_device, main
from lisa_model.config import tiny_config
from lisa_model.tokenizer import build_tiny_tokenizer, seg_token_id

# Stages our path skips on purpose: the frame is already encoded, or SAM's encoder runs beside the LLM
# (then only the first mask's wait for it is on the critical path, and it may be none).
SKIPPED_BY_OURS = {scenario: {"clip", "sam_encoder"} for scenario in ("pre_encoded", "follow_up", "new_command")}
MAYBE_ZERO = {"new_frame_overlapped": {"sam_encoder"}}


def test_tiny_benchmark_reports_every_stage_for_both_paths(tmp_path):
    output = tmp_path / "latency.json"
    args = ["--size", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--new-tokens", "4"]
    assert main([*args, "--image-size", "48x64", "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    assert result["size"] == "tiny" and result["new_tokens"] == 4 and result["decode_mode"] == "eager"
    assert result["environment"]["dtype"] == "fp32" and result["environment"]["device"] == "cpu"
    assert result["environment"]["device_name"] and result["environment"]["torch"] == torch.__version__
    assert result["targets"]["checks"] is None  # the targets are for 7B on a GPU
    assert set(result["cpu_targets"]["checks"]) == {
        "first_mask_over_answer",
        "pre_encoded_first_mask_speedup_over_new_frame_answer",
        "pre_encoded_answer_speedup_over_new_frame_answer",
    }
    assert set(result["scenarios"]) == set(SCENARIOS)
    for scenario in SCENARIOS:
        entry = result["scenarios"][scenario]
        assert entry["speedup"] > 0 and entry["first_mask_speedup"] > 0
        for path in PATHS:
            medians = entry[path]["median_ms"]
            skipped = SKIPPED_BY_OURS.get(scenario, set()) if path == "ours" else set()
            maybe_zero = MAYBE_ZERO.get(scenario, set()) if path == "ours" else set()
            for stage in (*STAGES, "decode_per_token", "first_mask", "total"):
                if stage in skipped:
                    assert medians[stage] == 0, (scenario, path, stage)
                elif stage in maybe_zero:
                    assert medians[stage] >= 0, (scenario, path, stage)
                else:
                    assert medians[stage] > 0, (scenario, path, stage)
            assert medians["other"] >= 0
            tokens = entry[path]["tokens"]
            assert tokens["new_tokens"] == 4  # EOS is disabled
            assert tokens["generated_seg_tokens"] == 1  # the [SEG] put at --seg-at
            assert 0 < tokens["prefill_tokens"] <= tokens["prompt_tokens"]
        # Our mask comes while the answer goes on; the reference's with its answer.
        assert entry["ours"]["median_ms"]["first_mask"] < entry["ours"]["median_ms"]["total"]
        assert entry["reference"]["median_ms"]["first_mask"] == entry["reference"]["median_ms"]["total"]
        # The reference recomputes the whole prompt; ours reuses the shared prefix after a new frame.
        ours, reference = entry["ours"]["tokens"], entry["reference"]["tokens"]
        assert reference["prefill_tokens"] == reference["prompt_tokens"]
        if scenario in ("follow_up", "new_command"):
            assert ours["prefill_tokens"] < reference["prefill_tokens"]


def test_real_size_builder_allocates_in_the_target_dtype():
    tokenizer = build_tiny_tokenizer()
    model = build_on_device(tiny_config(len(tokenizer), seg_token_id(tokenizer)), torch.device("cpu"), torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored afterwards
