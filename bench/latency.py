"""Latency of LISA per stage: our predictor against a reference-style pipeline, in one run.

    python -m bench.latency --size 7b --device cuda --dtype bf16
    python bench/latency.py --size tiny --repeats 20

Three scenarios on one camera frame (a synthetic table scene, --image-size HxW):
  new_frame    a new frame and a command (fresh conversation);
  follow_up    a second command in the same conversation on the same frame;
  new_command  another command on the same frame in a fresh conversation.

Two paths answer the same commands:
  ours         `LisaPredictor`: CLIP and the SAM image encoder run once per frame
               (`set_image`), the language model keeps its KV cache and reuses the
               prefix a prompt shares with the previous one.
  reference    the released reference's per-command pipeline: preprocess and encode both
               images for every command, tokenise the whole prompt, generate without a
               KV cache (every new token re-runs the whole sequence), then the mask
               decoder and mask post-processing (the same fp32 resize-crop-resize as ours,
               then masks moved to the CPU and thresholded).

Models have random weights (7b/13b: the real layer shapes, built directly on the target
device and dtype; no download), so what they answer is noise. Two things make the runs
comparable anyway:
  * EOS is disabled, so every answer is exactly --new-tokens tokens long.
  * A random model almost never emits [SEG]; when an answer has none, the final-layer
    hidden state of the last position stands in for one [SEG] embedding, so the
    mask decoder and post-processing run (for one mask) in both paths.
Prompts are real conversation templates around robot commands, tokenised with the tiny
offline tokenizer (for 7b/13b too: only the ids matter, and they all fit the real
vocabularies); their lengths are reported. Because the random answer is decoded to text
and re-tokenised for the follow-up, that text rarely re-tokenises to the generated ids,
so our follow-up recomputes the answer's tokens as well as the new command's: a slight
overestimate of our follow-up cost.

Each stage is timed with `lisa_model.timing.timed`, which waits for queued GPU work.
Numbers are medians over --repeats runs after --warmup runs; the two paths alternate
within each run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench import at_least
from lisa_model import Conversation, LisaModel, LisaPredictor, build_lisa, build_lisa_tiny
from lisa_model.config import LisaConfig, config_7b, config_13b
from lisa_model.modeling.sam import decode_masks
from lisa_model.processing.image import postprocess_masks, preprocess_clip, preprocess_sam
from lisa_model.processing.tokenization import IMAGE_TOKEN_INDEX, tokenize_prompt
from lisa_model.timing import timed
from lisa_model.tokenizer import build_tiny_tokenizer

SIZES = ("tiny", "7b", "13b")
REAL_SIZE_CONFIGS = {"7b": config_7b, "13b": config_13b}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

SCENARIOS = ("new_frame", "follow_up", "new_command")
SCENARIO_TITLES = {
    "new_frame": "(a) new frame + command",
    "follow_up": "(b) follow-up command, same frame, same conversation",
    "new_command": "(c) new command, same frame, fresh conversation",
}
PATHS = ("ours", "reference")
COMMANDS = {
    "new_frame": "Pick up the thing on the table that could hold hot coffee without spilling. "
    "Please output segmentation mask.",
    "follow_up": "Now segment the object to the left of it. Please output segmentation mask.",
    "new_command": "Where should the food scraps go after lunch? Please output segmentation mask.",
}

# Measured stages, in pipeline order; "decode_per_token", "other" and "total" are derived.
STAGES = ("clip", "sam_encoder", "prompt", "prefill", "decode", "mask_decoder", "postprocess")
STAGE_LABELS = {
    "clip": "CLIP (preprocess + encode)",
    "sam_encoder": "SAM image encoder (+ preprocess)",
    "prompt": "prompt (tokenise + embed)",
    "prefill": "LLM prefill",
    "decode": "LLM decode, all tokens",
    "decode_per_token": "  per token",
    "mask_decoder": "[SEG] head + SAM mask decoder",
    "postprocess": "mask post-processing",
    "other": "other (untimed glue)",
    "total": "total",
}

# Issue 3's targets, for the 7B model in bf16 on an H100.
TARGETS = {"new_frame_total_ms": 150.0, "follow_up_total_ms": 80.0, "speedup_vs_reference": 10.0}


# Building the model.


def build_on_device(config: LisaConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> LisaModel:
    """`build_lisa(config)` with every tensor created on `device` in `dtype`.

    A 7B model built the usual way would first exist in fp32 on the CPU (about 30 GB);
    here the weights are allocated and initialised where they will run.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        with torch.device(device):
            return build_lisa(config)
    finally:
        torch.set_default_dtype(previous)


def build_model(size: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A random-weight model of `size` on `device` in `dtype`, and a tokenizer: `(model, tokenizer)`."""
    if size == "tiny":
        model, tokenizer = build_lisa_tiny(seed)
        return model.to(device=device, dtype=dtype), tokenizer
    if size not in REAL_SIZE_CONFIGS:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    # The tiny tokenizer's ids all lie inside the real vocabularies.
    return build_on_device(REAL_SIZE_CONFIGS[size](), device, dtype, seed), build_tiny_tokenizer()


def prepare_for_benchmark(model: LisaModel) -> None:
    """Make a random-weight model decode a fixed number of tokens."""
    # EOS disabled (no token id is -1): every answer runs to max_new_tokens. A copy, so
    # the language model's own config is left alone.
    llm = copy.deepcopy(model.config.llm)
    llm.eos_token_id = -1
    model.config = dataclasses.replace(model.config, llm=llm)


class GenerationProbe:
    """Wraps `model.generate` to count tokens and to stand in for a missing [SEG].

    A forward hook on the language model's backbone sees every prefill and decode step;
    it keeps the final-layer hidden state of the last position, which predicted the
    last generated token. An answer without [SEG] gets that state as its one [SEG]
    hidden state, so the mask decoder runs exactly as it would for one mask.
    """

    def __init__(self, model: LisaModel):
        self._generate = model.generate
        self._step_lengths: list[int] = []
        self._last_hidden = None
        self.last: dict[str, int] = {}
        model.language_model.model.register_forward_hook(self._on_forward, with_kwargs=True)
        model.generate = self.generate

    def _on_forward(self, module, args, kwargs, output):
        self._step_lengths.append(kwargs["inputs_embeds"].shape[1])
        self._last_hidden = output.last_hidden_state[:, -1]

    def generate(self, prompt_embeds, max_new_tokens, cache=None, use_cache=True):
        self._step_lengths = []
        reused = cache.get_seq_length() if cache is not None else 0
        output = self._generate(prompt_embeds, max_new_tokens, cache=cache, use_cache=use_cache)
        self.last = {
            "prompt_tokens": reused + prompt_embeds.shape[1],
            "prefill_tokens": self._step_lengths[0],
            "new_tokens": len(output.token_ids),
            "generated_seg_tokens": len(output.seg_hidden_states),
        }
        if len(output.seg_hidden_states) == 0:
            output = dataclasses.replace(output, seg_hidden_states=self._last_hidden)
        return output


# The two paths.


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _sample(timings: dict[str, float], total: float, probe: GenerationProbe) -> dict:
    """One scenario's run: seconds per stage plus the derived entries, and token counts."""
    seconds = {stage: timings.get(stage, 0.0) for stage in STAGES}
    seconds["prompt"] += timings.get("tokenize", 0.0)  # the predictor's name for it
    seconds["decode_per_token"] = seconds["decode"] / max(probe.last["new_tokens"], 1)
    seconds["other"] = total - sum(seconds[stage] for stage in STAGES)
    seconds["total"] = total
    return {"seconds": seconds, "tokens": dict(probe.last)}


def run_ours(predictor: LisaPredictor, probe: GenerationProbe, frame) -> dict[str, dict]:
    """Our path through the three scenarios: set_image once, then three commands."""
    device = predictor.model.device
    template = predictor.model.config.conversation_template
    conversation = Conversation(template)
    samples = {}

    start = _now(device)
    predictor.set_image(frame)
    prediction = predictor.predict(COMMANDS["new_frame"], conversation)
    total = _now(device) - start
    samples["new_frame"] = _sample({**predictor.image_timings, **prediction.timings}, total, probe)

    start = _now(device)
    prediction = predictor.predict(COMMANDS["follow_up"], conversation)
    samples["follow_up"] = _sample(prediction.timings, _now(device) - start, probe)

    start = _now(device)
    prediction = predictor.predict(COMMANDS["new_command"], Conversation(template))
    samples["new_command"] = _sample(prediction.timings, _now(device) - start, probe)
    return samples


@torch.no_grad()
def reference_command(
    model: LisaModel, tokenizer, frame, command: str, conversation: Conversation, max_new_tokens: int
):
    """One command the reference's way: everything recomputed from the frame and the full prompt.

    Returns (timings in seconds, boolean masks [N,H,W]); the answer is appended to `conversation`.
    """
    config, device = model.config, model.device
    timings: dict[str, float] = {}
    with timed(timings, "clip", device):
        image_tokens = model.encode_clip(preprocess_clip(frame, config.vision.image_size)[None].to(device))
    with timed(timings, "sam_encoder", device):
        pixels, resized_size = preprocess_sam(frame, config.sam_image_size)
        image_embedding = model.encode_sam(pixels[None].to(device))
    with timed(timings, "prompt", device):
        prompt = conversation.prompt_for(command, config.mm_use_im_start_end)
        ids = torch.tensor([tokenize_prompt(tokenizer, prompt)], device=device)
        ids = model.expand_image_placeholder(ids, ids, IMAGE_TOKEN_INDEX)
        embeds = model.embed_inputs(ids, image_tokens)
    generation = model.generate(embeds, max_new_tokens, use_cache=False)
    timings.update(generation.timings)
    answer = tokenizer.decode(generation.token_ids, skip_special_tokens=True).strip()
    conversation.append(command, answer, config.mm_use_im_start_end)
    with timed(timings, "mask_decoder", device):
        low_res, _ = decode_masks(model.visual_model, image_embedding, model.project_seg(generation.seg_hidden_states))
    with timed(timings, "postprocess", device):
        logits = postprocess_masks(low_res, resized_size, frame.shape[:2], config.sam_image_size)
        masks = logits.cpu().numpy() > 0
    return timings, masks


def run_reference(model: LisaModel, tokenizer, probe: GenerationProbe, frame, max_new_tokens: int) -> dict[str, dict]:
    """The reference-style path through the same three scenarios."""
    device = model.device
    conversation = Conversation(model.config.conversation_template)
    samples = {}
    for scenario in SCENARIOS:
        if scenario == "new_command":
            conversation = Conversation(model.config.conversation_template)
        start = _now(device)
        timings, _ = reference_command(model, tokenizer, frame, COMMANDS[scenario], conversation, max_new_tokens)
        samples[scenario] = _sample(timings, _now(device) - start, probe)
    return samples


# Running, summarising, reporting.


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, dtype_name: str) -> dict:
    """What the numbers were measured on."""
    import transformers

    info = {
        "device": str(device),
        "dtype": dtype_name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = f"{info['cpu']} ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads)"
    return info


def summarise(runs: list[dict[str, dict]]) -> dict:
    """Medians in ms per scenario, path and stage; speedups of ours over the reference."""
    summary = {}
    for scenario in SCENARIOS:
        entry = {}
        for path in PATHS:
            samples = [run[path][scenario] for run in runs]
            keys = samples[0]["seconds"]
            entry[path] = {
                "median_ms": {key: 1000 * statistics.median(s["seconds"][key] for s in samples) for key in keys},
                "total_ms_runs": [round(1000 * s["seconds"]["total"], 4) for s in samples],
                "tokens": samples[-1]["tokens"],
            }
        entry["speedup"] = entry["reference"]["median_ms"]["total"] / entry["ours"]["median_ms"]["total"]
        summary[scenario] = entry
    return summary


def check_targets(summary: dict) -> dict:
    """Issue 3's targets against this run's medians (they are set for 7B, bf16, H100)."""
    new_frame, follow_up = summary["new_frame"], summary["follow_up"]
    measured = {
        "new_frame_total_ms": new_frame["ours"]["median_ms"]["total"],
        "follow_up_total_ms": follow_up["ours"]["median_ms"]["total"],
        "speedup_vs_reference": min(new_frame["speedup"], follow_up["speedup"]),
    }
    return {
        name: {
            "target": target,
            "measured": measured[name],
            "met": measured[name] >= target if name.startswith("speedup") else measured[name] <= target,
        }
        for name, target in TARGETS.items()
    }


def format_table(summary: dict) -> str:
    lines = []
    width = max(len(label) for label in STAGE_LABELS.values())
    for scenario in SCENARIOS:
        entry = summary[scenario]
        ours_tokens, reference_tokens = entry["ours"]["tokens"], entry["reference"]["tokens"]
        lines.append(
            f"{SCENARIO_TITLES[scenario]}: prompt {ours_tokens['prompt_tokens']} tokens "
            f"(prefill computes {ours_tokens['prefill_tokens']} ours / "
            f"{reference_tokens['prefill_tokens']} reference), "
            f"{ours_tokens['new_tokens']} new tokens"
        )
        lines.append(f"  {'stage':<{width}}  {'ours ms':>10}  {'reference ms':>12}  {'ref/ours':>8}")
        for key, label in STAGE_LABELS.items():
            ours, reference = entry["ours"]["median_ms"][key], entry["reference"]["median_ms"][key]
            ratio = f"{reference / ours:8.1f}" if ours > 1e-6 and key != "other" else f"{'-':>8}"
            lines.append(f"  {label:<{width}}  {ours:10.2f}  {reference:12.2f}  {ratio}")
        lines.append(f"  speedup (reference total / ours total): {entry['speedup']:.1f}x")
        lines.append("")
    return "\n".join(lines)


def parse_image_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 480x640, got {text!r}") from None
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"the frame must be at least 8x8, got {text!r}")
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="Per-stage latency of LISA: our predictor (image cache, KV cache, prefix reuse) "
        "against a reference-style pipeline (everything recomputed per command, no KV cache).",
    )
    parser.add_argument("--size", choices=SIZES, default="tiny",
                        help="model size; 7b/13b use the real shapes with random weights")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--new-tokens", type=at_least(1), default=32, help="tokens generated per answer (EOS disabled)")
    parser.add_argument("--image-size", type=parse_image_size, default=(480, 640),
                        help="camera frame HxW (default 480x640)")
    parser.add_argument("--warmup", type=at_least(0), default=2, help="untimed runs first")
    parser.add_argument("--repeats", type=at_least(1), default=10, help="timed runs; medians are reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default outputs/bench/latency_<size>_<device>.json)")
    return parser


def run_benchmark(args: argparse.Namespace) -> dict:
    """Build the model, run both paths, and return the JSON-ready result."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    model, tokenizer = build_model(args.size, device, DTYPES[dtype_name], args.seed)
    prepare_for_benchmark(model)
    probe = GenerationProbe(model)
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=args.new_tokens)
    # Timings depend on the image size only (the model's random weights answer noise anyway).
    frame = np.random.default_rng(0).integers(0, 256, (*args.image_size, 3), dtype=np.uint8)

    runs = []
    progress = tqdm(range(args.warmup + args.repeats), desc=f"latency {args.size}", unit="run", file=sys.stderr)
    for index in progress:
        progress.set_postfix_str("warm-up" if index < args.warmup else "timed")
        run = {
            "ours": run_ours(predictor, probe, frame),
            "reference": run_reference(model, tokenizer, probe, frame, args.new_tokens),
        }
        if index >= args.warmup:
            runs.append(run)

    summary = summarise(runs)
    result = {
        "size": args.size,
        "environment": environment(device, dtype_name),
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_by_part": {
            name: sum(p.numel() for p in part.parameters()) for name, part in model.named_children()
        },
        "image_size": list(args.image_size),
        "new_tokens": args.new_tokens,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "commands": COMMANDS,
        "notes": [
            "random weights; EOS disabled so each answer has exactly new_tokens tokens",
            "answers without [SEG] decode one mask from the last position's final hidden state",
            "reference path: CLIP and SAM re-encoded per command, no KV cache, same post-processing",
            "medians over repeats; 'other' = total minus the timed stages",
        ],
        "scenarios": summary,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    applies = args.size == "7b" and dtype_name == "bf16" and device.type == "cuda"
    result["targets"] = {
        "set_for": "7b, bf16, H100 (issue 3)",
        **TARGETS,
        "checks": check_targets(summary) if applies else None,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run_benchmark(args)
    environment_info = result["environment"]
    device_type = torch.device(environment_info["device"]).type
    output = args.output or Path("outputs/bench") / f"latency_{args.size}_{device_type}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"LISA latency, size {args.size}, {environment_info['dtype']} on {environment_info['device_name']}, "
        f"torch {environment_info['torch']}; frame {args.image_size[0]}x{args.image_size[1]}, "
        f"median of {args.repeats} runs after {args.warmup} warm-up"
    )
    print()
    print(format_table(result["scenarios"]))
    if result["targets"]["checks"]:
        for name, check in result["targets"]["checks"].items():
            verdict = "met" if check["met"] else "MISSED"
            print(f"target {name}: {check['measured']:.1f} vs {check['target']} -> {verdict}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
