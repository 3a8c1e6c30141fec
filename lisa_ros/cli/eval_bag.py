"""`lisa-eval-bag` / `ros2 run lisa_ros evaluate_bag`: the node's pipeline run offline on a rosbag2.

Argument parsing and the printed summary; the work is lisa_ros.bag.runner.evaluate.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

from lisa_ros.bag.errors import EvalError
from lisa_ros.bag.runner import Evaluation, evaluate
from lisa_ros.cli.errors import fail
from lisa_ros.runtime.launch_config import load_params_file, parse_argument
from lisa_ros.runtime.parameters import validate


def main(argv=None) -> int:
    """lisa-eval-bag: see `lisa-eval-bag --help`. Returns the exit code: 2 for bad inputs (one
    line on stderr; the traceback too with --debug or LISA_DEBUG=1), 128 + the signal's number
    when SIGINT or SIGTERM stopped the run (its partial outputs are written, marked incomplete)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    try:
        typed = _typed_metrics(args.typed_metrics)
        evaluation = evaluate(
            args.bag,
            args.output,
            _params(args),
            image_topic=args.image_topic,
            depth_topic=args.depth_topic,
            camera_info_topic=args.camera_info_topic,
            command_topic=args.command_topic,
            pose_topic=args.pose_topic,
            script=args.script,
            namespace=args.namespace,
            output_format=args.output_format,
            progress=not args.no_progress,
            tracking_baseline=args.tracking_baseline,
            voices=args.voice or (),
            voice_speed=args.voice_speed,
            acoustic_model=args.acoustic_model,
        )
    except (EvalError, ValueError, OSError) as error:  # ValueError: a parameter; OSError: writing the outputs
        return fail("lisa-eval-bag", error, args.debug)
    except KeyboardInterrupt:  # before or after the run (during it, SIGINT stops it cleanly)
        print("lisa-eval-bag: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    print(summary(evaluation, time.perf_counter() - started, typed))
    if evaluation.stopped_by is not None:
        partial = f"partial outputs in {evaluation.output} (metrics.json: complete false)"
        print(f"lisa-eval-bag: stopped by {evaluation.stopped_by.name}: {partial}", file=sys.stderr)
        return 128 + evaluation.stopped_by
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lisa-eval-bag",
        description="Run the lisa_ros node's pipeline on a rosbag2 (mcap or sqlite3) offline and deterministically; "
        "write an output bag, metrics.json and report.html.",
    )
    parser.add_argument("bag", help="input rosbag2 folder (or .mcap / .db3 file)")
    parser.add_argument("-o", "--output", required=True, help="output folder (new or empty)")
    parser.add_argument("--script", help="YAML or JSONL command script with optional ground truth")
    parser.add_argument("--image-topic", help="sensor_msgs/Image or CompressedImage (default: /image)")
    parser.add_argument("--depth-topic", help="sensor_msgs/Image depth (default: /depth, if present)")
    parser.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo (default: /camera_info, if present)")
    parser.add_argument("--command-topic", help="std_msgs/String commands (default: /command; unused with --script)")
    parser.add_argument(
        "--pose-topic",
        help="geometry_msgs/PoseStamped camera poses instead of /tf "
        "(default with -p use_pose_topic:=true: /camera_pose)",
    )
    parser.add_argument("--target-frame", help="frame of the 3D regions (through /tf + /tf_static or --pose-topic)")
    parser.add_argument("--model-path", help="LISA checkpoint folder (parameter model_path)")
    parser.add_argument("--vision-tower-path", help="CLIP folder (parameter vision_tower_path)")
    parser.add_argument("--device", help="auto, cpu or cuda (parameter device)")
    parser.add_argument("--params-file", help="a ROS 2 parameters file for lisa_node (like config/lisa.yaml)")
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME:=VALUE", help="any node parameter (repeatable)"
    )
    parser.add_argument("--namespace", default="/lisa", help="output topics' namespace (default /lisa)")
    parser.add_argument("--output-format", choices=("mcap", "sqlite3"), help="default: the input bag's")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--tracking-baseline",
        action="store_true",
        help="also answer each live target's command again on every tracked image, to compare (slow)",
    )
    parser.add_argument(
        "--voice",
        nargs="+",
        metavar="VOICE",
        help="the voice leg: speak the script's commands with these espeak-ng voices in turn (e.g. en-us en-us+f3), "
        "recognise them as speech_node does, and answer what was heard",
    )
    parser.add_argument("--voice-speed", type=int, default=160, help="espeak-ng words per minute (default 160)")
    parser.add_argument("--acoustic-model", help="the voice leg's acoustic model folder (lisa-adapt-speech); "
                        "default: pocketsphinx's en-us")
    parser.add_argument(
        "--typed-metrics", type=Path, help="metrics.json of the same bag with typed commands, compared in the summary"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or set LISA_DEBUG=1)")
    return parser


def _params(args) -> dict:
    """Node parameters from --params-file, then -p, then the named options; ValueError for a bad one."""
    params = load_params_file(args.params_file) if args.params_file else {}
    for item in args.param:
        name, separator, text = item.partition(":=")
        if not separator:
            name, separator, text = item.partition("=")
        if not separator:
            raise ValueError(f"-p expects NAME:=VALUE, got {item!r}")
        params[name.strip()] = parse_argument(name.strip(), text)
    for name in ("model_path", "vision_tower_path", "device", "target_frame"):
        if getattr(args, name) is not None:
            params[name] = validate(name, getattr(args, name))
    return params


def _typed_metrics(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise EvalError(f"cannot read the typed commands' metrics {path}: {error}") from error


def summary(evaluation: Evaluation, seconds: float, typed: dict | None = None) -> str:
    """The printed summary: counts (truncated answers and conversation resets when any), gIoU/cIoU,
    3D box IoU, latency to the first mask and total, the voice leg (WER; gIoU against `typed`, another run's metrics),
    the files written."""
    metrics = evaluation.metrics
    counts = metrics["counts"]
    lines = [
        f"frames {counts['frames']}, commands {counts['commands']}, answers {counts['answers']} "
        f"(ok {counts['ok']}, no target {counts['no_target']}), errors {counts['errors']} in {seconds:.1f} s"
    ]
    if counts["answers_truncated"] or counts["conversation_resets"]:
        lines.append(
            f"answers cut at the context limit {counts['answers_truncated']}, "
            f"conversations reset to make room {counts['conversation_resets']}"
        )
    if metrics["segmentation_2d"]:
        seg = metrics["segmentation_2d"]
        lines.append(f"gIoU {seg['giou']:.4f}  cIoU {seg['ciou']:.4f}  ({seg['count']} masks)")
    if metrics["regions_3d"]:
        r3 = metrics["regions_3d"]
        median = r3["centroid_error_m"]["median"]
        lines.append(
            f"3D box IoU {r3['mean_box_iou']:.4f}  Acc@0.25 {r3['acc_at_0.25']:.3f}  Acc@0.5 {r3['acc_at_0.5']:.3f}"
            + (f"  centroid error median {median:.3f} m" if median is not None else "")
        )
    for stage, name in (("first_mask", "latency to first mask"), ("total", "latency total")):
        latency = metrics["latency_s"].get(stage)
        if latency and latency["count"]:
            lines.append(
                f"{name}: median {latency['median']:.3f} s, p90 {latency['p90']:.3f} s, max {latency['max']:.3f} s"
                + (f" ({latency['count']} answers with a mask)" if stage == "first_mask" else "")
            )
    lines += _tracking_lines(metrics.get("tracking"))
    lines += _voice_lines(metrics.get("voice"), metrics["segmentation_2d"], typed)
    output = evaluation.output
    lines.append(f"wrote {output / 'bag'}, {output / 'metrics.json'}, {output / 'report.html'}")
    return "\n".join(lines)


def _tracking_lines(tracking: dict | None) -> list[str]:
    """The summary's tracking lines: later images' gIoU (and the re-answer baseline's), re-asks, fused 3D."""
    if not tracking or tracking["giou"] is None:
        return []
    baseline = tracking["reanswer_giou"]
    lines = [
        f"tracking gIoU {tracking['giou']:.4f}  cIoU {tracking['ciou']:.4f}"
        + (f"  (answering again on each image: gIoU {baseline:.4f})" if baseline is not None else "")
        + f"  over {tracking['frames_with_truth']} later images, found on {100 * tracking['fraction_found']:.1f} %,"
        f" re-asks {tracking['reasks']}, commands lost {tracking['commands_lost']}"
    ]
    fused = tracking["fused_3d"]
    if fused["count"]:
        lines.append(
            f"fused 3D box IoU {fused['mean_box_iou']:.4f} after all views (single view "
            f"{fused['single_view_mean_box_iou']:.4f})  Acc@0.25 {fused['acc_at_0.25']:.3f}"
        )
    latency = tracking["latency_s"]
    if latency["count"]:
        lines.append(f"tracking per image: median {latency['median']:.3f} s, p90 {latency['p90']:.3f} s")
    return lines


def _voice_lines(voice: dict | None, segmentation: dict | None, typed: dict | None) -> list[str]:
    """The voice leg: word error rate (per voice), commands not sent, and voice gIoU next to typed."""
    if not voice or not voice["count"]:
        return []
    per_voice = ", ".join(f"{name} {wer:.3f}" for name, wer in voice["wer_by_voice"].items())
    lines = [
        f"voice: WER {voice['wer']:.3f} ({per_voice}), {100 * voice['exact']:.0f} % heard exactly, "
        f"{voice['not_sent']} not sent, recognition median {voice['recognition_s']['median']:.3f} s"
    ]
    typed_seg = (typed or {}).get("segmentation_2d")
    if segmentation and typed_seg:
        lines.append(
            f"voice commands gIoU {segmentation['giou']:.4f}  typed {typed_seg['giou']:.4f}  "
            f"(difference {segmentation['giou'] - typed_seg['giou']:+.4f})"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
