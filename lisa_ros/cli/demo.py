"""`lisa-demo`: run the whole LISA pipeline on one image and one command.

    lisa-demo [--image PATH] [--command TEXT] [--output DIR] [--model-path DIR] ...
    python -m lisa_ros.cli.demo ...

Without --model-path the built-in demo model (DEMO_MODEL_DIR) answers; without
--image a held-out synthetic table scene and one of its commands are used. Writes
DIR/input.png, DIR/overlay.png, DIR/answer.txt and DIR/result.json.

A bad input (an unreadable or oversized image, a checkpoint with a corrupt weight file,
a wrong dtype, a malformed config or index, an unusable command or output folder)
prints one line, `lisa-demo: error: ...` naming the file and the problem, and exits
with status 2; `--debug` or LISA_DEBUG=1 prints the traceback before it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from lisa_ros.cli.errors import fail as report


def demo_scene_frame() -> tuple[np.ndarray, str]:
    """The first frame of a held-out synthetic demo scene and its first held-out command.

    The scenes are rendered by lisa_ros.synthetic.scenes (numpy only, no ROS), which the demo
    model was trained on (other scenes, other phrasings).
    """
    from lisa_ros.synthetic.scenes import make_scene

    scene = make_scene(0, "test", 0)
    return scene.render(0).rgb, scene.commands("heldout")[0].text


def load_image(path) -> np.ndarray:
    """Read an image file as a uint8 (H, W, 3) RGB array. Raises OSError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise OSError(f"not a readable image file: {exc}") from exc


def fail(what: str, error: BaseException, debug: bool) -> None:
    """Exit with status 2 after one line on stderr naming `what` and the problem."""
    raise SystemExit(report("lisa-demo", error, debug, what)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lisa-demo",
        description="Segment what a command asks for in an image with LISA, and save the result.",
    )
    parser.add_argument("--image", type=Path, default=None,
                        help="RGB image to use (default: a held-out synthetic table scene, 320x240)")
    parser.add_argument("--command", default=None,
                        help="what to ask (default with the synthetic scene: one of its held-out commands)")
    parser.add_argument("--output", type=Path, default=Path("outputs/demo_image"),
                        help="directory for the results (default: %(default)s)")
    parser.add_argument("--model-path", type=Path, default=None,
                        help="LISA checkpoint folder (default: the built-in demo model)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=32,
                        help="answer length limit in tokens (default: %(default)s)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or set LISA_DEBUG=1)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    # Read the input before the (slower) model load, so a bad path fails fast.
    if args.image is None:
        image, command = demo_scene_frame()
        source = "held-out synthetic table scene"
    else:
        from lisa_model.processing.image import validate_rgb_image

        try:
            image = load_image(args.image)
            validate_rgb_image(image)  # the size limits, before the model loads
        except (OSError, ValueError) as exc:
            fail(f"cannot read image {str(args.image)!r}", exc, args.debug)
        source, command = str(args.image), "What can I use to cut this paper?"
    command = args.command or command

    import torch

    from lisa_model import DEMO_MODEL_DIR, LisaPredictor, load_lisa
    from lisa_model.visualize import overlay_masks, save_png

    model_path = args.model_path or DEMO_MODEL_DIR
    print(f"Image: {source} ({image.shape[0]}x{image.shape[1]})")
    print(f"Model: {model_path} on {args.device}")
    if args.model_path is None:
        print("NOTE: the built-in demo model knows only the synthetic table scenes it was trained on; "
              "give --model-path for a released LISA checkpoint.")

    start = time.perf_counter()
    try:
        model, tokenizer = load_lisa(model_path, device=torch.device(args.device))
    except (OSError, ValueError) as exc:  # lisa_model.CheckpointError is a ValueError
        fail(f"cannot load {str(model_path)!r}", exc, args.debug)
    load_seconds = time.perf_counter() - start

    predictor = LisaPredictor(model, tokenizer, max_new_tokens=args.max_new_tokens)
    predictor.set_image(image)
    try:
        prediction = predictor.predict(command)
    except ValueError as exc:  # a blank command, or one longer than the model's context
        fail(f"cannot answer {command!r}", exc, args.debug)

    out = Path(args.output)
    paths = {
        "input": out / "input.png",
        "overlay": out / "overlay.png",
        "answer": out / "answer.txt",
        "result": out / "result.json",
    }
    scores = [float(s) for s in prediction.scores]
    result = {
        "command": command,
        "answer": prediction.text,
        "num_masks": int(prediction.masks.shape[0]),
        "scores": scores,
        "mask_pixels": [int(m.sum()) for m in prediction.masks],
        "image": {"source": source, "height": int(image.shape[0]), "width": int(image.shape[1])},
        "model": {"path": str(model_path), "device": args.device},
        "timings": {
            "load_model": load_seconds,
            "set_image": {k: float(v) for k, v in predictor.image_timings.items()},
            "predict": {k: float(v) for k, v in prediction.timings.items()},
        },
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_png(paths["input"], image)
        save_png(paths["overlay"], overlay_masks(image, prediction.masks))
        paths["answer"].write_text(prediction.text + "\n", encoding="utf-8")
        paths["result"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:  # the output is a file, or not writable
        fail(f"cannot write the results to {str(out)!r}", exc, args.debug)

    print(f"Command: {command}")
    print(f"Answer: {prediction.text!r}")
    if scores:
        print(f"Masks: {len(scores)} (scores: {', '.join(f'{s:.3f}' for s in scores)})")
    else:
        print("Masks: 0 (the answer has no [SEG] token)")
    for name, path in paths.items():
        print(f"Wrote {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
