"""Live-target tracking against answering the command again, per later frame, in one run.

    python -m bench.tracking                      # the demo model on held-out demo scenes
    python -m bench.tracking --model tiny         # random tiny model (cost only)
    python -m bench.tracking --model 7b --device cuda --dtype bf16   # 7b shapes, random weights

For each scene and held-out command: the command is answered on the first view, then on
every later view (a camera arc) two paths find the target:
  tracking   Tracker.track: the view's SAM embedding, the mask decoder with the answer's
             [SEG] embedding, loss checks and 3D fusion (lisa_ros.runtime.tracking);
  re-answer  the whole model answers the command again on the view (CLIP, SAM, the LLM, the
             mask decoder), as a robot without tracking would.
With the demo model both are scored against the scenes' ground-truth masks (gIoU over all
later frames); with random weights (tiny, 7b, 13b) only the cost means anything. Times are
medians per frame; the table also gives their ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.latency import GenerationProbe, build_model, prepare_for_benchmark
from lisa_model import Conversation, LisaPredictor
from lisa_ros.runtime.pipeline import Pipeline
from lisa_ros.runtime.tracking import TargetStatus
from lisa_ros.synthetic.scenes import make_scene

MODELS = ("demo", "tiny", "7b", "13b")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="for tiny/7b/13b")
    parser.add_argument("--scenes", type=int, default=3, help="held-out demo scenes")
    parser.add_argument("--commands", type=int, default=5, help="held-out commands per scene at most")
    parser.add_argument("--frames", type=int, default=12, help="views per scene (the first answers)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default outputs/bench/...)")
    parser.add_argument("--camera-hz", type=float, default=0.0, help="live-camera mode: images per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="live-camera mode: how long")
    return parser


def load_pipeline(args) -> Pipeline:
    if args.model == "demo":
        return Pipeline.from_parameters({"device": args.device, "keep_conversation": False, "max_image_age": 0.0})
    # Random weights, as bench.latency: answers of a fixed length, and a stand-in [SEG] when
    # the answer has none, so there is a target to track.
    model, tokenizer = build_model(args.model, torch.device(args.device), DTYPES[args.dtype])
    prepare_for_benchmark(model)
    GenerationProbe(model)
    return Pipeline(LisaPredictor(model, tokenizer, max_new_tokens=32), keep_conversation=False, max_image_age=0.0)


def iou(mask, truth) -> float:
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else 1.0


def run(args) -> dict:
    pipeline = load_pipeline(args)
    predictor = pipeline.predictor
    scored = args.model == "demo"
    rows = {"track_s": [], "reanswer_s": [], "track_iou": [], "reanswer_iou": [], "lost": 0, "stages": {}}
    period = 250_000_000
    stamp = 1
    work = []
    for scene_index in range(args.scenes):
        scene = make_scene(0, "test", scene_index, frames=args.frames)
        views = [scene.render(i) for i in range(args.frames)]
        work += [(scene, views, command) for command in scene.commands("heldout")[: args.commands]]
    for scene, views, command in tqdm(work, desc="commands", file=sys.stderr):

        def show(view):
            nonlocal stamp
            stamp += period
            geometry = {"depth": view.depth, "intrinsics": scene.intrinsics, "pose": view.pose}
            return pipeline.set_frame(view.rgb, stamp, "camera", target_frame="map", **geometry)

        show(views[0])
        first = pipeline.answer(0, command.text, stamp)
        if not first.masks.shape[0]:
            continue
        for view in views[1:]:
            show(view)
            start = time.perf_counter()
            update = pipeline.tracker.track()
            rows["track_s"].append(time.perf_counter() - start)
            for stage, seconds in update.timings.items():
                rows["stages"].setdefault(stage, []).append(seconds)
            target = update.targets[0]
            rows["lost"] += target.status == TargetStatus.LOST
            start = time.perf_counter()
            predictor.set_image(view.rgb)
            again = predictor.predict(command.text, Conversation(pipeline.conversation.template))
            rows["reanswer_s"].append(time.perf_counter() - start)
            pipeline._encoded = None  # the predictor now holds another image than the pipeline's
            if scored:
                truth = command.mask(view)
                rows["track_iou"].append(iou(target.mask if target.mask is not None else np.zeros_like(truth), truth))
                answer_mask = again.masks[0] if len(again.masks) else np.zeros_like(truth)
                rows["reanswer_iou"].append(iou(answer_mask, truth))
    track, reanswer = statistics.median(rows["track_s"]), statistics.median(rows["reanswer_s"])
    return {
        "model": args.model,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        "torch": torch.__version__,
        "frames": len(rows["track_s"]),
        "track_ms": 1000 * track,
        "reanswer_ms": 1000 * reanswer,
        "ratio": track / reanswer,
        "track_giou": float(np.mean(rows["track_iou"])) if scored else None,
        "reanswer_giou": float(np.mean(rows["reanswer_iou"])) if scored else None,
        "frames_lost": rows["lost"],
        "track_stages_ms": {stage: 1000 * statistics.median(values) for stage, values in rows["stages"].items()},
    }


def run_camera(args) -> dict:
    """Images at args.camera_hz through the node's worker for args.seconds after one command."""
    import threading

    from lisa_ros.runtime.worker import CommandWorker

    pipeline = load_pipeline(args)
    scene = make_scene(0, "test", 0, frames=args.frames)
    views = [scene.render(i) for i in range(args.frames)]
    command = scene.commands("heldout")[0]
    updates = []
    worker = CommandWorker(pipeline, on_track=updates.append)
    period = 1.0 / args.camera_hz
    offered = 0

    def show(index):
        view = views[index % len(views)]
        geometry = {"depth": view.depth, "intrinsics": scene.intrinsics, "pose": view.pose}
        pipeline.set_frame(view.rgb, time.time_ns(), "camera", target_frame="map", **geometry)
        worker.frame_arrived()

    show(0)
    worker.submit(1, command.text, time.time_ns()).wait()
    stop = threading.Event()

    def camera():
        nonlocal offered
        next_at = time.perf_counter()
        while not stop.is_set():
            offered += 1
            show(offered)
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))

    thread = threading.Thread(target=camera)
    thread.start()
    time.sleep(args.seconds)
    stop.set()
    thread.join()
    worker.stop()
    tracked = [u for u in updates if u.image is not None]
    return {
        "model": args.model,
        "device": args.device,
        "camera_hz": args.camera_hz,
        "seconds": args.seconds,
        "images_offered": offered,
        "images_tracked": len(tracked),
        "images_skipped": pipeline.tracker.frames_skipped,
        "tracking_hz": len(tracked) / args.seconds,
        "track_ms_median": 1000 * statistics.median(u.timings["total"] for u in tracked) if tracked else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with torch.no_grad():
        return _main(args)


def _main(args) -> int:
    if args.camera_hz > 0:
        result = run_camera(args)
        output = args.output or Path("outputs/bench") / f"tracking_camera_{args.model}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{args.model} model on {args.device}: a {args.camera_hz:g} Hz camera for {args.seconds:g} s")
        print(f"images offered {result['images_offered']}, tracked {result['images_tracked']} "
              f"({result['tracking_hz']:.1f} Hz), skipped {result['images_skipped']}; "
              f"tracking median {result['track_ms_median']:.1f} ms per image")  # fmt: skip
        print(f"wrote {output}")
        return 0
    result = run(args)
    output = args.output or Path("outputs/bench") / f"tracking_{args.model}_{args.device.split(':')[0]}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Tracking vs re-answering, {args.model} model on {args.device} ({result['device_name']}), "
          f"torch {result['torch']}, {result['frames']} later frames")  # fmt: skip
    print()
    print("| path | ms per frame (median) | gIoU over later frames |")
    print("|---|---|---|")
    for path in ("track", "reanswer"):
        giou = result[f"{path}_giou"]
        name = "tracking (mask decoder + 3D fusion)" if path == "track" else "re-answer (whole model)"
        print(f"| {name} | {result[f'{path}_ms']:.1f} | {'-' if giou is None else f'{giou:.3f}'} |")
    print()
    stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in result["track_stages_ms"].items())
    print(f"tracking costs {result['ratio']:.2f} of a re-answer; frames lost: {result['frames_lost']}")
    print(f"tracking stages (ms, medians): {stages}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
