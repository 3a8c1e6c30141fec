"""Miniature ReasonSeg and ScanNet exports in the real on-disk layouts, generated (tests, smoke runs).

`make_reason_seg(root)` writes ReasonSeg (train/val/test, both the OpenImages and the
ScanNetv2 portion, explanatory/train.json); `make_scannet_export(root, scene)` writes
a ScanNet v2 export (color/depth/pose/intrinsic + mesh) whose frames are views of a
textured plane seen by a camera sliding along x, so neighbouring frames are near
duplicates (distractors for frame association) and depth/pose are consistent.

Each ReasonSeg image's polygons are axis-aligned rectangles, listed smallest first,
so the expected mask is known exactly: a large target, an "ignore" rectangle inside
it, a small target inside that, and a "flag" rectangle over everything (skipped).
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

# (row0, col0, row1, col1) inclusive, for the mask layers drawn largest first.
LARGE = (4, 6, 35, 53)
IGNORE = (10, 14, 29, 45)
SMALL = (15, 20, 24, 35)
FLAG = (0, 0, 47, 63)
IMAGE_SIZE = (48, 64)

# ScanNet miniature: colour 96x128, depth 48x64 (ScanNet: 968x1296 and 480x640).
COLOR_SIZE = (96, 128)
DEPTH_SIZE = (48, 64)
PLANE_DEPTH = 2.0  # metres: the scene is the plane z = 2 in camera and world frames
COLOR_FX, DEPTH_FX = 100.0, 50.0
SHIFT_PX = 4  # colour pixels the view moves between consecutive exported frames
FRAME_STEP = 10  # exported frame ids 0, 10, 20, ...
SCANNET_FRAMES = 8
TARGET_FRAME = 30  # the frame each ReasonSeg ScanNet image is taken from
INVALID_POSE_FRAME = 50  # lost tracking: pose all -inf


def rect_points(rect) -> list[list[float]]:
    """Polygon (x, y) points of an inclusive (row0, col0, row1, col1) rectangle."""
    r0, c0, r1, c1 = rect
    return [[c0, r0], [c1, r0], [c1, r1], [c0, r1]]


def expected_mask(size=IMAGE_SIZE) -> np.ndarray:
    """The mask the loader must produce for every ReasonSeg image here."""
    mask = np.zeros(size, dtype=np.uint8)
    for rect, value in ((LARGE, 1), (IGNORE, 255), (SMALL, 1)):
        r0, c0, r1, c1 = rect
        mask[r0 : r1 + 1, c0 : c1 + 1] = value
    return mask


def shapes() -> list[dict]:
    # File order: smallest first, so drawing in file order would give a wrong mask.
    return [
        {"label": "target", "points": rect_points(SMALL), "shape_type": "polygon"},
        {"label": "ignore", "points": rect_points(IGNORE), "shape_type": "polygon"},
        {"label": "flag", "points": rect_points(FLAG), "shape_type": "polygon"},
        {"label": "target", "points": rect_points(LARGE), "shape_type": "polygon"},
    ]


def texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random RGB texture, uint8 (height, width, 3)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def scannet_frame(frame: int, seed: int = 7) -> np.ndarray:
    """Colour frame `frame` of the miniature scene: a window on the plane's texture."""
    k = frame // FRAME_STEP
    big = texture(COLOR_SIZE[0], COLOR_SIZE[1] + SHIFT_PX * SCANNET_FRAMES, seed)
    return big[:, k * SHIFT_PX : k * SHIFT_PX + COLOR_SIZE[1]].copy()


# Names: OpenImages-style (Flickr ids) and ScanNet-style (sceneXXXX_YY_N).
OPENIMAGES = ["4971309080_370ab0baf3_o", "5120373127_9e1c7e8e55_o", "8321977741_bd9a0e4a20_o"]
SCANNET = ["scene0001_00_0", "scene0002_00_1"]
SCANNET_SCENES = ["scene0001_00", "scene0002_00"]

TRAIN_TEXTS = {
    True: [
        "What keeps the room warm in winter?",
        "Which object would you use to heat the room?",
        "What provides heat here?",
    ],
    False: ["radiator", "heater", "warm object"],
}
EXPLANATION = "The radiator is mounted under the window and heats the room."


def _write_image(path: str, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, quality=95)


def make_reason_seg(root: str) -> dict:
    """Write a miniature ReasonSeg under `root`; returns what was written.

    Split contents (name -> is_sentence):
        train: 3 OpenImages + 1 ScanNet image, 3 rephrasings each; the first two in explanatory/train.json
        val:   2 OpenImages + 2 ScanNet images, one query each (two for the first)
        test:  1 OpenImages + 1 ScanNet image
    ScanNet images are frame TARGET_FRAME of their scene (see make_scannet_export),
    downscaled to IMAGE_SIZE and brightened, as a re-encoded copy would be.
    """
    layout = {
        "train": [(OPENIMAGES[0], True), (OPENIMAGES[1], False), (OPENIMAGES[2], True), (SCANNET[0], False)],
        "val": [(OPENIMAGES[0], False), (OPENIMAGES[1], True), (SCANNET[0], True), (SCANNET[1], False)],
        "test": [(OPENIMAGES[2], True), (SCANNET[1], False)],
    }
    written = {}
    for split, items in layout.items():
        folder = os.path.join(root, split)
        os.makedirs(folder, exist_ok=True)
        for position, (name, sentence) in enumerate(items):
            if name.startswith("scene"):
                scene_seed = 7 + SCANNET.index(name)
                frame = scannet_frame(TARGET_FRAME, seed=scene_seed)
                image = np.asarray(Image.fromarray(frame).resize(IMAGE_SIZE[::-1], Image.BILINEAR))
                image = np.clip(image.astype(np.int16) + 12, 0, 255).astype(np.uint8)
            else:
                image = texture(*IMAGE_SIZE, seed=100 + OPENIMAGES.index(name))
            _write_image(os.path.join(folder, name + ".jpg"), image)
            if split == "train":
                texts = TRAIN_TEXTS[sentence]
            elif split == "val" and position == 0:
                texts = ["the radiator", "the heater"]
            else:
                texts = [TRAIN_TEXTS[sentence][position % 3]]
            annotation = {"text": texts, "is_sentence": sentence, "shapes": shapes()}
            with open(os.path.join(folder, name + ".json"), "w", encoding="utf-8") as handle:
                json.dump(annotation, handle)
            written.setdefault(split, {})[name] = annotation
    os.makedirs(os.path.join(root, "explanatory"), exist_ok=True)
    explanatory = [
        {"image": name + ".jpg", "query": TRAIN_TEXTS[sentence][0], "outputs": EXPLANATION}
        for name, sentence in layout["train"][:2]
    ]
    with open(os.path.join(root, "explanatory", "train.json"), "w", encoding="utf-8") as handle:
        json.dump(explanatory, handle)
    written["explanatory"] = explanatory
    return written


def _intrinsic(fx: float, height: int, width: int) -> np.ndarray:
    k = np.eye(4)
    k[0, 0] = k[1, 1] = fx
    k[0, 2], k[1, 2] = (width - 1) / 2, (height - 1) / 2
    return k


def frame_pose(frame: int) -> np.ndarray:
    """Camera-to-world of `frame`: the camera slides along +x (the view moves SHIFT_PX right)."""
    pose = np.eye(4)
    pose[0, 3] = (frame // FRAME_STEP) * SHIFT_PX * PLANE_DEPTH / COLOR_FX
    return pose


def make_scannet_export(root: str, scene: str, seed: int = 7) -> str:
    """Write `{root}/{scene}/` in the ScanNet v2 export layout; returns the scene folder.

    color/{f}.jpg (COLOR_SIZE), depth/{f}.png (uint16 mm, DEPTH_SIZE, all PLANE_DEPTH),
    pose/{f}.txt (4x4 camera-to-world; frame INVALID_POSE_FRAME all -inf),
    intrinsic/intrinsic_color.txt, intrinsic/intrinsic_depth.txt (4x4), and
    {scene}_vh_clean_2.ply: a vertex grid on the plane z = PLANE_DEPTH, and {scene}.txt
    (identity axisAlignment, image sizes).
    """
    scene_dir = os.path.join(root, scene)
    for sub in ("color", "depth", "pose", "intrinsic"):
        os.makedirs(os.path.join(scene_dir, sub), exist_ok=True)
    for k in range(SCANNET_FRAMES):
        frame = k * FRAME_STEP
        _write_image(os.path.join(scene_dir, "color", f"{frame}.jpg"), scannet_frame(frame, seed))
        depth = np.full(DEPTH_SIZE, int(PLANE_DEPTH * 1000), dtype=np.uint16)
        Image.fromarray(depth).save(os.path.join(scene_dir, "depth", f"{frame}.png"))
        pose = np.full((4, 4), -np.inf) if frame == INVALID_POSE_FRAME else frame_pose(frame)
        np.savetxt(os.path.join(scene_dir, "pose", f"{frame}.txt"), pose)
    np.savetxt(os.path.join(scene_dir, "intrinsic", "intrinsic_color.txt"), _intrinsic(COLOR_FX, *COLOR_SIZE))
    np.savetxt(os.path.join(scene_dir, "intrinsic", "intrinsic_depth.txt"), _intrinsic(DEPTH_FX, *DEPTH_SIZE))
    np.savetxt(os.path.join(scene_dir, "intrinsic", "extrinsic_color.txt"), np.eye(4))
    np.savetxt(os.path.join(scene_dir, "intrinsic", "extrinsic_depth.txt"), np.eye(4))
    _write_plane_mesh(os.path.join(scene_dir, f"{scene}_vh_clean_2.ply"))
    with open(os.path.join(scene_dir, f"{scene}.txt"), "w", encoding="ascii") as handle:
        handle.write("axisAlignment = " + " ".join(str(v) for v in np.eye(4).reshape(-1)) + "\n")
        handle.write(f"colorHeight = {COLOR_SIZE[0]}\ncolorWidth = {COLOR_SIZE[1]}\n")
        handle.write(f"depthHeight = {DEPTH_SIZE[0]}\ndepthWidth = {DEPTH_SIZE[1]}\n")
    return scene_dir


def _write_plane_mesh(path: str, spacing: float = 0.02) -> None:
    """ASCII PLY: vertex grids on z = PLANE_DEPTH (+0.1) covering every frame's view, faces on the first."""
    half_w = COLOR_SIZE[1] / 2 * PLANE_DEPTH / COLOR_FX
    half_h = COLOR_SIZE[0] / 2 * PLANE_DEPTH / COLOR_FX
    xs = np.arange(-half_w, half_w + frame_pose((SCANNET_FRAMES - 1) * FRAME_STEP)[0, 3] + spacing, spacing)
    ys = np.arange(-half_h, half_h + spacing, spacing)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    # Two layers 0.1 m apart (both pass the 0.2 m visibility test), so lifted regions
    # have 3D boxes of non-zero volume.
    vertices = np.concatenate(
        [np.concatenate([grid, np.full((len(grid), 1), depth)], 1) for depth in (PLANE_DEPTH, PLANE_DEPTH + 0.1)]
    )
    nx = len(xs)
    faces = []
    for row in range(len(ys) - 1):
        for col in range(nx - 1):
            a = row * nx + col
            faces += [(a, a + 1, a + nx), (a + 1, a + nx + 1, a + nx)]
    with open(path, "w", encoding="ascii") as handle:
        handle.write("ply\nformat ascii 1.0\n")
        handle.write(f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n")
        handle.write("property uchar red\nproperty uchar green\nproperty uchar blue\n")
        handle.write(f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
        for x, y, z in vertices:
            handle.write(f"{x:.4f} {y:.4f} {z:.4f} 128 128 128\n")
        for face in faces:
            handle.write(f"3 {face[0]} {face[1]} {face[2]}\n")


def make_all(root: str) -> dict:
    """ReasonSeg under {root}/reason_seg and both scenes' exports under {root}/scannet."""
    written = make_reason_seg(os.path.join(root, "reason_seg"))
    for index, scene in enumerate(SCANNET_SCENES):
        make_scannet_export(os.path.join(root, "scannet"), scene, seed=7 + index)
    return written


if __name__ == "__main__":
    import sys

    print(json.dumps(make_all(sys.argv[1] if len(sys.argv) > 1 else "mini_data"), indent=1)[:2000])
