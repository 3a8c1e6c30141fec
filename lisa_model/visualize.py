"""Drawing predicted masks on images (numpy + pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Ten clearly different RGB colours; masks beyond ten reuse them in order.
PALETTE = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (0, 130, 200),  # blue
    (255, 225, 25),  # yellow
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (245, 130, 48),  # orange
    (240, 50, 230),  # magenta
    (128, 128, 0),  # olive
    (0, 0, 128),  # navy
)


def _check_image(image) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 HxWx3 numpy array, got {desc}")


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Boolean (H, W) outline of a boolean (H, W) mask: mask pixels with a 4-neighbour outside it.

    Pixels on the image border count as outline, so masks touching the border stay closed.
    """
    padded = np.pad(mask, 1, constant_values=False)
    eroded = (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )
    return mask & ~eroded


def overlay_masks(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5, colors=None) -> np.ndarray:
    """Blend one colour per mask into an image and outline each mask.

    Args:
        image: uint8 (H, W, 3) RGB image; not modified.
        masks: bool (N, H, W); masks[i, row, col] marks pixel (row, col) of mask i.
        alpha: colour weight inside a mask, 0 (invisible) .. 1 (solid).
        colors: optional sequence of RGB triples (0..255); defaults to PALETTE.
            Cycled when there are more masks than colours.

    Returns:
        New uint8 (H, W, 3) image. Pixels outside every mask are unchanged;
        outline pixels are exactly the mask colour. Later masks are drawn over
        earlier ones.
    """
    _check_image(image)
    if not isinstance(masks, np.ndarray) or masks.dtype != np.bool_:
        raise ValueError("masks must be a bool numpy array of shape (N, H, W)")
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks must have shape (N, {image.shape[0]}, {image.shape[1]}), got {masks.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = PALETTE if colors is None else colors
    if len(colors) == 0:
        raise ValueError("colors must not be empty")

    out = image.astype(np.float32)
    for i, mask in enumerate(masks):
        color = np.asarray(colors[i % len(colors)], dtype=np.float32)
        out[mask] = (1.0 - alpha) * out[mask] + alpha * color
        out[mask_outline(mask)] = color
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_png(path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) RGB image as PNG, creating parent directories."""
    _check_image(image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
