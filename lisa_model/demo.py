"""`lisa-demo`: run the whole LISA pipeline on one image and one command.

    lisa-demo [--image PATH] [--command TEXT] [--output DIR] [--model NAME] ...
    python -m lisa_model.demo ...

Without --image a synthetic table scene is used. Writes DIR/input.png,
DIR/overlay.png, DIR/answer.txt and DIR/result.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_COMMAND = "Which object would roll off the table? Please output segmentation mask."

TABLE_COLOR = (214, 190, 152)  # light wood
RED = (200, 40, 40)
BLUE = (40, 80, 200)
GREEN = (40, 160, 70)


def synthetic_scene(height: int = 480, width: int = 640) -> np.ndarray:
    """A deterministic RGB table scene: a red square, a blue circle and a green triangle
    on a light wood-coloured background.

    Returns a uint8 (height, width, 3) array; shapes scale with the image size.
    """
    if height < 8 or width < 8:
        raise ValueError(f"scene must be at least 8x8 pixels, got {height}x{width}")
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]

    # Background: table colour with a faint vertical shading and wood-grain stripes.
    shade = 1.0 - 0.12 * (rows / height) + 0.03 * np.sin(cols / width * 40.0 + rows / height * 3.0)
    image = np.asarray(TABLE_COLOR, np.float32)[None, None, :] * shade[..., None]

    unit = min(height, width)
    # Red square, left.
    side = 0.25 * unit
    top, left = 0.40 * height, 0.12 * width
    square = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    # Blue circle, centre.
    cy, cx, radius = 0.55 * height, 0.50 * width, 0.14 * unit
    circle = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
    # Green triangle (apex up), right.
    base_y, apex_y = 0.40 * height + side, 0.40 * height
    tx, half = 0.80 * width, 0.15 * unit
    frac = (rows - apex_y) / max(base_y - apex_y, 1.0)  # 0 at apex, 1 at base
    triangle = (frac >= 0) & (frac <= 1) & (np.abs(cols - tx) <= half * frac)

    for mask, color in ((square, RED), (circle, BLUE), (triangle, GREEN)):
        image[mask] = color
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def load_image(path) -> np.ndarray:
    """Read an image file as a uint8 (H, W, 3) RGB array. Raises OSError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        raise OSError(f"not a readable image file: {exc}") from exc


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .build import lisa_model_registry

    parser = argparse.ArgumentParser(
        prog="lisa-demo",
        description="Segment what a command asks for in an image with LISA, and save the result.",
    )
    parser.add_argument("--image", type=Path, default=None,
                        help="RGB image to use (default: a synthetic table scene, 480x640)")
    parser.add_argument("--command", default=DEFAULT_COMMAND, help="what to ask (default: %(default)r)")
    parser.add_argument("--output", type=Path, default=Path("outputs/demo"),
                        help="directory for the results (default: %(default)s)")
    parser.add_argument("--model", choices=sorted(lisa_model_registry), default="tiny",
                        help="built-in model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=32,
                        help="answer length limit in tokens (default: %(default)s)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    # Read the input before the (slower) model build, so a bad path fails fast.
    if args.image is None:
        image = synthetic_scene()
        source = "synthetic table scene"
    else:
        try:
            image = load_image(args.image)
        except (OSError, ValueError) as exc:
            print(f"lisa-demo: error: cannot read image {str(args.image)!r}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        source = str(args.image)

    import torch

    from .build import lisa_model_registry
    from .predictor import LisaPredictor
    from .visualize import overlay_masks, save_png

    print(f"Image: {source} ({image.shape[0]}x{image.shape[1]})")
    print(f"Model: {args.model} (seed {args.seed}) on {args.device}")
    if args.model.startswith("tiny"):
        print("NOTE: the built-in tiny model has random weights, so its answer and masks are not "
              "meaningful; this demo shows the pipeline working end to end.")

    start = time.perf_counter()
    model, tokenizer = lisa_model_registry[args.model](seed=args.seed)
    model = model.to(torch.device(args.device))
    build_seconds = time.perf_counter() - start

    predictor = LisaPredictor(model, tokenizer, max_new_tokens=args.max_new_tokens)
    predictor.set_image(image)
    prediction = predictor.predict(args.command)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "input": out / "input.png",
        "overlay": out / "overlay.png",
        "answer": out / "answer.txt",
        "result": out / "result.json",
    }
    save_png(paths["input"], image)
    save_png(paths["overlay"], overlay_masks(image, prediction.masks))
    paths["answer"].write_text(prediction.text + "\n", encoding="utf-8")
    scores = [float(s) for s in prediction.scores]
    result = {
        "command": args.command,
        "answer": prediction.text,
        "num_masks": int(prediction.masks.shape[0]),
        "scores": scores,
        "mask_pixels": [int(m.sum()) for m in prediction.masks],
        "image": {"source": source, "height": int(image.shape[0]), "width": int(image.shape[1])},
        "model": {"name": args.model, "seed": args.seed, "device": args.device,
                  "random_weights": args.model.startswith("tiny")},
        "timings": {
            "build_model": build_seconds,
            "set_image": {k: float(v) for k, v in predictor.image_timings.items()},
            "predict": {k: float(v) for k, v in prediction.timings.items()},
        },
    }
    paths["result"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"Command: {args.command}")
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
