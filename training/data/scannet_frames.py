"""Associate a ReasonSeg ScanNet image with the exported frame of its scene it was taken from.

ReasonSeg's ScanNetv2 images (`sceneXXXX_YY_N.jpg`) are colour frames of scene
`sceneXXXX_YY`, but the frame number is not recorded (N only numbers the images
taken from a scene). To lift their masks to 3D we find the frame by image content:

1. Every exported frame `{scene_dir}/color/{frame}.jpg` and the ReasonSeg image are
   reduced to small grayscale thumbnails of one fixed size (default 40x30 for the
   coarse pass), ignoring aspect ratio and resolution, so resized or re-encoded
   copies still match.
2. Each thumbnail is normalised to zero mean and unit variance; the score of a
   frame is the normalised cross-correlation (NCC, mean of products, in [-1, 1])
   with the ReasonSeg image. NCC is insensitive to brightness/contrast changes
   from JPEG re-encoding.
3. The best `refine` candidates of the coarse pass are re-scored at a finer size
   (default 160x120) and the best one wins. Neighbouring frames of a ScanNet
   sweep are near duplicates; the fine pass separates them.

Frames whose pose file exists but is not finite (ScanNet marks lost tracking with
-inf) are skipped when `require_valid_pose`, since they cannot be lifted to 3D.
`frame_range` narrows the search when the frame index is roughly known.
A score well below 1 (e.g. < 0.9) means the scene export does not hold the image.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

COARSE_SIZE = (30, 40)  # (height, width)
FINE_SIZE = (120, 160)


def list_frames(scene_dir: str) -> list[int]:
    """Frame ids of `{scene_dir}/color/*.jpg`, in numeric order."""
    folder = os.path.join(scene_dir, "color")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no color/ folder in ScanNet export {scene_dir}")
    stems = (os.path.splitext(f)[0] for f in os.listdir(folder) if f.lower().endswith((".jpg", ".png")))
    return sorted(int(stem) for stem in stems if stem.isdigit())


def pose_is_valid(scene_dir: str, frame: int) -> bool:
    """False when `pose/{frame}.txt` exists and holds non-finite values; True otherwise."""
    path = os.path.join(scene_dir, "pose", f"{frame}.txt")
    if not os.path.isfile(path):
        return True
    return bool(np.isfinite(np.loadtxt(path)).all())


def _color_path(scene_dir: str, frame: int) -> str:
    jpg = os.path.join(scene_dir, "color", f"{frame}.jpg")
    return jpg if os.path.isfile(jpg) else os.path.join(scene_dir, "color", f"{frame}.png")


def thumbnail(image, size: tuple[int, int]) -> np.ndarray:
    """Zero-mean, unit-variance grayscale thumbnail.

    Arguments:
        image: path, PIL image, or uint8 (H, W, 3) RGB / (H, W) gray array.
        size: (height, width) of the thumbnail.

    Returns:
        float64 array of shape `size`; all zeros for a constant image.
    """
    if isinstance(image, str):
        with Image.open(image) as opened:
            # JPEG draft mode decodes at a reduced scale (>= 2x the thumbnail): much faster.
            opened.draft("L", (size[1] * 2, size[0] * 2))
            pil = opened.convert("L")
    elif isinstance(image, Image.Image):
        pil = image.convert("L")
    else:
        pil = Image.fromarray(np.asarray(image)).convert("L")
    # Box filter averages every source pixel: robust to resolution differences.
    small = np.asarray(pil.resize((size[1], size[0]), Image.BOX), dtype=np.float64)
    small = small - small.mean()
    std = small.std()
    return small / std if std > 1e-8 else small


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two normalised thumbnails of the same shape."""
    return float((a * b).mean())


def associate(
    reason_image,
    scene_dir: str,
    frame_range: tuple[int, int] | None = None,
    refine: int = 5,
    require_valid_pose: bool = True,
    coarse_size: tuple[int, int] = COARSE_SIZE,
    fine_size: tuple[int, int] = FINE_SIZE,
    cache: dict | None = None,
) -> tuple[int, float]:
    """The exported frame of `scene_dir` that best matches a ReasonSeg image.

    Arguments:
        reason_image: path or uint8 (H, W, 3) RGB array of the ReasonSeg image.
        scene_dir (str): a ScanNet export `sceneXXXX_YY/` with color/ (and pose/).
        frame_range: optional inclusive (first, last) frame ids to search.
        refine (int): how many coarse candidates are re-scored at `fine_size`.
        require_valid_pose (bool): skip frames whose pose is not finite.
        cache (dict | None): reused across calls, keeps the frames' thumbnails (several
            ReasonSeg images come from one scene).

    Returns:
        (frame_id, score): the frame id (the stem of color/{frame}.jpg) and its fine
        NCC score in [-1, 1] (1 = identical up to brightness/contrast).
    """
    frames = list_frames(scene_dir)
    if frame_range is not None:
        frames = [f for f in frames if frame_range[0] <= f <= frame_range[1]]
    if require_valid_pose:
        frames = [f for f in frames if pose_is_valid(scene_dir, f)]
    if not frames:
        raise ValueError(f"no candidate frames in {scene_dir} (range {frame_range})")
    if isinstance(reason_image, str):
        with Image.open(reason_image) as opened:
            reason_image = np.asarray(opened.convert("RGB"))
    cache = {} if cache is None else cache

    def frame_thumbnail(frame: int, size: tuple[int, int]) -> np.ndarray:
        key = (os.path.abspath(scene_dir), frame, size)
        if key not in cache:
            cache[key] = thumbnail(_color_path(scene_dir, frame), size)
        return cache[key]

    query = thumbnail(reason_image, coarse_size)
    coarse = [ncc(query, frame_thumbnail(f, coarse_size)) for f in frames]
    order = np.argsort(coarse, kind="stable")[::-1][: max(refine, 1)]
    query = thumbnail(reason_image, fine_size)
    scored = [(ncc(query, frame_thumbnail(frames[i], fine_size)), -frames[i]) for i in order]
    score, negative_frame = max(scored)
    return -negative_frame, score
