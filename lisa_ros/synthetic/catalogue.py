"""The object categories of the synthetic scenes: how each looks (parts) and what it is (attributes).

A category is built from primitives (boxes, cylinders, spheres) with a known colour, size and
offset in the object's frame; a `SceneObject` places one on the table with a position, yaw and
scale, which gives its world-frame primitives and exact 3D box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .raycast import Primitive

# Local orientations of a part before the object's yaw: the local z axis of a cylinder
# is its axis ("z": upright; "x": lying along the object's x).
_AXES = {"z": np.eye(3), "x": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])}


def rgb255(*rgb) -> tuple:
    """An RGB colour given as 0-255 integers, as floats in [0, 1]."""
    return tuple(v / 255.0 for v in rgb)


@dataclass(frozen=True)
class Part:
    """A primitive of a category in the object's frame (origin at the footprint centre on the table, z up).

    kind: "box", "cylinder" or "sphere"; offset: (x, y, z) of its centre, metres; dims as
    `Primitive.dims`; axis: "z" (upright) or "x" (a cylinder lying along the object's x).
    """

    kind: str
    offset: tuple
    dims: tuple
    color: tuple
    top_color: tuple | None = None
    axis: str = "z"


@dataclass(frozen=True)
class Category:
    """An object category: how it looks (parts) and what it is (world-knowledge attributes)."""

    name: str
    parts: tuple
    food: bool = False
    vitamin_c: float | None = None  # mg per 100 g (approximate, USDA-like; lemon with peel)
    round: bool = False  # would roll

    @property
    def footprint_radius(self) -> float:
        """Radius of a circle around the object's origin containing its footprint (any yaw)."""
        radius = 0.0
        for part in self.parts:
            if part.kind == "box":
                reach = math.hypot(abs(part.offset[0]) + part.dims[0], abs(part.offset[1]) + part.dims[1])
            elif part.kind == "cylinder" and part.axis == "x":
                reach = math.hypot(abs(part.offset[0]) + part.dims[1], abs(part.offset[1]) + part.dims[0])
            else:
                reach = math.hypot(part.offset[0], part.offset[1]) + part.dims[0]
            radius = max(radius, reach)
        return radius


SILVER, BLACK, WHITE = rgb255(200, 205, 212), rgb255(30, 30, 32), rgb255(240, 240, 235)

CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in [
        Category("scissors", (
            Part("box", (0.07, 0, 0.007), (0.08, 0.018, 0.007), SILVER),
            Part("box", (-0.04, 0, 0.009), (0.04, 0.036, 0.009), rgb255(210, 40, 40)),
        )),
        Category("knife", (
            Part("box", (0.075, 0, 0.005), (0.085, 0.018, 0.005), SILVER),
            Part("box", (-0.065, 0, 0.012), (0.055, 0.016, 0.012), BLACK),
        )),
        Category("orange", (Part("sphere", (0, 0, 0.05), (0.05,), rgb255(250, 140, 20)),),
                 food=True, vitamin_c=53, round=True),
        Category("lemon", (Part("sphere", (0, 0, 0.042), (0.042,), rgb255(250, 230, 60)),),
                 food=True, vitamin_c=77, round=True),
        Category("kiwi", (Part("sphere", (0, 0, 0.036), (0.036,), rgb255(125, 95, 50)),),
                 food=True, vitamin_c=93, round=True),
        Category("apple", (
            Part("sphere", (0, 0, 0.048), (0.048,), rgb255(200, 25, 30)),
            Part("cylinder", (0, 0, 0.104), (0.005, 0.012), rgb255(90, 60, 30)),
        ), food=True, vitamin_c=5, round=True),
        Category("banana", (
            Part("cylinder", (0, 0, 0.024), (0.024, 0.10), rgb255(245, 215, 60), rgb255(110, 80, 30), "x"),
        ), food=True, vitamin_c=9),
        Category("ball", (Part("sphere", (0, 0, 0.06), (0.06,), rgb255(40, 90, 230)),), round=True),
        Category("mug", (
            Part("cylinder", (0, 0, 0.055), (0.045, 0.055), WHITE, rgb255(80, 45, 20)),
            Part("box", (0.062, 0, 0.055), (0.018, 0.008, 0.035), WHITE),
        )),
        Category("bowl", (
            Part("cylinder", (0, 0, 0.028), (0.085, 0.028), rgb255(120, 190, 230), rgb255(245, 225, 170)),
        )),
        Category("bottle", (
            Part("cylinder", (0, 0, 0.11), (0.035, 0.11), rgb255(60, 140, 230)),
            Part("cylinder", (0, 0, 0.235), (0.016, 0.015), WHITE),
        )),
        Category("sponge", (
            Part("box", (0, 0, 0.02), (0.055, 0.038, 0.02), rgb255(250, 215, 50), rgb255(60, 170, 60)),
        )),
        Category("book", (
            Part("box", (0, 0, 0.02), (0.095, 0.07, 0.02), rgb255(235, 230, 215), rgb255(30, 50, 140)),
        )),
        Category("phone", (Part("box", (0, 0, 0.006), (0.075, 0.038, 0.006), BLACK, rgb255(50, 70, 100)),)),
        Category("compost bin", (
            Part("cylinder", (0, 0, 0.10), (0.075, 0.10), rgb255(50, 140, 60), rgb255(25, 25, 25)),
        )),
        Category("plant", (
            Part("cylinder", (0, 0, 0.045), (0.05, 0.045), rgb255(190, 95, 60), rgb255(90, 60, 40)),
            Part("sphere", (0, 0, 0.15), (0.07,), rgb255(40, 150, 50)),
        )),
        Category("hammer", (
            Part("box", (-0.015, 0, 0.014), (0.11, 0.014, 0.014), rgb255(165, 115, 60)),
            Part("box", (0.095, 0, 0.018), (0.018, 0.055, 0.018), rgb255(80, 80, 90)),
        )),
    ]
}


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class SceneObject:
    """One object in a scene: `index` (0-based, = its label in `RenderedView.labels`), category, pose."""

    index: int
    category: str
    position: tuple  # world (x, y, z) of the footprint centre on the table surface
    yaw: float
    scale: float

    @property
    def name(self) -> str:
        return self.category

    @cached_property
    def primitives(self) -> tuple[Primitive, ...]:
        """The category's parts placed in the world (yaw about z, then scale)."""
        yaw = _rot_z(self.yaw)
        out = []
        for part in CATEGORIES[self.category].parts:
            rotation = yaw @ _AXES[part.axis]
            center = np.asarray(self.position) + yaw @ (np.asarray(part.offset) * self.scale)
            out.append(
                Primitive(
                    part.kind,
                    tuple(center.tolist()),
                    tuple(map(tuple, rotation.tolist())),
                    tuple(v * self.scale for v in part.dims),
                    part.color,
                    part.top_color,
                )
            )
        return tuple(out)

    @property
    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """(centre [3], size [3]) of the world-frame axis-aligned 3D box (exact)."""
        lows, highs = zip(*(p.aabb() for p in self.primitives))
        low, high = np.min(lows, axis=0), np.max(highs, axis=0)
        return (low + high) / 2, high - low

    @property
    def height(self) -> float:
        """Metres from the table surface to the object's top."""
        center, size = self.box
        return float(center[2] + size[2] / 2 - self.position[2])

    def box_dict(self) -> dict:
        """The box as {"center": [3], "size": [3]}, rounded to micrometres (JSON)."""
        center, size = self.box
        return {"center": [round(float(v), 6) for v in center], "size": [round(float(v), 6) for v in size]}
