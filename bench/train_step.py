"""Seconds per training step and peak memory, for a model size and batch size.

    python -m bench.train_step --size tiny --batch-sizes 1,2,4            # CPU
    python -m bench.train_step --size 7b --device cuda --batch-sizes 1,2 --gradient-checkpointing both

One step is what training.train does per micro-batch with grad_accum 1: forward with
the LISA loss, backward, gradient clipping, AdamW. The model is LISA with the paper's
LoRA recipe (training.lora); 7b/13b have random weights with the real shapes (built on
the device, no download), frozen weights in bf16 and trainable ones in fp32 with bf16
autocast on CUDA, as the training configs run them. Each image of the batch carries
--conversations conversations, each answered with one [SEG] (ReasonSeg training
samples carry up to 3). Images are --image-size synthetic frames.

Peak memory: torch.cuda.max_memory_allocated on CUDA; on the CPU, the process's peak
resident set size (ru_maxrss, which includes the Python runtime and never goes down,
so later rows show at least the earlier rows' peak).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from lisa_model.processing.conversation import Turn, image_user_message
from training.build import set_gradient_checkpointing
from training.data.collate import collate, to_device
from training.data.sample import Sample
from training.lora import apply_lora
from training.train import LOSS_WEIGHTS

from .latency import build_model, environment

SIZES = ("tiny", "7b", "13b")


def synthetic_samples(batch_size: int, conversations: int, image_size: tuple[int, int], use_im_start_end: bool = True,
                      seed: int = 0) -> list[Sample]:
    """`batch_size` random images, each with `conversations` one-[SEG] conversations and a box mask."""
    rng = np.random.default_rng(seed)
    height, width = image_size
    samples = []
    for _ in range(batch_size):
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        mask = np.zeros((1, height, width), dtype=np.uint8)
        mask[:, height // 4 : height // 2, width // 4 : width // 2] = 1
        questions = [f"Where is object {k}? Please output segmentation mask." for k in range(conversations)]
        turns = [[Turn(image_user_message(question, use_im_start_end), "It is [SEG].")] for question in questions]
        samples.append(Sample(image, turns, [mask.copy() for _ in range(conversations)], "bench"))
    return samples


def prepare(size: str, device: torch.device, seed: int = 0):
    """The LoRA-recipe model for `size` on `device` (frozen bf16 + trainable fp32 on CUDA, fp32 on CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" and size != "tiny" else torch.float32
    model, tokenizer = build_model(size, device, dtype, seed)
    apply_lora(model)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return model, tokenizer


def time_steps(model, tokenizer, device, batch_size, conversations, image_size, steps, warmup, checkpointing) -> dict:
    set_gradient_checkpointing(model, checkpointing)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0)
    samples = synthetic_samples(batch_size, conversations, image_size, model.config.mm_use_im_start_end)
    batch = to_device(collate(samples, tokenizer, model.config), device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for index in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        with autocast:
            loss = model(**batch, loss_weights=LOSS_WEIGHTS).loss.total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= warmup:
            seconds.append(time.perf_counter() - begin)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    del optimizer
    return {
        "batch_size": batch_size,
        "conversations_per_image": conversations,
        "gradient_checkpointing": checkpointing,
        "tokens": int(batch["attention_mask"].sum()),  # text tokens (image tokens not counted)
        "seconds_per_step": statistics.median(seconds),
        "seconds_min": min(seconds),
        "peak_memory_gib": peak / 2**30,
        "loss": float(loss.detach()),
    }


def format_table(rows: list[dict]) -> str:
    lines = [f"{'batch':>6}{'convs':>7}{'ckpt':>6}{'text tok':>10}{'s/step':>10}{'min s':>9}{'peak GiB':>10}"]
    for row in rows:
        checkpointing = "yes" if row["gradient_checkpointing"] else "no"
        lines.append(f"{row['batch_size']:>6}{row['conversations_per_image']:>7}{checkpointing:>6}"
                     f"{row['tokens']:>10}{row['seconds_per_step']:>10.4f}{row['seconds_min']:>9.4f}"
                     f"{row['peak_memory_gib']:>10.2f}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="1,2", help="comma-separated images per step")
    parser.add_argument("--conversations", type=int, default=3, help="one-[SEG] conversations per image")
    parser.add_argument("--image-size", default="480x640", help="HxW of the synthetic images")
    parser.add_argument("--gradient-checkpointing", choices=("off", "on", "both"), default="off")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", type=Path, help="JSON (default outputs/bench/train_step_<size>_<device>.json)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    image_size = tuple(int(v) for v in args.image_size.lower().split("x"))
    model, tokenizer = prepare(args.size, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    checkpointing = {"off": [False], "on": [True], "both": [False, True]}[args.gradient_checkpointing]
    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        for flag in checkpointing:
            rows.append(time_steps(model, tokenizer, device, batch_size, args.conversations, image_size,
                                   args.steps, args.warmup, flag))
    result = {"size": args.size, "trainable_parameters": trainable,
              "total_parameters": sum(p.numel() for p in model.parameters()),
              "environment": environment(device, "bf16 autocast" if device.type == "cuda" else "fp32"), "rows": rows}
    print(f"LISA {args.size} training step on {device} ({trainable:,} trainable parameters)")
    print(format_table(rows))
    output = args.output or Path("outputs/bench") / f"train_step_{args.size}_{device.type}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
