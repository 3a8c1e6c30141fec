"""ScanNet v2 scenes (the SensReader export layout) and 2D masks lifted onto their mesh.

Layout of one exported scene directory `<scene>/` (e.g. scene0000_00/):
    color/<frame>.jpg               1296x968 RGB
    depth/<frame>.png               640x480 uint16 millimetres, 0 = no measurement
    pose/<frame>.txt                4x4 camera-to-world (all -inf where tracking was lost)
    intrinsic/intrinsic_color.txt   4x4 (K in the top-left 3x3)
    intrinsic/intrinsic_depth.txt   4x4
    <scene>_vh_clean_2.ply          the reconstructed mesh, in the poses' world frame
    <scene>.txt                     metadata, `axisAlignment = <16 numbers, row-major>`

The poses and the mesh share one world frame; the axis alignment maps it onto the
aligned frame in which ScanRefer-style boxes are given (compare with `lisa_ros.geometry.metrics`).
No ROS, no torch.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from .camera import CameraIntrinsics, project_to_pixels
from .depth import depth_to_meters
from .poses import is_valid_pose, transform_points
from .region import open3d_module
from .visibility import visible_points

logger = logging.getLogger(__name__)

__all__ = ["ScanNetScene", "lift_masks_to_vertices"]


def _read_matrix(path: Path) -> np.ndarray:
    """A whitespace-separated 4x4 matrix file (ScanNet poses and intrinsics)."""
    values = np.array(path.read_text().split(), dtype=np.float64)
    if values.size != 16:
        raise ValueError(f"{path}: expected 16 numbers, found {values.size}")
    return values.reshape(4, 4)


def _read_image(path: Path, flags: int) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), flags)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return image


class ScanNetScene:
    """One exported ScanNet scene on disk; files are read when asked for.

    Arguments:
      scene_dir (str | Path): the scene directory (its name is the scene id).
      depth_scale (float): depth PNG units per metre (ScanNet: 1000).
    """

    def __init__(self, scene_dir, depth_scale: float = 1000.0):
        self.scene_dir = Path(scene_dir)
        if not self.scene_dir.is_dir():
            raise FileNotFoundError(f"no scene directory {self.scene_dir}")
        self.scene_id = self.scene_dir.name
        self.depth_scale = float(depth_scale)
        # Exports name frames 0.jpg, 20.jpg, ... (some tools zero-pad): map the number to the stem.
        pose_files = (self.scene_dir / "pose").glob("*.txt")
        self._stems = {int(path.stem): path.stem for path in pose_files if path.stem.isdigit()}
        depth_stems = {path.stem for path in (self.scene_dir / "depth").glob("*.png")}
        self.frame_ids: list[int] = sorted(i for i, stem in self._stems.items() if stem in depth_stems)
        self._vertices = None
        self._depth_intrinsics = None
        self._color_intrinsics = None

    def __repr__(self) -> str:
        return f"ScanNetScene({str(self.scene_dir)!r}, {len(self.frame_ids)} frames)"

    def _path(self, folder: str, frame_id: int, suffix: str) -> Path:
        stem = self._stems.get(int(frame_id))
        if stem is None:
            raise KeyError(f"{self.scene_id} has no frame {frame_id}")
        return self.scene_dir / folder / f"{stem}{suffix}"

    # Frames.

    def color(self, frame_id: int) -> np.ndarray:
        """uint8 HxWx3 RGB (1296x968 in ScanNet)."""
        import cv2

        return cv2.cvtColor(_read_image(self._path("color", frame_id, ".jpg"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def depth_raw(self, frame_id: int) -> np.ndarray:
        """uint16 HxW as stored (millimetres; 0 = no measurement)."""
        import cv2

        return _read_image(self._path("depth", frame_id, ".png"), cv2.IMREAD_UNCHANGED)

    def depth_m(self, frame_id: int) -> np.ndarray:
        """float32 HxW metres, NaN where there is no measurement."""
        return depth_to_meters(self.depth_raw(frame_id), self.depth_scale)

    def pose(self, frame_id: int) -> np.ndarray | None:
        """4x4 camera-to-world (float64), or None (with a warning) for an invalid (-inf) pose."""
        pose = _read_matrix(self._path("pose", frame_id, ".txt"))
        if not is_valid_pose(pose):
            logger.warning("%s frame %s: invalid camera pose (tracking lost), frame skipped", self.scene_id, frame_id)
            return None
        return pose

    # Cameras.

    def _intrinsics(self, name: str, folder: str, suffix: str, meta_size: tuple[str, str]) -> CameraIntrinsics:
        matrix = _read_matrix(self.scene_dir / "intrinsic" / f"intrinsic_{name}.txt")
        meta = self.meta
        if meta_size[0] in meta and meta_size[1] in meta:
            width, height = int(meta[meta_size[0]]), int(meta[meta_size[1]])
        else:  # size from the first image
            import cv2

            image = _read_image(self._path(folder, self.frame_ids[0], suffix), cv2.IMREAD_UNCHANGED)
            height, width = image.shape[:2]
        return CameraIntrinsics.from_matrix(matrix, width, height)

    @property
    def depth_intrinsics(self) -> CameraIntrinsics:
        """Intrinsics of the depth images (`intrinsic/intrinsic_depth.txt`)."""
        if self._depth_intrinsics is None:
            self._depth_intrinsics = self._intrinsics("depth", "depth", ".png", ("depthWidth", "depthHeight"))
        return self._depth_intrinsics

    @property
    def color_intrinsics(self) -> CameraIntrinsics:
        """Intrinsics of the colour images (`intrinsic/intrinsic_color.txt`)."""
        if self._color_intrinsics is None:
            self._color_intrinsics = self._intrinsics("color", "color", ".jpg", ("colorWidth", "colorHeight"))
        return self._color_intrinsics

    # Scene files.

    @cached_property
    def meta(self) -> dict[str, str]:
        """`<scene>.txt` as key -> value strings ({} when the file is missing)."""
        path = self.scene_dir / f"{self.scene_id}.txt"
        if not path.exists():
            return {}
        entries = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return {key.strip(): value.strip() for key, value in entries}

    @cached_property
    def axis_alignment(self) -> np.ndarray:
        """4x4 mapping the mesh/pose frame onto the axis-aligned frame (identity, with a
        warning, when `<scene>.txt` has none: test scenes of ScanNet are not aligned)."""
        text = self.meta.get("axisAlignment")
        if text is None:
            logger.warning("%s: no axisAlignment in %s.txt, using the identity", self.scene_id, self.scene_id)
            return np.eye(4)
        values = np.array(text.split(), dtype=np.float64)
        if values.size != 16:
            raise ValueError(f"{self.scene_id}: axisAlignment has {values.size} numbers, expected 16")
        return values.reshape(4, 4)

    @property
    def mesh_path(self) -> Path:
        return self.scene_dir / f"{self.scene_id}_vh_clean_2.ply"

    def vertices(self, aligned: bool = False) -> np.ndarray:
        """float64 [V, 3] mesh vertices in file order, in the pose frame (or the aligned frame)."""
        if self._vertices is None:
            # A point-cloud read keeps every vertex in file order (a mesh read may drop
            # unreferenced ones), and vertex indices are what labels refer to.
            cloud = open3d_module().io.read_point_cloud(str(self.mesh_path))
            vertices = np.asarray(cloud.points, dtype=np.float64)
            if len(vertices) == 0:
                raise ValueError(f"no vertices read from {self.mesh_path}")
            self._vertices = vertices
        return transform_points(self._vertices, self.axis_alignment) if aligned else self._vertices


# 2D -> 3D.


def lift_masks_to_vertices(
    scene: ScanNetScene,
    frame_ids: Sequence[int],
    masks: Sequence[np.ndarray],
    depth_tolerance: float = 0.2,
    min_ratio: float = 0.5,
) -> np.ndarray:
    """Mesh vertices selected by per-frame 2D masks: bool [V].

    In each frame (frames with an invalid pose are skipped), a vertex is visible when it
    passes the ScanNet visibility test (`geometry.visible_points` with the depth image and
    its intrinsics: |projected depth - observed depth| <= depth_tolerance, metres), and
    selected when visible and inside the mask. The mask is read where the vertex projects
    with the colour intrinsics (scaled to the mask's size), so masks may come at colour
    (1296x968) or depth resolution.

    Aggregation: a vertex is kept when it is selected in at least `min_ratio` of the frames
    where it is visible (and in at least one). The default 0.5, a majority vote, lets frames
    that clearly see a vertex outside the mask overrule one whose mask bled onto it;
    `min_ratio=0` gives "selected in any frame".

    Arguments:
      masks: one bool HxW per entry of `frame_ids`.
    """
    if len(frame_ids) != len(masks):
        raise ValueError(f"{len(frame_ids)} frame ids but {len(masks)} masks")
    vertices = scene.vertices()
    visible_count = np.zeros(len(vertices), dtype=np.int32)
    selected_count = np.zeros(len(vertices), dtype=np.int32)
    for frame_id, mask in zip(frame_ids, masks):
        pose = scene.pose(frame_id)
        if pose is None:
            continue
        mask = np.asarray(mask, dtype=bool)
        visible, _, _ = visible_points(vertices, scene.depth_m(frame_id), scene.depth_intrinsics, pose, depth_tolerance)
        # Where each vertex falls in the mask image (colour camera, registered with depth).
        camera = transform_points(vertices[visible], np.linalg.inv(pose))
        intrinsics = scene.color_intrinsics.scaled(mask.shape[1], mask.shape[0])
        rows, cols = project_to_pixels(camera, intrinsics)
        inside = (cols >= 0) & (cols < mask.shape[1]) & (rows >= 0) & (rows < mask.shape[0])
        in_mask = np.zeros(len(camera), dtype=bool)
        in_mask[inside] = mask[rows[inside], cols[inside]]
        visible_count += visible
        selected_count[np.flatnonzero(visible)[in_mask]] += 1
    return (selected_count > 0) & (selected_count >= min_ratio * visible_count)

