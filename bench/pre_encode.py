"""Time to first mask and to answer through the node's runtime (Pipeline + CommandWorker), with and
without pre-encoding, and the delay of a command that arrives while a frame is pre-encoded.

    python -m bench.pre_encode --model demo --repeats 10
    python -m bench.pre_encode --model tiny --repeats 2 --output outputs/bench/pre_encode.json

Scenarios, each on a new camera frame and a fresh conversation:
  new_frame        the command's frame is encoded when it comes (pre_encode off): CLIP, SAM's
                   encoder, then the language model;
  pre_encoded      the frame was encoded while the worker was idle: the language model starts at once;
  during_same      the command arrives halfway through the pre-encoding of its own frame (the newest):
                   it waits for the rest of that encode, then starts with the language model;
  during_other     the command brings its own image and arrives halfway through the pre-encoding of
                   the camera's frame: it waits for the rest of that encode, then encodes its own.
Seconds from the command's arrival: to the first mask (queue_wait + first_mask) and to the answer
(queue_wait + total); `waited` is the queue_wait alone, the delay pre-encoding caused, bounded by
one encode (`encode`, the median pre-encoding time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from lisa_ros.runtime.pipeline import Pipeline
from lisa_ros.runtime.worker import CommandWorker

SCENARIOS = ("new_frame", "pre_encoded", "during_same", "during_other")


def load(model: str):
    """(predictor, frames, command) of the demo model on its scenes, or the tiny random model."""
    from lisa_model import DEMO_MODEL_DIR, LisaPredictor, build_lisa_tiny, load_lisa
    from training.data.demo_scenes import DemoScenesDataset

    dataset = DemoScenesDataset("test", num_scenes=1, frames_per_scene=2, phrasing="heldout", seed=0)
    lisa, tokenizer = load_lisa(DEMO_MODEL_DIR) if model == "demo" else build_lisa_tiny(seed=0)
    predictor = LisaPredictor(lisa, tokenizer, max_new_tokens=32)
    return predictor, [dataset.frame(k).rgb for k in range(2)], dataset.visible_commands(0)[0].text


def run_once(pipeline: Pipeline, worker: CommandWorker, scenario: str, frames, command: str, stamp: int, encode: float):
    """One command in `scenario`; returns (waited, first mask, answer) in seconds from its arrival.
    `encode`: seconds one encode takes (the command comes half of it after the pre-encoding started)."""
    pipeline.pre_encode = scenario != "new_frame"
    frame = frames[stamp % 2]
    pipeline.set_frame(frame, stamp, "camera")
    if scenario == "pre_encoded":
        pipeline.pre_encode_newest()  # what the idle worker does when the frame comes
    elif scenario.startswith("during"):
        pipeline.encoding_started.clear()
        worker.frame_arrived()
        assert pipeline.encoding_started.wait(60)
        time.sleep(encode / 2)
    image = frames[(stamp + 1) % 2].copy() if scenario == "during_other" else None
    result = worker.submit(1, command, stamp, image=image, reset=True).wait(120)
    assert result is not None and result.ok, result and result.error
    waited = result.timings["queue_wait"]
    first = result.timings.get("first_mask", result.timings["total"])
    return waited, waited + first, waited + result.timings["total"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "demo"), default="demo")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None, help="write the medians as JSON here")
    args = parser.parse_args(argv)
    predictor, frames, command = load(args.model)
    pipeline = Pipeline(predictor, max_image_age=0)
    pipeline.encoding_started = started = threading.Event()  # when the worker's pre-encoding begins
    set_image = predictor.set_image

    def signalling_set_image(*arguments, **keywords):
        started.set()
        set_image(*arguments, **keywords)

    predictor.set_image = signalling_set_image
    pipeline.warm_up(frames[0].shape[:2])
    worker = CommandWorker(pipeline)
    encodes, rows = [], {name: [] for name in SCENARIOS}
    stamp = 1
    try:
        for _ in range(max(1, args.repeats)):
            for name in SCENARIOS:
                encode = statistics.median(encodes) if encodes else 0.0
                rows[name].append(run_once(pipeline, worker, name, frames, command, stamp, encode))
                if name == "pre_encoded":
                    encodes.append(pipeline.last_pre_encode_s)
                stamp += 1
    finally:
        worker.stop()
    encode = statistics.median(encodes)
    medians = {name: [float(np.median([row[k] for row in values])) for k in range(3)] for name, values in rows.items()}
    print(f"{args.model} model, {args.repeats} repeats; one encode (CLIP + SAM): {encode * 1000:.1f} ms")
    print(f"{'scenario':<14}{'waited ms':>11}{'first mask ms':>15}{'answer ms':>11}")
    for name, (waited, first, total) in medians.items():
        print(f"{name:<14}{waited * 1000:>11.1f}{first * 1000:>15.1f}{total * 1000:>11.1f}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        report = {"model": args.model, "repeats": args.repeats, "encode_s": encode}
        keys = ("waited_s", "first_mask_s", "answer_s")
        report["scenarios"] = {name: dict(zip(keys, values)) for name, values in medians.items()}
        args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
