"""Analytic ray casting against boxes, cylinders and spheres (numpy): the ray caster of the synthetic scenes.

A ray is o + t d (d need not be unit length); hits count for t > 0 only. Rays cast through
pixel centres with camera-frame directions ((u - cx) / fx, (v - cy) / fy, 1) (`pixel_rays`)
hit at t = the camera z, i.e. the depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lisa_ros.geometry import CameraIntrinsics

_EPS = 1e-12


@dataclass(frozen=True)
class Primitive:
    """A box, cylinder or sphere in the world: centre, rotation (local -> world), dimensions.

    dims: box (half x, half y, half z); cylinder (radius, half height) along local z;
    sphere (radius,). color / top_color: RGB floats in [0, 1]; top_color paints the
    local +z face (box top, cylinder top cap).
    """

    kind: str
    center: tuple
    rotation: tuple  # 3x3 nested tuple
    dims: tuple
    color: tuple
    top_color: tuple | None = None

    @property
    def R(self) -> np.ndarray:
        return np.asarray(self.rotation, dtype=np.float64)

    def intersect(self, origins: np.ndarray, directions: np.ndarray):
        """(t [N], world normals [N, 3], top-face flag [N]) of the first hit in front (t inf where missed)."""
        R = self.R
        o = (origins - np.asarray(self.center)) @ R  # R^T (o - c), row vectors
        d = directions @ R
        n = np.zeros_like(o)
        top = np.zeros(len(o), dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.kind == "box":
                e = np.asarray(self.dims)
                t1, t2 = (-e - o) / d, (e - o) / d
                parallel = np.abs(d) < _EPS
                inside = np.abs(o) <= e
                t_min = np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
                t_max = np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
                near, far = t_min.max(axis=1), t_max.min(axis=1)
                t = np.where((near <= far) & (near > 0), near, np.inf)
                p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
                axis = np.argmax(np.abs(p) / e, axis=1)
                rows = np.arange(len(o))
                n[rows, axis] = np.sign(p[rows, axis])
                top = (axis == 2) & (p[:, 2] > 0)
            elif self.kind == "cylinder":
                r, h = self.dims
                a = d[:, 0] ** 2 + d[:, 1] ** 2
                b = 2 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1])
                c = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
                disc = b * b - 4 * a * c
                side = (-b - np.sqrt(disc)) / (2 * a)
                z = o[:, 2] + side * d[:, 2]
                side = np.where((disc >= 0) & (a > _EPS) & (side > 0) & (np.abs(z) <= h), side, np.inf)
                t, kind = side, np.zeros(len(o), dtype=np.int8)
                for sign in (-1.0, 1.0):
                    tc = (sign * h - o[:, 2]) / d[:, 2]
                    x, y = o[:, 0] + tc * d[:, 0], o[:, 1] + tc * d[:, 1]
                    tc = np.where((tc > 0) & (x * x + y * y <= r * r), tc, np.inf)
                    closer = tc < t
                    t, kind = np.where(closer, tc, t), np.where(closer, np.int8(sign), kind)
                p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
                n[:, 0], n[:, 1] = np.where(kind == 0, p[:, 0] / r, 0), np.where(kind == 0, p[:, 1] / r, 0)
                n[:, 2] = kind
                top = kind == 1
            elif self.kind == "sphere":
                (r,) = self.dims
                a = np.einsum("ij,ij->i", d, d)
                b = 2 * np.einsum("ij,ij->i", o, d)
                c = np.einsum("ij,ij->i", o, o) - r * r
                disc = b * b - 4 * a * c
                t = (-b - np.sqrt(disc)) / (2 * a)
                t = np.where((disc >= 0) & (t > 0), t, np.inf)
                n = (o + np.where(np.isfinite(t), t, 0)[:, None] * d) / r
            else:
                raise ValueError(f"unknown primitive kind {self.kind!r}")
        return t, n @ R.T, top

    @property
    def bounding_radius(self) -> float:
        """Radius of a sphere around `center` containing the primitive."""
        if self.kind == "box":
            return float(np.linalg.norm(self.dims))
        if self.kind == "cylinder":
            return float(math.hypot(*self.dims))
        return float(self.dims[0])

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the world-frame axis-aligned bounding box (exact)."""
        R, c = self.R, np.asarray(self.center)
        if self.kind == "box":
            extent = np.abs(R) @ np.asarray(self.dims)
        elif self.kind == "cylinder":
            r, h = self.dims
            axis = R[:, 2]
            extent = np.abs(axis) * h + r * np.sqrt(np.clip(1 - axis**2, 0, None))
        else:
            extent = np.full(3, self.dims[0])
        return c - extent, c + extent


@dataclass
class Hits:
    """The first hit of each of N rays.

    t (np.ndarray): float64 [N], ray parameter (inf where nothing was hit).
    primitive (np.ndarray): intp [N], index of the primitive hit, -1 where none was (nearer).
    normal (np.ndarray): float64 [N, 3], the hit primitive's world normal (0 where none).
    top (np.ndarray): bool [N], whether the primitive's local +z face was hit.
    """

    t: np.ndarray
    primitive: np.ndarray
    normal: np.ndarray
    top: np.ndarray


def pixel_rays(intrinsics: CameraIntrinsics, camera_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origins [H*W, 3], directions [H*W, 3]) of one ray per pixel centre, row-major, world frame.

    Directions are ((u - cx) / fx, (v - cy) / fy, 1) in the camera optical frame, so the hit
    parameter t of a ray is the camera z (the depth) of what it hits.
    """
    k = intrinsics
    rows, cols = np.mgrid[0 : k.height, 0 : k.width]
    directions = np.stack([(cols - k.cx) / k.fx, (rows - k.cy) / k.fy, np.ones(rows.shape)], -1).reshape(-1, 3)
    directions = directions @ camera_to_world[:3, :3].T
    origins = np.broadcast_to(camera_to_world[:3, 3], directions.shape)
    return origins, directions


def cast_rays(primitives, origins: np.ndarray, directions: np.ndarray, nearest: np.ndarray | None = None) -> Hits:
    """The first hit of each ray o + t d among `primitives` (a sequence of Primitive).

    Arguments:
      origins, directions (np.ndarray): [N, 3] each, world frame.
      nearest (np.ndarray | None): [N], t of hits found otherwise (e.g. on planes): only
        primitives nearer than it count. None: inf.

    A tie goes to the earlier primitive. Only rays passing within a primitive's bounding
    sphere are intersected with it.
    """
    count = len(origins)
    best = np.full(count, np.inf) if nearest is None else np.array(nearest, dtype=np.float64)
    index = np.full(count, -1, dtype=np.intp)
    normal = np.zeros((count, 3))
    top = np.zeros(count, dtype=bool)
    dd = np.einsum("ij,ij->i", directions, directions)
    for position, primitive in enumerate(primitives):
        oc = np.asarray(primitive.center) - origins
        w = np.einsum("ij,ij->i", oc, directions)
        oc2 = np.einsum("ij,ij->i", oc, oc)
        r2 = primitive.bounding_radius**2 * (1 + 1e-9)
        candidates = np.flatnonzero(((oc2 - w * w / dd <= r2) & (w > 0)) | (oc2 <= r2))
        if candidates.size == 0:
            continue
        t, n, is_top = primitive.intersect(origins[candidates], directions[candidates])
        closer = t < best[candidates]
        if not closer.any():
            continue
        rows = candidates[closer]
        best[rows] = t[closer]
        index[rows] = position
        normal[rows] = n[closer]
        top[rows] = is_top[closer]
    return Hits(best, index, normal, top)
