"""Synthetic reasoning scenes for the demo: RGB-D views of a table with known objects (numpy only).

A scene is a floor (z = 0, world z up), a back wall, a table and a few objects on it,
each of a catalogue category (`catalogue.CATEGORIES`) with a known colour, size and pose.
A camera moves along a short arc in front of the table looking at it; every view is
rendered analytically by casting one ray per pixel through pixel centres (`raycast`; the
hit parameter is the camera z, i.e. the depth), with Lambertian shading and simple floor
and wood textures. The same ray cast gives the per-pixel object labels, so masks, depth
and 3D boxes are exact and consistent with each other.

Implicit commands need world knowledge about the categories ("something to cut paper
with", "the food with the most vitamin C", "what would roll off the table?", "where
should the food scraps go?"): the intents (`intents.INTENTS`). A command is asked in a
scene only when exactly one of its objects satisfies it; each has an explanatory answer
("[SEG] The scissors have sharp blades for cutting paper.").

Splits: scenes of split "train" and "val"/"test" come from disjoint random streams
(unseen layouts and combinations); every intent has "train" phrasings and disjoint
"heldout" phrasings. Everything is a pure function of (seed, split, index).

Conventions are those of `lisa_ros.geometry`: 4x4 camera-to-world poses with the
optical frame (x right, y down, z forward), depth in metres (float32, 0 where a ray
hits nothing), pixel centres at integer coordinates.

Main API: `make_scene(seed, split, index)` -> `DemoScene`; `DemoScene.render(view)`
-> `RenderedView` (rgb, depth, labels, pose); `DemoScene.commands(phrasing)` -> `Command`s;
`Command.mask(view)`; `SceneObject.box` (world-frame axis-aligned centre and size).

For long sequences (the demo bag) two options change a scene over time, both off by
default: the camera can turn away from the table for a few frames (`make_scene(pans=...)`,
`look_away_pans`), and an object can be moved to another place on the table from a given
view on (`DemoScene.moved` -> `ObjectMove`; `DemoScene.objects_at(view)` are the objects as
that view sees them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from lisa_ros.geometry import CameraIntrinsics, look_at

from .catalogue import CATEGORIES, SceneObject, rgb255
from .intents import INTENTS
from .raycast import Primitive, cast_rays, pixel_rays

__all__ = [
    "DEMO_INTRINSICS",
    "SPLITS",
    "TABLE_HEIGHT",
    "Command",
    "DemoScene",
    "ObjectMove",
    "RenderedView",
    "look_away_pans",
    "make_scene",
    "trajectory",
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

# Surfaces, as `DemoScene.cast` reports them.
SKY, FLOOR, WALL, FURNITURE, OBJECT = -1, 0, 1, 2, 3


@dataclass
class RenderedView:
    """One rendered view: rgb uint8 HxWx3, depth float32 HxW metres (0: nothing hit),
    labels int16 HxW (object index, -1 elsewhere), pose 4x4 camera-to-world."""

    rgb: np.ndarray
    depth: np.ndarray
    labels: np.ndarray
    pose: np.ndarray


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

    def mask(self, view: RenderedView) -> np.ndarray:
        """The target's ground-truth mask in `view` (bool HxW)."""
        return view.labels == self.target


@dataclass(frozen=True)
class ObjectMove:
    """Object `index` stands at `position` (footprint centre, world) from view `frame` on
    (an object handed over / put somewhere else while the camera looks on)."""

    frame: int
    index: int
    position: tuple


@dataclass
class DemoScene:
    """A table with objects, a camera trajectory along an arc in front of it, and an intrinsics.

    `objects` are the objects as placed at the first view; `moves` (empty by default)
    displace some of them from a given view on (`objects_at`).
    """

    scene_id: str
    objects: list[SceneObject]
    origin: np.ndarray  # table centre on the floor (x, y, 0)
    poses: list[np.ndarray]
    intrinsics: CameraIntrinsics = DEMO_INTRINSICS
    seed: int = 0
    table_tint: float = 1.0
    moves: tuple = ()  # ObjectMove, ordered by frame
    _static: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        ox, oy = float(self.origin[0]), float(self.origin[1])
        top = TABLE_HEIGHT
        ident = tuple(map(tuple, np.eye(3).tolist()))
        wood = (0.66 * self.table_tint, 0.48 * self.table_tint, 0.30 * self.table_tint)
        half_top = (TABLE_SIZE[0] / 2, TABLE_SIZE[1] / 2, TABLE_THICKNESS / 2)
        self._static = [Primitive("box", (ox, oy, top - TABLE_THICKNESS / 2), ident, half_top, wood, wood)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                center = (
                    ox + sx * (TABLE_SIZE[0] / 2 - 0.05),
                    oy + sy * (TABLE_SIZE[1] / 2 - 0.05),
                    (top - TABLE_THICKNESS) / 2,
                )
                leg = (0.025, 0.025, (top - TABLE_THICKNESS) / 2)
                self._static.append(Primitive("box", center, ident, leg, rgb255(90, 60, 40)))

    @property
    def table_top(self) -> float:
        return TABLE_HEIGHT

    def objects_at(self, view: int) -> list[SceneObject]:
        """The objects as view index `view` sees them: `objects` with the moves of views <= `view` applied."""
        objects = list(self.objects)
        for move in self.moves:
            if move.frame <= view:
                old = objects[move.index]
                objects[move.index] = SceneObject(old.index, old.category, tuple(move.position), old.yaw, old.scale)
        return objects

    def fits(self, index: int, position, view: int = 0) -> bool:
        """Whether object `index` fits at `position` (footprint centre) on the table, clear of the
        other objects as view `view` sees them (the rule `make_scene` places objects by)."""
        objects = self.objects_at(view)
        obj = objects[index]
        radius = CATEGORIES[obj.category].footprint_radius * obj.scale
        x, y = float(position[0]) - self.origin[0], float(position[1]) - self.origin[1]
        if abs(x) > PLACEMENT_HALF[0] - radius or abs(y) > PLACEMENT_HALF[1] - radius:
            return False
        for other in objects:
            if other.index == index:
                continue
            other_radius = CATEGORIES[other.category].footprint_radius * other.scale
            gap = math.hypot(float(position[0]) - other.position[0], float(position[1]) - other.position[1])
            if gap <= radius + other_radius + 0.015:
                return False
        return True

    def moved(self, index: int, offset, frame: int) -> DemoScene:
        """This scene with object `index` displaced by `offset` (dx, dy metres on the table) from
        view `frame` on. Raises ValueError when it would not fit there (`fits`)."""
        old = self.objects_at(frame)[index]
        position = (old.position[0] + float(offset[0]), old.position[1] + float(offset[1]), old.position[2])
        if not self.fits(index, position, frame):
            raise ValueError(f"object {index} does not fit at {position[:2]} from view {frame}")
        moves = tuple(sorted((*self.moves, ObjectMove(int(frame), int(index), position)), key=lambda m: m.frame))
        return replace(self, moves=moves)

    def cast(self, origins: np.ndarray, directions: np.ndarray, objects: list[SceneObject] | None = None):
        """First hit of each ray o + t d: (t [N], label [N] object index or -1, rgb float [N, 3],
        normal [N, 3], surface [N]: SKY, FLOOR, WALL, FURNITURE or OBJECT). `objects`: those to
        cast against (default `self.objects`, as placed at the first view)."""
        count = len(origins)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_floor = -origins[:, 2] / directions[:, 2]
            t_wall = (self.origin[1] + WALL_Y - origins[:, 1]) / directions[:, 1]
        p = origins + np.where(np.isfinite(t_floor), t_floor, 0)[:, None] * directions
        ok = (t_floor > 0) & (np.abs(p[:, 0] - self.origin[0]) <= FLOOR_HALF) & (p[:, 1] - self.origin[1] <= WALL_Y)
        best = np.where(ok, t_floor, np.inf)
        label = np.full(count, -1, dtype=np.int16)
        surface = np.where(ok, FLOOR, SKY).astype(np.int16)
        normal = np.zeros((count, 3))
        normal[:, 2] = 1
        color = np.zeros((count, 3))
        tile = (np.floor(p[:, 0] / 0.5) + np.floor(p[:, 1] / 0.5)) % 2
        color[:] = np.where(tile[:, None] > 0, [0.62, 0.60, 0.56], [0.50, 0.48, 0.45])
        pw = origins + np.where(np.isfinite(t_wall), t_wall, 0)[:, None] * directions
        wall_ok = (t_wall > 0) & (t_wall < best) & (pw[:, 2] >= 0) & (pw[:, 2] <= 2.6)
        best = np.where(wall_ok, t_wall, best)
        surface[wall_ok] = WALL
        normal[wall_ok] = [0, -1, 0]
        color[wall_ok] = [0.82, 0.84, 0.80]

        # The table, then the objects: per primitive its label, surface and colours.
        primitives = list(self._static)
        labels, surfaces = [-1] * len(primitives), [FURNITURE] * len(primitives)
        for obj in self.objects if objects is None else objects:
            primitives.extend(obj.primitives)
            labels.extend([obj.index] * len(obj.primitives))
            surfaces.extend([OBJECT] * len(obj.primitives))
        hits = cast_rays(primitives, origins, directions, best)
        rows = np.flatnonzero(hits.primitive >= 0)
        which = hits.primitive[rows]
        best = hits.t
        label[rows] = np.asarray(labels, dtype=np.int16)[which]
        surface[rows] = np.asarray(surfaces, dtype=np.int16)[which]
        normal[rows] = hits.normal[rows]
        side_colors = np.array([p.color for p in primitives], dtype=np.float64)
        top_colors = np.array([p.color if p.top_color is None else p.top_color for p in primitives], dtype=np.float64)
        color[rows] = np.where(hits.top[rows][:, None], top_colors[which], side_colors[which])
        # Wood grain on the table top.
        pt = origins + np.where(np.isfinite(best), best, 0)[:, None] * directions
        grain = surface == FURNITURE
        color[grain] *= (0.9 + 0.1 * np.sin(pt[grain, 0] * 70 + 3 * np.sin(pt[grain, 1] * 9)))[:, None]
        return best, label, color, normal, surface

    def render(self, view: int | np.ndarray) -> RenderedView:
        """The view from pose `view` (an index into `poses`, with the objects as that view sees
        them, or a 4x4 camera-to-world, with the objects as placed at the first view)."""
        if isinstance(view, (int, np.integer)):
            pose, objects = self.poses[view], (self.objects_at(int(view)) if self.moves else None)
        else:
            pose, objects = np.asarray(view, dtype=np.float64), None
        origins, directions = pixel_rays(self.intrinsics, pose)
        t, label, color, normal, surface = self.cast(origins, directions, objects)
        # Lambertian shading with a fixed light; normals face the camera.
        facing = np.sign(-np.einsum("ij,ij->i", normal, directions))[:, None]
        facing[facing == 0] = 1
        lambert = np.clip((normal * facing) @ LIGHT, 0, None)
        shade = 0.45 + 0.55 * lambert
        rgb = np.clip(color * shade[:, None], 0, 1)
        rgb[surface == SKY] = [0.75, 0.85, 0.95]
        depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32)
        shape = (self.intrinsics.height, self.intrinsics.width)
        return RenderedView(
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
    """32-bit FNV-1a of `text` (Python's hash() of a str changes between runs)."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def look_away_pans(frames: int, start: int, away: int = 3, angle: float = 100.0, ramp: float = 45.0) -> list[float]:
    """Per-view pan angles (degrees, for `trajectory`/`make_scene`'s `pans`) of a camera that turns
    away from the table: `ramp` at view `start`, `angle` for the `away` views after it (the
    table is then out of view), `ramp` again on the way back, 0 elsewhere."""
    pans = [0.0] * int(frames)
    for offset, value in enumerate([ramp] + [angle] * int(away) + [ramp]):
        if 0 <= start + offset < frames:
            pans[start + offset] = float(value)
    return pans


def trajectory(
    origin, frames: int, rng: np.random.Generator | None = None, arc_deg: float = 60.0, pans=None
) -> list[np.ndarray]:
    """Camera poses along an arc in front of (on the -y side of) the table, looking at its centre.

    pans: optional per-view angles (degrees) by which the camera turns about the vertical
    (counter-clockwise seen from above) away from looking at the table, e.g. `look_away_pans`.
    """
    origin = np.asarray(origin, dtype=np.float64)
    if pans is not None and len(pans) != frames:
        raise ValueError(f"pans must have one angle per view ({frames}), got {len(pans)}")
    jitter = (lambda s: float(rng.uniform(-s, s))) if rng is not None else (lambda s: 0.0)
    radius, height = 0.52 + jitter(0.04), TABLE_HEIGHT + 0.45 + jitter(0.04)
    target = origin + np.array([jitter(0.03), 0.05 + jitter(0.03), TABLE_HEIGHT])
    start = -90.0 - arc_deg / 2 + jitter(5.0)
    azimuths = np.radians(start + np.linspace(0.0, arc_deg, frames) if frames > 1 else np.array([start + arc_deg / 2]))
    poses = []
    for i, az in enumerate(azimuths):
        eye = origin + np.array([radius * math.cos(az), radius * math.sin(az), height])
        pan = 0.0 if pans is None else math.radians(float(pans[i]))
        if pan == 0.0:
            poses.append(look_at(eye, target))
            continue
        forward = target - eye
        c, s = math.cos(pan), math.sin(pan)
        turned = np.array([c * forward[0] - s * forward[1], s * forward[0] + c * forward[1], forward[2]])
        poses.append(look_at(eye, eye + turned))
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
    arc_deg: float = 60.0,
    pans=None,
) -> DemoScene:
    """The scene `index` of `split` for `seed` (deterministic).

    Objects (distinct categories) are placed on the table without overlap at random
    positions and yaws, scaled by 0.9-1.1. Splits draw from disjoint random streams.
    `origin` moves the table (x, y) in the world (e.g. several tables in one bag).
    `categories` forces the object categories (in order), e.g. for tests. `intrinsics`
    changes the camera (e.g. a smaller image or a narrower field of view) without
    changing the scene. `arc_deg` (the camera arc's width) and `pans` (per-view angles by
    which the camera turns away from the table, `look_away_pans`) change the camera path
    only; the objects and the random stream stay those of the defaults.
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
                SceneObject(
                    i, name, (float(origin3[0] + x), float(origin3[1] + y), TABLE_HEIGHT),
                    float(rng.uniform(0, 2 * math.pi)), scale,
                )
                for i, (name, (x, y, _, scale)) in enumerate(zip(chosen, placed))
            ]
            poses = trajectory(origin3, frames, rng, arc_deg, pans)
            tint = float(rng.uniform(0.85, 1.15))
            return DemoScene(f"{split}_{seed}_{index:05d}", objects, origin3, poses, intrinsics, int(seed), tint)
    raise RuntimeError(f"could not place objects for scene {split}/{seed}/{index}")


def vocabulary_corpus() -> list[str]:
    """Every phrasing, explanation and category name: a corpus for a small tokenizer.

    Explanations are those of every intent for an object of every category (beside an
    apple), where the intent's template is defined for that category.
    """
    texts = [" ".join(CATEGORIES)]
    for intent in INTENTS.values():
        texts.extend(intent.train)
        texts.extend(intent.heldout)
    for name in CATEGORIES:
        obj = SceneObject(0, name, (0.0, 0.0, TABLE_HEIGHT), 0.0, 1.0)
        others = [SceneObject(1, "apple", (0.0, 0.0, TABLE_HEIGHT), 0.0, 1.0)]
        for intent in INTENTS.values():
            explanation = intent.explain(obj, [obj, *others])
            if explanation is not None:
                texts.append(explanation)
    return sorted(set(texts))
