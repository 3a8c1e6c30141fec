"""One command for a machine with one NVIDIA GPU: every latency number of issue 17, as a table and JSON.

    bench/gpu_check.sh                                   # 7b and 13b (if memory allows), on cuda
    python -m bench.gpu_check --size tiny --device cpu   # a smoke run (seconds)

For each size, precision (bf16, int8, int4: bitsandbytes) and decode mode (eager, compiled),
with random weights in the real shapes (bench.latency builds them on the device, no download):
  * a new frame + command: time to the first mask and to the whole answer, with SAM's
    encoder before the LLM, beside it (a second CUDA stream), and on a frame pre-encoded
    before the command came;
  * a follow-up command, and the time per decoded token;
  * the reference-style path's numbers in the same run (once per size and precision);
  * tracking's per-frame model cost: SAM's encoder and the mask decoder on a new frame
    (lisa_ros.runtime.tracker's 3D fusion is not included).
Each piece runs in its own try: a piece that fails (no bitsandbytes, out of memory, a compile
error) gets "unavailable: <reason>" and the rest goes on. Pieces are skipped once the time
budget (--budget-s, model builds included) is nearly spent, and a watchdog writes what was
measured and exits with status 2 if a piece hangs past the budget.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from bench import at_least
from bench.latency import (
    DEFAULT_SEG_AT,
    REAL_SIZE_CONFIGS,
    SCENARIOS,
    build_model,
    check_targets,
    environment,
    measure,
    parse_image_size,
)
from lisa_model import LisaPredictor
from lisa_model.checkpoint.precision import check_precision, quantize_language_model
from lisa_model.decoding import DECODE_MODES

PRECISIONS = ("bf16", "int8", "int4")
GIB = 2**30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", action="append", choices=("tiny", *REAL_SIZE_CONFIGS), default=None,
                        help="model sizes, repeatable (default: 7b and 13b)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated, of bf16,int8,int4")
    parser.add_argument("--decode-modes", default="eager,compiled",
                        help=f"comma-separated, of {','.join(DECODE_MODES)}")
    parser.add_argument("--new-tokens", type=at_least(1), default=32, help="tokens per answer (EOS disabled)")
    parser.add_argument("--image-size", type=parse_image_size, default=(480, 640), help="camera frame HxW")
    parser.add_argument("--warmup", type=at_least(0), default=1, help="untimed runs per piece")
    parser.add_argument("--repeats", type=at_least(1), default=5, help="timed runs per piece; medians")
    parser.add_argument("--budget-s", type=float, default=450.0, help="the whole run's time budget, seconds")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench/gpu_check.json"))
    return parser


def _split(text: str, allowed) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise SystemExit(f"unknown value(s) {unknown}; choose from {list(allowed)}")
    return values


class Report:
    """The JSON being built; written after every piece, and by the watchdog on a hang."""

    def __init__(self, path: Path, budget_s: float, device: torch.device):
        self.path, self.budget_s, self.start = path, budget_s, time.perf_counter()
        self.lock = threading.Lock()
        self.data = {"environment": environment(device, "bf16"), "budget_s": budget_s, "complete": False,
                     "pieces": [], "now": None}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def add(self, piece: dict) -> None:
        with self.lock:
            self.data["pieces"].append(piece)
        self.write()

    def write(self) -> None:
        with self.lock:
            self.data["elapsed_s"] = round(self.elapsed(), 1)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def start_watchdog(report: Report, grace_s: float = 30.0) -> threading.Event:
    """Exit with status 2 (after writing the report) if the run outlives its budget by `grace_s`
    before the returned event is set."""
    finished = threading.Event()

    def watch():
        if finished.wait(max(report.budget_s + grace_s - report.elapsed(), 0.0)):
            return
        report.data["timed_out_in"] = report.data["now"]
        report.write()
        print(f"gpu_check: over the {report.budget_s:.0f} s budget in {report.data['now']}; "
              f"partial results in {report.path}", file=sys.stderr, flush=True)
        os._exit(2)

    threading.Thread(target=watch, daemon=True, name="gpu-check-watchdog").start()
    return finished


def build(size: str, precision: str, device: torch.device):
    """A random-weight model of `size` in `precision` on `device` (int8/int4: bf16, its decoder
    layers' linear layers then quantised by bitsandbytes), and the tokenizer."""
    check_precision(precision, device)
    model, tokenizer = build_model(size, device, torch.bfloat16)
    if precision in ("int8", "int4"):
        # bitsandbytes quantises while moving to CUDA: take the decoder layers off it first.
        model.language_model.model.layers.to("cpu")
        quantize_language_model(model, 8 if precision == "int8" else 4, torch.bfloat16)
        model.language_model.model.layers.to(device)
    return model, tokenizer


def fits(size: str, device: torch.device) -> str:
    """"" when a bf16 model of `size` fits in free GPU memory, else why not."""
    if device.type != "cuda" or size == "tiny":
        return ""
    llm = REAL_SIZE_CONFIGS[size]().llm
    layer = 4 * llm.hidden_size**2 + 3 * llm.hidden_size * llm.intermediate_size
    need = 2 * (llm.num_hidden_layers * layer + 2 * llm.vocab_size * llm.hidden_size) + 3 * GIB  # + CLIP, SAM, cache
    free, _ = torch.cuda.mem_get_info(device)
    return "" if free > 1.2 * need else f"needs about {1.2 * need / GIB:.0f} GiB, {free / GIB:.0f} GiB free"


def tracking_cost_ms(model, tokenizer, frame: np.ndarray, repeats: int) -> dict:
    """Per new frame: SAM's encoder, then the mask decoder with one [SEG] embedding."""
    predictor = LisaPredictor(model, tokenizer, max_new_tokens=1)
    seg = torch.randn(1, model.config.sam_prompt_embed_dim, device=model.device)
    costs = []
    for index in range(repeats + 1):
        start = time.perf_counter()
        predictor.decode(seg, predictor.embed_image(frame))  # decode's post-processing waits for the GPU
        if index:
            costs.append(1000 * (time.perf_counter() - start))
    return {"per_frame_ms": statistics.median(costs), "runs_ms": [round(c, 3) for c in costs]}


def headline(summary: dict) -> dict:
    """The numbers issue 17 asks for, in ms, from a bench.latency summary."""
    out = {}
    for scenario in SCENARIOS:
        medians = summary[scenario]["ours"]["median_ms"]
        out[scenario] = {"first_mask_ms": medians["first_mask"], "answer_ms": medians["total"]}
    out["decode_per_token_ms"] = summary["follow_up"]["ours"]["median_ms"]["decode_per_token"]
    if "reference" in summary["new_frame"]:
        out["reference"] = {
            scenario: summary[scenario]["reference"]["median_ms"]["total"]
            for scenario in ("new_frame", "follow_up", "new_command")
        }
        out["reference"]["decode_per_token_ms"] = summary["follow_up"]["reference"]["median_ms"]["decode_per_token"]
    return out


def run_piece(report: Report, piece: dict, work, min_left_s: float) -> dict | None:
    """Run `work()` into `piece` unless the budget is nearly spent; failures become "unavailable"."""
    name = " ".join(str(piece[k]) for k in ("size", "precision", "decode_mode") if k in piece)
    report.data["now"] = name
    left = report.budget_s - report.elapsed()
    result = None
    if left < min_left_s:
        piece.update(status="skipped", reason=f"time budget: {left:.0f} s left, a piece needs ~{min_left_s:.0f} s")
    else:
        start = time.perf_counter()
        try:
            result = work()
            piece.update(status="ok", **(result if isinstance(result, dict) else {}))
        except Exception as error:  # noqa: BLE001 - every failure is reported, and the run goes on
            piece.update(status="unavailable", reason=f"{type(error).__name__}: {error}".strip()[:500])
            traceback.print_exc(limit=3, file=sys.stderr)
        piece["seconds"] = round(time.perf_counter() - start, 1)
    print(f"[{report.elapsed():6.0f} s] {name}: {piece['status']}"
          + (f" ({piece['reason']})" if "reason" in piece else ""), file=sys.stderr, flush=True)
    report.add(piece)
    return result


def check_size(report: Report, args, size: str, device: torch.device, frame: np.ndarray,
               precisions: list[str], modes: list[str]) -> None:
    # A real-size piece needs a build, compiling and runs: about a minute on an H100.
    min_left = 5.0 if size == "tiny" else 60.0
    for precision in precisions:
        holder: dict = {}

        def build_piece(precision=precision):
            start = time.perf_counter()
            reason = fits(size, device)
            if reason:
                raise MemoryError(reason)
            holder["model"], holder["tokenizer"] = build(size, precision, device)
            return {"build_s": round(time.perf_counter() - start, 1),
                    "parameters": sum(p.numel() for p in holder["model"].parameters())}

        run_piece(report, {"size": size, "precision": precision, "decode_mode": "build"}, build_piece, min_left)
        if "model" in holder:
            model, tokenizer = holder["model"], holder["tokenizer"]
            for index, mode in enumerate(modes):
                def measure_piece(mode=mode, with_reference=index == 0):
                    measured = measure(model, tokenizer, frame, args.new_tokens, mode, DEFAULT_SEG_AT,
                                       args.warmup, args.repeats, f"{size} {precision} {mode}", with_reference)
                    piece = {"decode_mode_in_use": measured["decode_mode"], "results": headline(measured["scenarios"]),
                             "summary": measured["scenarios"]}
                    if size == "7b" and precision == "bf16" and with_reference and device.type == "cuda":
                        report.data["targets"] = check_targets(measured["scenarios"])
                    return piece

                run_piece(report, {"size": size, "precision": precision, "decode_mode": mode}, measure_piece,
                          min_left)
            run_piece(report, {"size": size, "precision": precision, "decode_mode": "tracking"},
                      lambda: tracking_cost_ms(model, tokenizer, frame, args.repeats), min_left)
        holder.clear()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            report.data.setdefault("peak_memory_gib", {})[f"{size} {precision}"] = round(
                torch.cuda.max_memory_allocated(device) / GIB, 2)
            torch.cuda.reset_peak_memory_stats(device)


def format_table(pieces: list[dict]) -> str:
    columns = ("new_frame", "new_frame_overlapped", "pre_encoded", "follow_up")
    lines = ["size  precision  mode      | first mask / answer, ms: new frame | SAM beside LLM | pre-encoded | "
             "follow-up | ms/token | reference new frame, follow-up | tracking ms/frame"]
    for piece in pieces:
        label = f"{piece['size']:<5} {piece['precision']:<10} {piece['decode_mode']:<9}"
        if piece["status"] != "ok":
            lines.append(f"{label} | {piece['status']}: {piece.get('reason', '')}")
        elif "results" in piece:
            r = piece["results"]
            cells = [f"{r[c]['first_mask_ms']:.1f} / {r[c]['answer_ms']:.1f}" for c in columns]
            reference = (f"{r['reference']['new_frame']:.1f}, {r['reference']['follow_up']:.1f}"
                         if "reference" in r else "-")
            mode, used = piece["decode_mode"], piece["decode_mode_in_use"]
            mode += "" if used == mode else f"->{used}"  # compiling failed: stepped without it
            lines.append(f"{label[:17]}{mode:<9} | " + " | ".join(cells)
                         + f" | {r['decode_per_token_ms']:.2f} | {reference} | -")
        elif "per_frame_ms" in piece:
            lines.append(f"{label} | " + " | ".join("-" for _ in columns) + f" | - | - | {piece['per_frame_ms']:.1f}")
        else:
            lines.append(f"{label} | built in {piece['build_s']} s, {piece['parameters'] / 1e9:.2f} B parameters")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sizes = args.size or ["7b", "13b"]
    precisions = _split(args.precisions, PRECISIONS)
    modes = _split(args.decode_modes, DECODE_MODES)
    report = Report(args.output, args.budget_s, device)
    report.data.update(sizes=sizes, precisions=precisions, decode_modes=modes, new_tokens=args.new_tokens,
                       image_size=list(args.image_size), repeats=args.repeats, warmup=args.warmup)
    if device.type == "cuda":
        report.data["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / GIB, 1)
    finished = start_watchdog(report)
    frame = np.random.default_rng(0).integers(0, 256, (*args.image_size, 3), dtype=np.uint8)
    try:
        for size in sizes:
            check_size(report, args, size, device, frame, precisions, modes)
    finally:
        finished.set()
    report.data["complete"] = True
    report.data["now"] = None
    report.write()
    print(f"gpu_check on {report.data['environment']['device_name']}, torch {torch.__version__}, "
          f"{args.new_tokens} tokens per answer, [SEG] at token {DEFAULT_SEG_AT}, "
          f"median of {args.repeats}, {report.elapsed():.0f} s in all")
    print(format_table(report.data["pieces"]))
    for name, check in report.data.get("targets", {}).items():
        print(f"target {name}: {check['measured']:.1f} vs {check['target']} -> {'met' if check['met'] else 'MISSED'}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
