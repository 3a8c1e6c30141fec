"""Synthetic reasoning scenes for the demo: RGB-D frames of a table with known objects (numpy only).

A scene is a floor (z = 0, world z up), a back wall, a table and a few objects on it,
each object of a catalogue category (scissors, knife, orange, lemon, kiwi, apple,
banana, ball, mug, bowl, bottle, sponge, book, phone, compost bin, plant, hammer)
built from primitives (boxes, cylinders, spheres) with a known colour, size and pose.
A camera moves along a short arc in front of the table looking at it; every frame is
rendered analytically by casting one ray per pixel through pixel centres (the hit
parameter is the camera z, i.e. the depth), with Lambertian shading and simple floor
and wood textures. The same ray cast gives the per-pixel object labels, so masks,
depth and 3D boxes are exact and consistent with each other.

Implicit commands need world knowledge about the categories ("something to cut paper
with", "the food with the most vitamin C", "what would roll off the table?", "where
should the food scraps go?"). A command is asked in a scene only when exactly one of
its objects satisfies it; each has an explanatory answer
("[SEG] The scissors have sharp blades for cutting paper.").

Splits: scenes of split "train" and "val"/"test" come from disjoint random streams
(unseen layouts and combinations); every intent has "train" phrasings and disjoint
"heldout" phrasings. Everything is a pure function of (seed, split, index).

Conventions are those of `lisa_ros.geometry`: 4x4 camera-to-world poses with the
optical frame (x right, y down, z forward), depth in metres (float32, 0 where a ray
hits nothing), pixel centres at integer coordinates.

Main API: `make_scene(seed, split, index)` -> `DemoScene`; `DemoScene.render(frame)`
-> `Frame` (rgb, depth, labels, pose); `DemoScene.commands(phrasing)` -> `Command`s;
`Command.mask(frame)`; `SceneObject.box` (world-frame axis-aligned centre and size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from lisa_ros.geometry import CameraIntrinsics, look_at

__all__ = [
    "CATEGORIES",
    "DEMO_INTRINSICS",
    "INTENTS",
    "SPLITS",
    "Category",
    "Command",
    "DemoScene",
    "Frame",
    "Intent",
    "Part",
    "Primitive",
    "SceneObject",
    "look_at",
    "make_scene",
    "vocabulary_corpus",
]

# 320x240 colour camera (depth registered to it: same intrinsics), about 52 deg wide.
DEMO_INTRINSICS = CameraIntrinsics(330.0, 330.0, 159.5, 119.5, 320, 240)

TABLE_HEIGHT = 0.74
TABLE_SIZE = (0.90, 0.60)  # x (across the camera's view), y (away from the camera)
TABLE_THICKNESS = 0.04
PLACEMENT_HALF = (0.34, 0.23)  # objects' footprints stay inside this rectangle around the table centre
WALL_Y = 2.0
FLOOR_HALF = 6.0
LIGHT = np.array([0.35, -0.55, 1.0]) / np.linalg.norm([0.35, -0.55, 1.0])
SPLITS = {"train": 0, "val": 1, "test": 2}
_EPS = 1e-12


# Geometry.


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# Local orientations of a part before the object's yaw: the local z axis of a cylinder
# is its axis ("z": upright; "x": lying along the object's x).
_AXES = {"z": np.eye(3), "x": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])}


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


@dataclass(frozen=True)
class Part:
    """A primitive of a category in the object's frame (origin at the footprint centre on the table, z up)."""

    kind: str
    offset: tuple
    dims: tuple
    color: tuple
    top_color: tuple | None = None
    axis: str = "z"


# The catalogue.


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


def _c(*rgb) -> tuple:
    return tuple(v / 255.0 for v in rgb)


SILVER, BLACK, WHITE = _c(200, 205, 212), _c(30, 30, 32), _c(240, 240, 235)

CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in [
        Category("scissors", (Part("box", (0.07, 0, 0.007), (0.08, 0.018, 0.007), SILVER),
                              Part("box", (-0.04, 0, 0.009), (0.04, 0.036, 0.009), _c(210, 40, 40)))),
        Category("knife", (Part("box", (0.075, 0, 0.005), (0.085, 0.018, 0.005), SILVER),
                           Part("box", (-0.065, 0, 0.012), (0.055, 0.016, 0.012), BLACK))),
        Category("orange", (Part("sphere", (0, 0, 0.05), (0.05,), _c(250, 140, 20)),), food=True, vitamin_c=53, round=True),
        Category("lemon", (Part("sphere", (0, 0, 0.042), (0.042,), _c(250, 230, 60)),), food=True, vitamin_c=77, round=True),
        Category("kiwi", (Part("sphere", (0, 0, 0.036), (0.036,), _c(125, 95, 50)),), food=True, vitamin_c=93, round=True),
        Category("apple", (Part("sphere", (0, 0, 0.048), (0.048,), _c(200, 25, 30)),
                           Part("cylinder", (0, 0, 0.104), (0.005, 0.012), _c(90, 60, 30))), food=True, vitamin_c=5, round=True),
        Category("banana", (Part("cylinder", (0, 0, 0.024), (0.024, 0.10), _c(245, 215, 60), _c(110, 80, 30), "x"),),
                 food=True, vitamin_c=9),
        Category("ball", (Part("sphere", (0, 0, 0.06), (0.06,), _c(40, 90, 230)),), round=True),
        Category("mug", (Part("cylinder", (0, 0, 0.055), (0.045, 0.055), WHITE, _c(80, 45, 20)),
                         Part("box", (0.062, 0, 0.055), (0.018, 0.008, 0.035), WHITE))),
        Category("bowl", (Part("cylinder", (0, 0, 0.028), (0.085, 0.028), _c(120, 190, 230), _c(245, 225, 170)),)),
        Category("bottle", (Part("cylinder", (0, 0, 0.11), (0.035, 0.11), _c(60, 140, 230)),
                            Part("cylinder", (0, 0, 0.235), (0.016, 0.015), WHITE))),
        Category("sponge", (Part("box", (0, 0, 0.02), (0.055, 0.038, 0.02), _c(250, 215, 50), _c(60, 170, 60)),)),
        Category("book", (Part("box", (0, 0, 0.02), (0.095, 0.07, 0.02), _c(235, 230, 215), _c(30, 50, 140)),)),
        Category("phone", (Part("box", (0, 0, 0.006), (0.075, 0.038, 0.006), BLACK, _c(50, 70, 100)),)),
        Category("compost bin", (Part("cylinder", (0, 0, 0.10), (0.075, 0.10), _c(50, 140, 60), _c(25, 25, 25)),)),
        Category("plant", (Part("cylinder", (0, 0, 0.045), (0.05, 0.045), _c(190, 95, 60), _c(90, 60, 40)),
                           Part("sphere", (0, 0, 0.15), (0.07,), _c(40, 150, 50)))),
        Category("hammer", (Part("box", (-0.015, 0, 0.014), (0.11, 0.014, 0.014), _c(165, 115, 60)),
                            Part("box", (0.095, 0, 0.018), (0.018, 0.055, 0.018), _c(80, 80, 90)))),
    ]
}


@dataclass(frozen=True)
class SceneObject:
    """One object in a scene: `index` (0-based, = its label in `Frame.labels`), category, pose."""

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
        center, size = self.box
        return float(center[2] + size[2] / 2 - self.position[2])

    def box_dict(self) -> dict:
        center, size = self.box
        return {"center": [round(float(v), 6) for v in center], "size": [round(float(v), 6) for v in size]}


@dataclass
class Frame:
    """One rendered view: rgb uint8 HxWx3, depth float32 HxW metres (0: nothing hit),
    labels int16 HxW (object index, -1 elsewhere), pose 4x4 camera-to-world."""

    rgb: np.ndarray
    depth: np.ndarray
    labels: np.ndarray
    pose: np.ndarray


# Intents: commands that need reasoning about the objects.


@dataclass(frozen=True)
class Intent:
    """A kind of command: which object answers it in a scene (or None) and why.

    target(objects) -> index of the one object answering it, or None when no object or
    several do (the command is not asked then); explain(object, objects) -> sentence.
    """

    key: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    target: Callable
    explain: Callable


def _only(categories):
    def target(objects):
        hits = [o.index for o in objects if o.category in categories]
        return hits[0] if len(hits) == 1 else None

    return target


def _extreme(key, sign, min_count=2, margin=0.0):
    """The object maximising sign * key(o) among those with a key, unique by `margin`."""

    def target(objects):
        scored = [(sign * key(o), o.index) for o in objects if key(o) is not None]
        if len(scored) < min_count:
            return None
        scored.sort(reverse=True)
        if len(scored) > 1 and scored[0][0] - scored[1][0] <= margin:
            return None
        return scored[0][1]

    return target


def _vitc(o):
    return CATEGORIES[o.category].vitamin_c if CATEGORIES[o.category].food else None


def _round(o):
    return CATEGORIES[o.category].round


def _fixed(text):
    return lambda o, objects: text


def _cut_explain(o, objects):
    if o.category == "scissors":
        return "The scissors have sharp blades for cutting paper."
    return "The knife has a sharp blade that can cut paper."


def _vitc_explain(word):
    def explain(o, objects):
        others = [x.category for x in objects if _vitc(x) is not None and x.index != o.index]
        return (
            f"The {o.category} has the {word} vitamin C of the food here, about "
            f"{CATEGORIES[o.category].vitamin_c:g} mg per 100 g, {'more' if word == 'most' else 'less'} than the "
            f"{' and the '.join(others)}."
        )

    return explain


INTENTS: dict[str, Intent] = {
    i.key: i
    for i in [
        Intent(
            "cut_paper",
            ("something to cut paper with", "I need to cut this sheet of paper.", "What could I use to cut a piece of paper?",
             "Give me a tool for cutting paper.", "Which object can cut a paper strip?"),
            ("Hand me something that can cut paper.", "what would cut a sheet of paper?"),
            _only({"scissors", "knife"}), _cut_explain,
        ),
        Intent(
            "most_vitamin_c",
            ("the food with the most vitamin C", "Which food here has the most vitamin C?",
             "I have a cold; which fruit has the most vitamin C?", "the fruit richest in vitamin C",
             "Pick the food that gives the most vitamin C."),
            ("Which fruit gives the most vitamin C?", "the food here richest in vitamin C"),
            _extreme(_vitc, 1), _vitc_explain("most"),
        ),
        Intent(
            "least_vitamin_c",
            ("the food with the least vitamin C", "Which fruit has the least vitamin C?", "the fruit poorest in vitamin C",
             "Which food here gives the least vitamin C?"),
            ("Pick the fruit with the least vitamin C.", "the food poorest in vitamin C"),
            _extreme(_vitc, -1), _vitc_explain("least"),
        ),
        Intent(
            "rolls",
            ("what would roll off the table?", "Which object would roll away if the table were tilted?",
             "the thing that could roll off the edge", "Which item is round enough to roll?"),
            ("If I bump the table, what might roll off the edge?", "the round thing that would roll away"),
            lambda objects: (lambda hits: hits[0] if len(hits) == 1 else None)([o.index for o in objects if _round(o)]),
            lambda o, objects: f"The {o.category} is round, so it would roll off a tilted table.",
        ),
        Intent(
            "food_scraps",
            ("where should the food scraps go?", "Where do I throw away the peel?", "the place for kitchen waste",
             "Where can I put the leftovers I don't want?"),
            ("Where do the food scraps and the peel go?", "the place to throw away kitchen waste"),
            _only({"compost bin"}), _fixed("The compost bin is where food scraps and peels belong."),
        ),
        Intent(
            "hot_drink",
            ("something to drink hot coffee from", "What should I pour my tea into?", "the object for a hot drink",
             "I want a hot chocolate; what do I drink it from?"),
            ("Where can I pour hot coffee?", "what can I drink tea from?"),
            _only({"mug"}), _fixed("The mug has a handle, so it can hold a hot drink without burning the hand."),
        ),
        Intent(
            "soup",
            ("something to eat soup from", "What should I pour cereal and milk into?", "the dish for serving soup",
             "Where can I put a salad to eat it?"),
            ("What dish can I eat cereal from?", "something to serve a salad in"),
            _only({"bowl"}), _fixed("The bowl is a deep dish for soup, cereal or salad."),
        ),
        Intent(
            "carry_water",
            ("something to carry water on a hike", "What can I take water with me in?",
             "the container for taking a drink outside", "I'm going for a run; what holds my water?"),
            ("What holds water for a hike?", "the container to carry water on a run"),
            _only({"bottle"}), _fixed("The bottle holds water and can be closed with its cap."),
        ),
        Intent(
            "clean_spill",
            ("something to wipe up a spill", "What should I use to wash the dishes?", "the soft object for cleaning",
             "I spilled juice; what can soak it up?"),
            ("Hand me something soft to wipe the table.", "What can soak up a spill?"),
            _only({"sponge"}), _fixed("The sponge is soft and absorbs liquid, so it is good for cleaning."),
        ),
        Intent(
            "nail",
            ("something to drive a nail into the wall", "What tool would hang a picture frame with a nail?",
             "the tool for hammering", "I need to knock a nail in."),
            ("the tool that drives nails", "What could I use to knock a nail into the wall?"),
            _only({"hammer"}), _fixed("The hammer has a heavy metal head for driving nails."),
        ),
        Intent(
            "read",
            ("something to read", "What could I read before bed?", "the object with pages and a story",
             "I'm bored; what can I read?"),
            ("Give me something with a story to read.", "the thing with pages I could read"),
            _only({"book"}), _fixed("The book has pages to read."),
        ),
        Intent(
            "call",
            ("something to call my mother with", "What can I use to make a phone call?",
             "the device for sending a text message", "I need to call a taxi."),
            ("What could I use to call a friend?", "the device to send a message"),
            _only({"phone"}), _fixed("The phone can make calls and send messages."),
        ),
        Intent(
            "water_plant",
            ("what needs watering?", "Which thing on the table is alive?", "the object that grows in sunlight",
             "Which item would wilt without water?"),
            ("Which thing would wilt without watering?", "the object that is alive and grows"),
            _only({"plant"}), _fixed("The plant is alive and needs water to grow."),
        ),
        Intent(
            "fetch",
            ("something to play fetch with the dog", "What could I throw to a child to catch?", "the toy for playing catch",
             "What can I kick or bounce?"),
            ("What could I throw for the dog to fetch?", "something to kick and bounce"),
            _only({"ball"}), _fixed("The ball is light and round, good for throwing and catching."),
        ),
        Intent(
            "sour",
            ("the sourest fruit", "What fruit would I squeeze on fish?", "the fruit to make lemonade",
             "Which fruit is very sour?"),
            ("Which fruit would I squeeze to make lemonade?", "the very sour fruit"),
            _only({"lemon"}), _fixed("The lemon is a very sour citrus fruit."),
        ),
        Intent(
            "potassium",
            ("the fruit rich in potassium", "Which fruit do monkeys love?", "the fruit you peel that is long and curved",
             "What could I slice onto my cereal for potassium?"),
            ("the long curved fruit", "Which fruit gives potassium?"),
            _only({"banana"}), _fixed("The banana is a long fruit rich in potassium."),
        ),
        Intent(
            "tallest",
            ("the tallest object on the table", "Which item stands highest?", "the highest thing on the table",
             "Which object is the tallest?"),
            ("the highest object", "Which thing on the table is the tallest?"),
            _extreme(lambda o: o.height, 1, min_count=2, margin=0.02),
            lambda o, objects: f"The {o.category} is the tallest object on the table, about {round(o.height * 100)} cm high.",
        ),
    ]
}


@dataclass(frozen=True)
class Command:
    """One command asked in a scene: its text, the intent, the target object and the answer.

    answer: "[SEG] " + explanation (the explanatory answer the demo model learns).
    """

    text: str
    intent: str
    target: int
    explanation: str
    phrasing: str  # "train" or "heldout"

    @property
    def answer(self) -> str:
        return f"[SEG] {self.explanation}"

    def mask(self, frame: Frame) -> np.ndarray:
        """The target's ground-truth mask in `frame` (bool HxW)."""
        return frame.labels == self.target


# Scenes.


@dataclass
class DemoScene:
    """A table with objects, a camera trajectory along an arc in front of it, and an intrinsics."""

    scene_id: str
    objects: list[SceneObject]
    origin: np.ndarray  # table centre on the floor (x, y, 0)
    poses: list[np.ndarray]
    intrinsics: CameraIntrinsics = DEMO_INTRINSICS
    seed: int = 0
    table_tint: float = 1.0
    _static: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        ox, oy = float(self.origin[0]), float(self.origin[1])
        top = TABLE_HEIGHT
        ident = tuple(map(tuple, np.eye(3).tolist()))
        wood = (0.66 * self.table_tint, 0.48 * self.table_tint, 0.30 * self.table_tint)
        self._static = [
            Primitive("box", (ox, oy, top - TABLE_THICKNESS / 2), ident,
                      (TABLE_SIZE[0] / 2, TABLE_SIZE[1] / 2, TABLE_THICKNESS / 2), wood, wood)
        ]
        for sx in (-1, 1):
            for sy in (-1, 1):
                center = (ox + sx * (TABLE_SIZE[0] / 2 - 0.05), oy + sy * (TABLE_SIZE[1] / 2 - 0.05), (top - TABLE_THICKNESS) / 2)
                self._static.append(Primitive("box", center, ident, (0.025, 0.025, (top - TABLE_THICKNESS) / 2), _c(90, 60, 40)))

    @property
    def table_top(self) -> float:
        return TABLE_HEIGHT

    def cast(self, origins: np.ndarray, directions: np.ndarray):
        """First hit of each ray o + t d: (t [N], label [N] object index or -1, rgb float [N, 3])."""
        count = len(origins)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_floor = -origins[:, 2] / directions[:, 2]
            t_wall = (self.origin[1] + WALL_Y - origins[:, 1]) / directions[:, 1]
        p = origins + np.where(np.isfinite(t_floor), t_floor, 0)[:, None] * directions
        ok = (t_floor > 0) & (np.abs(p[:, 0] - self.origin[0]) <= FLOOR_HALF) & (p[:, 1] - self.origin[1] <= WALL_Y)
        best = np.where(ok, t_floor, np.inf)
        label = np.full(count, -1, dtype=np.int16)
        surface = np.where(ok, 0, -1).astype(np.int16)  # -1 sky, 0 floor, 1 wall, 2 static, 3 object
        normal = np.zeros((count, 3))
        normal[:, 2] = 1
        color = np.zeros((count, 3))
        tile = (np.floor(p[:, 0] / 0.5) + np.floor(p[:, 1] / 0.5)) % 2
        color[:] = np.where(tile[:, None] > 0, [0.62, 0.60, 0.56], [0.50, 0.48, 0.45])
        pw = origins + np.where(np.isfinite(t_wall), t_wall, 0)[:, None] * directions
        wall_ok = (t_wall > 0) & (t_wall < best) & (pw[:, 2] >= 0) & (pw[:, 2] <= 2.6)
        best = np.where(wall_ok, t_wall, best)
        surface[wall_ok] = 1
        normal[wall_ok] = [0, -1, 0]
        color[wall_ok] = [0.82, 0.84, 0.80]

        dd = np.einsum("ij,ij->i", directions, directions)

        def hit(prim, obj_label, surf):
            # Only rays passing within the primitive's bounding sphere are intersected.
            oc = np.asarray(prim.center) - origins
            w = np.einsum("ij,ij->i", oc, directions)
            oc2 = np.einsum("ij,ij->i", oc, oc)
            r2 = prim.bounding_radius**2 * (1 + 1e-9)
            candidates = np.flatnonzero(((oc2 - w * w / dd <= r2) & (w > 0)) | (oc2 <= r2))
            if candidates.size == 0:
                return
            t, n, top = prim.intersect(origins[candidates], directions[candidates])
            closer = t < best[candidates]
            if not closer.any():
                return
            rows = candidates[closer]
            best[rows] = t[closer]
            label[rows] = obj_label
            surface[rows] = surf
            normal[rows] = n[closer]
            if prim.top_color is not None:
                color[rows] = np.where(top[closer][:, None], np.asarray(prim.top_color), np.asarray(prim.color))
            else:
                color[rows] = np.asarray(prim.color)

        for prim in self._static:
            hit(prim, -1, 2)
        for obj in self.objects:
            for prim in obj.primitives:
                hit(prim, obj.index, 3)
        # Wood grain on the table top.
        pt = origins + np.where(np.isfinite(best), best, 0)[:, None] * directions
        grain = surface == 2
        color[grain] *= (0.9 + 0.1 * np.sin(pt[grain, 0] * 70 + 3 * np.sin(pt[grain, 1] * 9)))[:, None]
        return best, label, color, normal, surface

    def render(self, frame: int | np.ndarray) -> Frame:
        """The frame seen from pose `frame` (an index into `poses`, or a 4x4 camera-to-world)."""
        pose = self.poses[frame] if isinstance(frame, (int, np.integer)) else np.asarray(frame, dtype=np.float64)
        k = self.intrinsics
        rows, cols = np.mgrid[0 : k.height, 0 : k.width]
        directions = np.stack([(cols - k.cx) / k.fx, (rows - k.cy) / k.fy, np.ones(rows.shape)], -1).reshape(-1, 3)
        directions = directions @ pose[:3, :3].T
        origins = np.broadcast_to(pose[:3, 3], directions.shape)
        t, label, color, normal, surface = self.cast(origins, directions)
        # Lambertian shading with a fixed light; normals face the camera.
        facing = np.sign(-np.einsum("ij,ij->i", normal, directions))[:, None]
        facing[facing == 0] = 1
        lambert = np.clip((normal * facing) @ LIGHT, 0, None)
        shade = 0.45 + 0.55 * lambert
        rgb = np.clip(color * shade[:, None], 0, 1)
        rgb[surface < 0] = [0.75, 0.85, 0.95]
        depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32)
        shape = rows.shape
        return Frame(
            rgb=np.round(rgb * 255).astype(np.uint8).reshape(*shape, 3),
            depth=depth.reshape(shape),
            labels=label.reshape(shape),
            pose=pose,
        )

    def commands(self, phrasing: str = "train") -> list[Command]:
        """Every intent answerable in this scene (exactly one target), one command each.

        phrasing: "train" or "heldout" (which phrasings); "all" gives one command per
        phrasing of both. The phrasing of "train"/"heldout" is chosen deterministically
        per (scene, intent).
        """
        if phrasing not in ("train", "heldout", "all"):
            raise ValueError(f"phrasing must be 'train', 'heldout' or 'all', got {phrasing!r}")
        out = []
        for key, intent in INTENTS.items():
            target = intent.target(self.objects)
            if target is None:
                continue
            explanation = intent.explain(self.objects[target], self.objects)
            if phrasing == "all":
                texts = [(t, "train") for t in intent.train] + [(t, "heldout") for t in intent.heldout]
            else:
                options = intent.train if phrasing == "train" else intent.heldout
                pick = _stable_hash(f"{self.scene_id}/{key}/{self.seed}") % len(options)
                texts = [(options[pick], phrasing)]
            out.extend(Command(text, key, target, explanation, which) for text, which in texts)
        return out


def _stable_hash(text: str) -> int:
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def trajectory(origin, frames: int, rng: np.random.Generator | None = None, arc_deg: float = 60.0) -> list[np.ndarray]:
    """Camera poses along an arc in front of (on the -y side of) the table, looking at its centre."""
    origin = np.asarray(origin, dtype=np.float64)
    jitter = (lambda s: float(rng.uniform(-s, s))) if rng is not None else (lambda s: 0.0)
    radius, height = 0.52 + jitter(0.04), TABLE_HEIGHT + 0.45 + jitter(0.04)
    target = origin + np.array([jitter(0.03), 0.05 + jitter(0.03), TABLE_HEIGHT])
    start = -90.0 - arc_deg / 2 + jitter(5.0)
    azimuths = np.radians(start + np.linspace(0.0, arc_deg, frames) if frames > 1 else np.array([start + arc_deg / 2]))
    poses = []
    for az in azimuths:
        eye = origin + np.array([radius * math.cos(az), radius * math.sin(az), height])
        poses.append(look_at(eye, target))
    return poses


def make_scene(
    seed: int = 0,
    split: str = "train",
    index: int = 0,
    frames: int = 8,
    num_objects: tuple[int, int] = (4, 5),
    origin=(0.0, 0.0),
    categories: list[str] | None = None,
    intrinsics: CameraIntrinsics = DEMO_INTRINSICS,
) -> DemoScene:
    """The scene `index` of `split` for `seed` (deterministic).

    Objects (distinct categories) are placed on the table without overlap at random
    positions and yaws, scaled by 0.9-1.1. Splits draw from disjoint random streams.
    `origin` moves the table (x, y) in the world (e.g. several tables in one bag).
    `categories` forces the object categories (in order), e.g. for tests. `intrinsics`
    changes the camera (e.g. a smaller image or a narrower field of view) without
    changing the scene.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    rng = np.random.default_rng([int(seed), SPLITS[split], int(index)])
    origin3 = np.array([float(origin[0]), float(origin[1]), 0.0])
    names = sorted(CATEGORIES)
    for _ in range(100):
        if categories is not None:
            chosen = list(categories)
        else:
            count = int(rng.integers(num_objects[0], num_objects[1] + 1))
            chosen = [names[i] for i in rng.choice(len(names), size=count, replace=False)]
            # The largest first: placing them is what fails (and would bias against them).
            chosen.sort(key=lambda name: -CATEGORIES[name].footprint_radius)
        placed = []
        for name in chosen:
            scale = float(rng.uniform(0.9, 1.1)) if categories is None else 1.0
            radius = CATEGORIES[name].footprint_radius * scale
            for _ in range(200):
                x = rng.uniform(-PLACEMENT_HALF[0] + radius, PLACEMENT_HALF[0] - radius)
                y = rng.uniform(-PLACEMENT_HALF[1] + radius, PLACEMENT_HALF[1] - radius)
                if all(math.hypot(x - px, y - py) > radius + pr + 0.015 for px, py, pr, _ in placed):
                    break
            else:
                break
            placed.append((x, y, radius, scale))
        else:
            objects = [
                SceneObject(i, name, (float(origin3[0] + x), float(origin3[1] + y), TABLE_HEIGHT), float(rng.uniform(0, 2 * math.pi)), scale)
                for i, (name, (x, y, _, scale)) in enumerate(zip(chosen, placed))
            ]
            poses = trajectory(origin3, frames, rng)
            tint = float(rng.uniform(0.85, 1.15))
            return DemoScene(f"{split}_{seed}_{index:05d}", objects, origin3, poses, intrinsics, int(seed), tint)
    raise RuntimeError(f"could not place objects for scene {split}/{seed}/{index}")


def vocabulary_corpus() -> list[str]:
    """Every phrasing, explanation and category name: a corpus for a small tokenizer."""
    texts = [" ".join(CATEGORIES)]
    for intent in INTENTS.values():
        texts.extend(intent.train)
        texts.extend(intent.heldout)
    for name in CATEGORIES:
        obj = SceneObject(0, name, (0.0, 0.0, TABLE_HEIGHT), 0.0, 1.0)
        others = [SceneObject(1, "apple", (0.0, 0.0, TABLE_HEIGHT), 0.0, 1.0)]
        for intent in INTENTS.values():
            try:
                texts.append(intent.explain(obj, [obj, *others]))
            except (TypeError, KeyError):
                pass
    return sorted(set(texts))
