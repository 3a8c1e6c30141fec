"""Synthetic scenes with known geometry for the geometry tests (numpy only).

A floor (the plane z = 0, world z up) with axis-aligned boxes and upright cylinders.
Depth and labels are rendered by lisa_ros.synthetic.raycast, the ray caster of the demo
scenes; the ground truth of what a camera can see comes from the same ray caster (a
surface sample is visible when nothing lies between it and the camera), while the
surface samples themselves are exact, so tests compare the geometry code against exact
surfaces rather than against itself.

`write_scannet_scene` writes such a scene in the ScanNet v2 export layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lisa_ros.geometry import CameraIntrinsics, look_at
from lisa_ros.synthetic.raycast import Primitive, cast_rays, pixel_rays

# ScanNet-like cameras: the depth camera's usual intrinsics; the colour camera is the
# same camera at 1296x968 (ScanNet's colour and depth are registered up to resolution).
DEPTH_INTRINSICS = CameraIntrinsics(577.87, 577.87, 319.5, 239.5, 640, 480)
COLOR_INTRINSICS = DEPTH_INTRINSICS.scaled(1296, 968)

FLOOR = 0  # label of the floor; objects are 1, 2, ... in scene order; -1 = nothing
_IDENTITY = tuple(map(tuple, np.eye(3).tolist()))
_GREY = (0.5, 0.5, 0.5)  # primitives need a colour; these scenes render depth and labels only

__all__ = [
    "COLOR_INTRINSICS",
    "DEPTH_INTRINSICS",
    "FLOOR",
    "Box",
    "Cylinder",
    "Scene",
    "orbit",
    "scene_mesh",
    "table_scene",
    "write_ply",
    "write_scannet_scene",
]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: centre and size (x, y, z), metres."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]

    @property
    def low(self):
        return np.subtract(self.center, np.divide(self.size, 2))

    @property
    def high(self):
        return np.add(self.center, np.divide(self.size, 2))

    @property
    def primitive(self) -> Primitive:
        return Primitive("box", tuple(self.center), _IDENTITY, tuple(np.divide(self.size, 2).tolist()), _GREY)

    def surface_samples(self, spacing: float) -> np.ndarray:
        """Points on a regular grid over all six faces, about `spacing` apart (uniform by area)."""
        samples = []
        for axis in range(3):
            u_axis, v_axis = [a for a in range(3) if a != axis]
            u = _grid(self.low[u_axis], self.high[u_axis], spacing)
            v = _grid(self.low[v_axis], self.high[v_axis], spacing)
            uu, vv = np.meshgrid(u, v, indexing="ij")
            for value in (self.low[axis], self.high[axis]):
                face = np.empty((uu.size, 3))
                face[:, axis], face[:, u_axis], face[:, v_axis] = value, uu.ravel(), vv.ravel()
                samples.append(face)
        return np.concatenate(samples)


@dataclass(frozen=True)
class Cylinder:
    """An upright cylinder: axis through (x, y), radius, from z_min to z_max, metres."""

    center_xy: tuple[float, float]
    radius: float
    z_min: float
    z_max: float

    @property
    def center(self):
        return np.array([*self.center_xy, (self.z_min + self.z_max) / 2])

    @property
    def size(self):
        return np.array([2 * self.radius, 2 * self.radius, self.z_max - self.z_min])

    @property
    def primitive(self) -> Primitive:
        dims = (self.radius, (self.z_max - self.z_min) / 2)
        return Primitive("cylinder", tuple(self.center.tolist()), _IDENTITY, dims, _GREY)

    def surface_samples(self, spacing: float) -> np.ndarray:
        circumference = 2 * np.pi * self.radius
        angles = np.arange(0, 2 * np.pi, spacing / self.radius)[: int(circumference / spacing)]
        heights = _grid(self.z_min, self.z_max, spacing)
        aa, hh = np.meshgrid(angles, heights, indexing="ij")
        x = self.center_xy[0] + self.radius * np.cos(aa.ravel())
        y = self.center_xy[1] + self.radius * np.sin(aa.ravel())
        side = np.stack([x, y, hh.ravel()], 1)
        g = _grid(-self.radius, self.radius, spacing)
        xx, yy = np.meshgrid(g, g, indexing="ij")
        disc = (xx**2 + yy**2) <= self.radius**2
        caps = [
            np.stack([self.center_xy[0] + xx[disc], self.center_xy[1] + yy[disc], np.full(disc.sum(), h)], 1)
            for h in (self.z_min, self.z_max)
        ]
        return np.concatenate([side, *caps])


def _grid(low: float, high: float, spacing: float) -> np.ndarray:
    """Cell centres of [low, high] split into cells of about `spacing`."""
    count = max(1, int(round((high - low) / spacing)))
    return low + (np.arange(count) + 0.5) * (high - low) / count


@dataclass
class Scene:
    """A floor of half-width `floor_half` (metres) around the origin and some objects.

    The floor is a thin slab whose top face is the plane z = 0 (the ray caster's primitives
    are boxes, cylinders and spheres).
    """

    objects: list = field(default_factory=list)
    floor_half: float = 3.0

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First hit of each ray o + t d: (t [N], label [N]); t inf and label -1 where nothing."""
        floor = Primitive("box", (0.0, 0.0, -0.005), _IDENTITY, (self.floor_half, self.floor_half, 0.005), _GREY)
        hits = cast_rays([floor, *(obj.primitive for obj in self.objects)], origins, directions)
        return hits.t, hits.primitive  # primitive 0 is the floor (FLOOR), object k is primitive k

    def render(self, intrinsics: CameraIntrinsics, camera_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(depth float32 HxW metres, 0 where nothing; labels int32 HxW) seen by a camera.

        Rays are cast through pixel centres (`pixel_rays`), so the hit parameter t is the
        camera z, i.e. the depth.
        """
        t, label = self.cast(*pixel_rays(intrinsics, camera_to_world))
        shape = (intrinsics.height, intrinsics.width)
        depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32)
        return depth.reshape(shape), label.reshape(shape).astype(np.int32)

    def visible_surface(
        self, index: int, poses: list, intrinsics: CameraIntrinsics, spacing: float = 0.002
    ) -> np.ndarray:
        """Samples of object `index`'s surface (uniform by area) seen by at least one camera.

        A sample is seen when it projects inside the image and the ray from the camera
        centre to it meets nothing before it (its own surface included: back faces fail).
        """
        samples = self.objects[index - 1].surface_samples(spacing)
        seen = np.zeros(len(samples), dtype=bool)
        for pose in poses:
            eye = pose[:3, 3]
            camera = (samples - eye) @ pose[:3, :3]
            in_front = camera[:, 2] > 0
            u = camera[:, 0] / np.where(in_front, camera[:, 2], 1) * intrinsics.fx + intrinsics.cx
            v = camera[:, 1] / np.where(in_front, camera[:, 2], 1) * intrinsics.fy + intrinsics.cy
            in_width = (u >= -0.5) & (u < intrinsics.width - 0.5)
            in_image = in_front & in_width & (v >= -0.5) & (v < intrinsics.height - 0.5)
            t, _ = self.cast(np.broadcast_to(eye, samples.shape), samples - eye)
            seen |= in_image & (t >= 1 - 1e-4)
        return samples[seen]


def orbit(target, radius: float, height: float, azimuths_deg) -> list[np.ndarray]:
    """Cameras on a circle around `target` at `height`, looking at it."""
    target = np.asarray(target, dtype=np.float64)
    poses = []
    for azimuth in np.radians(np.asarray(azimuths_deg, dtype=np.float64)):
        eye = target + np.array([radius * np.cos(azimuth), radius * np.sin(azimuth), 0.0])
        eye[2] = height
        poses.append(look_at(eye, target))
    return poses


def table_scene() -> Scene:
    """A box (object 1), a cylinder (object 2) and a taller box (object 3) on the floor."""
    return Scene(
        objects=[
            Box(center=(0.0, 0.0, 0.125), size=(0.30, 0.20, 0.25)),
            Cylinder(center_xy=(0.45, 0.35), radius=0.06, z_min=0.0, z_max=0.22),
            Box(center=(0.0, -0.40, 0.20), size=(0.12, 0.12, 0.40)),
        ]
    )


# ScanNet export layout.

_PALETTE = np.array([[200, 200, 190], [200, 60, 50], [50, 90, 200], [60, 170, 80], [230, 200, 60]], dtype=np.uint8)


def _write_matrix(path: Path, matrix: np.ndarray) -> None:
    path.write_text("\n".join(" ".join(f"{value:.9g}" for value in row) for row in matrix) + "\n")


def _intrinsic_4x4(intrinsics: CameraIntrinsics) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = intrinsics.matrix()
    return matrix


def scene_mesh(scene: Scene, spacing: float = 0.02, floor_spacing: float = 0.1, floor_margin: float = 0.05):
    """A vertex cloud with per-vertex labels and a few triangles, ScanNet-mesh-like.

    Objects get their surface samples (bottoms skipped: a reconstruction never sees
    them); the floor gets a grid without the vertices under or within `floor_margin` of
    an object (also never reconstructed there). Returns (vertices [V, 3], labels [V],
    faces [F, 3]); the faces only make the file a mesh (fans over consecutive vertices).
    """
    g = np.arange(-1.0, 1.0 + 1e-9, floor_spacing)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    floor = np.stack([xx.ravel(), yy.ravel(), np.zeros(xx.size)], 1)
    for obj in scene.objects:
        center, size = np.asarray(obj.center), np.asarray(obj.size)
        low, high = center - size / 2 - floor_margin, center + size / 2 + floor_margin
        under = np.all((floor[:, :2] >= low[:2]) & (floor[:, :2] <= high[:2]), axis=1)
        floor = floor[~under]
    vertices, labels = [floor], [np.full(len(floor), FLOOR)]
    for index, obj in enumerate(scene.objects, start=1):
        samples = obj.surface_samples(spacing)
        samples = samples[samples[:, 2] > 1e-6]  # not the bottom face
        vertices.append(samples)
        labels.append(np.full(len(samples), index))
    vertices, labels = np.concatenate(vertices), np.concatenate(labels)
    count = len(vertices)
    faces = np.stack([np.zeros(count - 2, np.int64), np.arange(1, count - 1), np.arange(2, count)], 1)
    return vertices, labels, faces


def write_ply(path: Path, vertices: np.ndarray, colors: np.ndarray, faces: np.ndarray) -> None:
    """A binary little-endian PLY with ScanNet's vh_clean_2 properties (xyz float, rgba uchar, faces)."""
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vertex = np.zeros(len(vertices), dtype=[("xyz", "<f4", 3), ("rgba", "u1", 4)])
    vertex["xyz"], vertex["rgba"][:, :3], vertex["rgba"][:, 3] = vertices, colors, 255
    face = np.zeros(len(faces), dtype=[("n", "u1"), ("index", "<i4", 3)])
    face["n"], face["index"] = 3, faces
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(vertex.tobytes())
        handle.write(face.tobytes())


def write_scannet_scene(
    root: Path,
    scene: Scene,
    poses: list[np.ndarray],
    scene_id: str = "scene0000_00",
    invalid_pose_frames: tuple[int, ...] = (),
    axis_alignment: np.ndarray | None = None,
    frame_step: int = 20,
) -> dict:
    """Write `scene` seen from `poses` in the ScanNet v2 export layout under root/scene_id.

    Frames are numbered 0, frame_step, 2 * frame_step, ... as exports sampled every
    20th frame are. The poses and mesh share the (unaligned) world frame; the axis
    alignment goes into <scene>.txt. Frames whose index is in `invalid_pose_frames`
    get an all -inf pose, as ScanNet does where tracking was lost.

    Returns a dict: scene_dir, frame_ids, labels (per-vertex labels of the mesh),
    color_labels (per-frame label images at colour resolution), depth (float32 metres).
    """
    scene_dir = Path(root) / scene_id
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene_dir / sub).mkdir(parents=True, exist_ok=True)
    _write_matrix(scene_dir / "intrinsic" / "intrinsic_color.txt", _intrinsic_4x4(COLOR_INTRINSICS))
    _write_matrix(scene_dir / "intrinsic" / "intrinsic_depth.txt", _intrinsic_4x4(DEPTH_INTRINSICS))
    _write_matrix(scene_dir / "intrinsic" / "extrinsic_color.txt", np.eye(4))
    _write_matrix(scene_dir / "intrinsic" / "extrinsic_depth.txt", np.eye(4))

    frame_ids, color_labels, depths = [], [], []
    for index, pose in enumerate(poses):
        frame_id = index * frame_step
        depth, _ = scene.render(DEPTH_INTRINSICS, pose)
        _, labels = scene.render(COLOR_INTRINSICS, pose)
        color = _PALETTE[np.clip(labels, 0, None) % len(_PALETTE)]
        color[labels < 0] = 0
        cv2.imwrite(str(scene_dir / "color" / f"{frame_id}.jpg"), cv2.cvtColor(color, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(scene_dir / "depth" / f"{frame_id}.png"), np.round(depth * 1000).astype(np.uint16))
        written = np.full((4, 4), -np.inf) if index in invalid_pose_frames else pose
        _write_matrix(scene_dir / "pose" / f"{frame_id}.txt", written)
        frame_ids.append(frame_id)
        color_labels.append(labels)
        depths.append(depth)

    vertices, vertex_labels, faces = scene_mesh(scene)
    write_ply(scene_dir / f"{scene_id}_vh_clean_2.ply", vertices, _PALETTE[vertex_labels % len(_PALETTE)], faces)
    alignment = np.eye(4) if axis_alignment is None else np.asarray(axis_alignment)
    meta = {
        "axisAlignment": " ".join(f"{value:.9g}" for value in alignment.ravel()),
        "colorHeight": COLOR_INTRINSICS.height,
        "colorWidth": COLOR_INTRINSICS.width,
        "depthHeight": DEPTH_INTRINSICS.height,
        "depthWidth": DEPTH_INTRINSICS.width,
        "fx_color": COLOR_INTRINSICS.fx,
        "fx_depth": DEPTH_INTRINSICS.fx,
        "numColorFrames": len(poses) * frame_step,
        "numDepthFrames": len(poses) * frame_step,
        "sceneType": "Living room / Lounge",
    }
    (scene_dir / f"{scene_id}.txt").write_text("".join(f"{key} = {value}\n" for key, value in meta.items()))
    return {
        "scene_dir": scene_dir,
        "frame_ids": frame_ids,
        "labels": vertex_labels,
        "color_labels": color_labels,
        "depth": depths,
    }

