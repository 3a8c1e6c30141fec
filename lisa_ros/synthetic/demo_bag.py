"""Record a demo rosbag2 (mcap or sqlite3) from the synthetic reasoning scenes, with a ground-truth script.

    lisa-demo-bag --output outputs/demo_bag [--scenes 2 --frames 40 --commands 4 --storage mcap]

writes

    outputs/demo_bag/bag/                the rosbag2 (metadata.yaml + bag_0.mcap)
    outputs/demo_bag/script.jsonl        one command per line (see below)
    outputs/demo_bag/masks/NNN.png       ground-truth masks of command NNN's frame (uint8 0/255, colour-image size)
    outputs/demo_bag/masks/NNN_MMM.png   command NNN's target in the later image MMM (tracking ground truth)
    outputs/demo_bag/scene.json          every object of every scene (category, pose(s), world box(es))

Topics (all stamped with the recording time; frame ids below):
    /camera/color/image_raw    sensor_msgs/msg/Image rgb8          camera_color_optical_frame
    /camera/depth/image_raw    sensor_msgs/msg/Image 16UC1 (mm; 0 = none) or 32FC1 (m),
                               registered to the colour image (same intrinsics and frame)
    /camera/color/camera_info  sensor_msgs/msg/CameraInfo
    /camera/pose               geometry_msgs/msg/PoseStamped, the camera's pose in `map`
    /tf                        tf2_msgs/msg/TFMessage, map -> camera_color_optical_frame
    /lisa/command              std_msgs/msg/String, the commands of the script

Script (JSON lines): first one line per object of every scene, {object_id, center,
size, category} (world/map frame, axis-aligned box, metres); then one line per
command: time (seconds from the bag's first message), command, mask (png path
relative to the script), box {center, size} (the target's, as its object line),
object_id; track (one entry per later image of the scene until the next command: time
of the image's stamp, frame, mask or null when the target is out of sight, and the
target's box at that image); moved_at (only for the command whose target is moved: the
time of the first image that shows it at its new place); and, informative: answer,
intent, category, scene, frame (index of the image the command refers to, the latest
one at or before `time`).

Several scenes are tables at different places in the same `map` (4 m apart along x);
the camera moves along a 90 degree arc in front of each in turn. Each scene's frames are
cut into `commands` slots of at least 10 images, one command at the start of each (so
a target is tracked over >= 9 later images). During the second slot the camera turns
away from the table (the target leaves the view for 3-5 images and comes back); in the
first scene, 4 images into the third slot, the commanded target is moved 20-30 cm on the
table (along it, else diagonally). Everything is deterministic for a seed. Needs
`rosbags` (pip install rosbags), no ROS install. The messages' fields come from
lisa_ros.runtime (message_fields, codec), as the node's and the bag tools' do.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from lisa_ros.bag.typestore import build
from lisa_ros.runtime.codec import rgb_to_image_fields
from lisa_ros.runtime.message_fields import header_fields, quaternion_from_matrix

from .scenes import DemoScene, look_away_pans, make_scene

__all__ = ["TOPICS", "record_demo_bag"]

TOPICS = {
    "image": "/camera/color/image_raw",
    "depth": "/camera/depth/image_raw",
    "camera_info": "/camera/color/camera_info",
    "pose": "/camera/pose",
    "tf": "/tf",
    "command": "/lisa/command",
}
_MSGTYPES = {
    "image": "sensor_msgs/msg/Image",
    "depth": "sensor_msgs/msg/Image",
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "pose": "geometry_msgs/msg/PoseStamped",
    "tf": "tf2_msgs/msg/TFMessage",
    "command": "std_msgs/msg/String",
}
CAMERA_FRAME = "camera_color_optical_frame"
MAP_FRAME = "map"
START_NS = 1_700_000_000 * 10**9  # the bag's first stamp (fixed, so bags are reproducible)
SCENE_SPACING = 4.0
SLOT_FRAMES = 10  # images per command slot at least: a command and >= 9 later images
LOOK_AWAY_START = 1  # the camera turns away this many images after the command of its slot
LOOK_AWAY_FRAMES = 3  # images turned fully away (the ramps on either side add one each)
MOVE_AFTER = 4  # the target is moved this many images after the command of its slot
MOVE_DISTANCES = (0.25, 0.2, 0.3)  # metres, tried in this order
MOVE_DIRECTIONS = (0, 180, 45, 135, 225, 315, 90, 270)  # degrees from +x (along the table) on the table
MOVE_KEEP = 0.6  # a move that keeps this fraction of the target's pixels in view is taken at once
ARC_DEG = 90.0


# The messages' fields (lisa_ros.runtime.message_fields' nested-dict form).


def _image_fields(ns: int, array: np.ndarray, encoding: str) -> dict:
    return {"header": header_fields(ns, CAMERA_FRAME), **rgb_to_image_fields(array, encoding)}


def _camera_info_fields(ns: int, intrinsics) -> dict:
    """A pinhole CameraInfo without distortion (plumb_bob, d = 0)."""
    k = intrinsics.matrix()
    p = np.zeros((3, 4))
    p[:3, :3] = k
    return {
        "header": header_fields(ns, CAMERA_FRAME), "height": intrinsics.height, "width": intrinsics.width,
        "distortion_model": "plumb_bob", "d": np.zeros(5), "k": k.ravel(), "r": np.eye(3).ravel(), "p": p.ravel(),
    }


def _xyz(values) -> dict:
    x, y, z = (float(v) for v in values)
    return {"x": x, "y": y, "z": z}


def _quaternion(rotation: np.ndarray) -> dict:
    x, y, z, w = (float(v) for v in quaternion_from_matrix(rotation))
    return {"x": x, "y": y, "z": z, "w": w}


def _pose_fields(ns: int, pose: np.ndarray) -> dict:
    """PoseStamped: the camera's pose in the map."""
    return {
        "header": header_fields(ns, MAP_FRAME),
        "pose": {"position": _xyz(pose[:3, 3]), "orientation": _quaternion(pose[:3, :3])},
    }


def _tf_fields(ns: int, pose: np.ndarray) -> dict:
    """TFMessage: map -> camera_color_optical_frame."""
    transform = {"translation": _xyz(pose[:3, 3]), "rotation": _quaternion(pose[:3, :3])}
    return {
        "transforms": [
            {"header": header_fields(ns, MAP_FRAME), "child_frame_id": CAMERA_FRAME, "transform": transform}
        ]
    }


def _slots(frames: int, commands: int) -> list[tuple[int, int]]:
    """[start, end) image ranges of the command slots of a scene: `commands` at most, each of
    SLOT_FRAMES images at least (one slot when the scene is shorter)."""
    count = max(1, min(int(commands), frames // SLOT_FRAMES))
    starts = [int(round(k * frames / count)) for k in range(count)]
    return list(zip(starts, starts[1:] + [frames]))


def _look_away_slot(slots, look_away: bool) -> int | None:
    """The slot in which the camera turns away (the second; the first of a one-slot scene), if it
    is long enough for the target to come back for two images."""
    if not look_away:
        return None
    index = 1 if len(slots) > 1 else 0
    start, end = slots[index]
    return index if end - start >= LOOK_AWAY_START + LOOK_AWAY_FRAMES + 4 else None


def _move_slot(slots, look_slot: int | None) -> int | None:
    """The slot whose target is moved (the third; else one without the look-away), if long enough."""
    order = [2, 0, 3, 1] if len(slots) > 2 else [0, 1]
    for index in order:
        if index < len(slots) and index != look_slot and slots[index][1] - slots[index][0] >= MOVE_AFTER + 2:
            return index
    return None


def _plan_scene(
    seed: int, split: str, scene_index: int, frames: int, commands_per_scene: int, phrasing: str,
    min_visible_pixels: int, look_away: bool, move: bool,
):
    """The scene (camera path and object move included), its rendered views, and the plan:
    [(view index, command, move view index or None)], one command per slot.

    A slot's command has its target visible (>= min_visible_pixels) at the slot's first view;
    targets not yet asked for come first. The look-away slot's target is also visible when
    the camera is back (first and last view of the slot after the turn). The moved target
    is visible just before and at the move and at the slot's last view, and is no later
    command's target (its object line keeps its first pose).
    """
    slots = _slots(frames, commands_per_scene)
    look_slot = _look_away_slot(slots, look_away)
    move_slot = _move_slot(slots, look_slot) if move else None
    pans = None
    if look_slot is not None:
        pans = look_away_pans(frames, slots[look_slot][0] + LOOK_AWAY_START, LOOK_AWAY_FRAMES)
    origin = (SCENE_SPACING * scene_index, 0.0)
    scene = make_scene(seed, split, scene_index, frames=frames, origin=origin, arc_deg=ARC_DEG, pans=pans)
    cache: dict = {}

    def view(current: DemoScene, i: int):
        key = (i, tuple(m for m in current.moves if m.frame <= i))  # renders shared by the scenes before/after a move
        if key not in cache:
            cache[key] = current.render(i)
        return cache[key]

    def pixels(current: DemoScene, i: int, target: int) -> int:
        return int((view(current, i).labels == target).sum())

    def visible(current: DemoScene, i: int, target: int) -> bool:
        return pixels(current, i, target) >= min_visible_pixels

    commands = scene.commands(phrasing)
    plan, asked, moved_target = [], set(), None
    for index, (start, end) in enumerate(slots):
        used = {id(command) for _, command, _ in plan}
        candidates = [c for c in commands if id(c) not in used and c.target != moved_target]
        candidates.sort(key=lambda c: c.target in asked)  # stable: new targets first
        candidates = [c for c in candidates if visible(scene, start, c.target)]
        if index == look_slot:
            back = start + LOOK_AWAY_START + LOOK_AWAY_FRAMES + 2
            candidates = [c for c in candidates if visible(scene, back, c.target) and visible(scene, end - 1, c.target)]
        best = None  # (kept, command, moved scene)
        if index == move_slot:
            at = start + MOVE_AFTER
            for command in candidates:
                tried = _try_move(scene, command.target, at, end, pixels, min_visible_pixels)
                if tried is not None and (best is None or tried[0] > best[0]):
                    best = (tried[0], command, tried[1])
                if best is not None and best[0] >= MOVE_KEEP:
                    break
        if best is not None:
            scene, moved_target = best[2], best[1].target
            plan.append((start, best[1], start + MOVE_AFTER))
        elif candidates:
            plan.append((start, candidates[0], None))
        if plan and plan[-1][0] == start:
            asked.add(plan[-1][1].target)
    views = [view(scene, i) for i in range(frames)]
    return scene, views, plan


def _try_move(scene: DemoScene, target: int, at: int, end: int, pixels, min_visible_pixels: int):
    """(kept, scene) with `target` moved 20-30 cm on the table (along it, else diagonally or across)
    from view `at` on, visible before, at and after the move (at the slot's last view), or None.
    Of the moves that fit, the one that keeps the most of the target in view (at `at` and at the
    slot's last view) wins; kept: its visible pixels then over those just before the move."""
    before = pixels(scene, at - 1, target)
    if before < min_visible_pixels:
        return None
    best, best_pixels = None, min_visible_pixels - 1
    for degrees in MOVE_DIRECTIONS:
        direction = np.array([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))])
        for distance in MOVE_DISTANCES:
            try:
                moved = scene.moved(target, np.round(direction * distance, 9), at)
            except ValueError:
                continue
            seen = min(pixels(moved, at, target), pixels(moved, end - 1, target))
            if seen > best_pixels:
                best, best_pixels = moved, seen
    return None if best is None else (best_pixels / before, best)


def _scene_description(scene: DemoScene, first_frame: int, times) -> dict:
    """scene.json's entry of a scene: its id, origin and objects (category, pose, world box; and
    for a moved object, its later poses: from which global image on, at what time)."""
    objects = []
    for o in scene.objects:
        moves = []
        for move in scene.moves:
            if move.index == o.index:
                later = scene.objects_at(move.frame)[o.index]
                moves.append({
                    "frame": first_frame + move.frame, "time": times[move.frame],
                    "position": [float(v) for v in later.position], "yaw": later.yaw, "box": later.box_dict(),
                })
        objects.append({
            "object_id": f"{scene.scene_id}/{o.index}", "category": o.category,
            "position": [float(v) for v in o.position], "yaw": o.yaw, "scale": o.scale, "box": o.box_dict(),
            "moves": moves,
        })
    return {"scene": scene.scene_id, "origin": [float(v) for v in scene.origin], "objects": objects}


def record_demo_bag(
    output: str | Path = "outputs/demo_bag",
    seed: int = 0,
    split: str = "test",
    scenes: int = 2,
    frames_per_scene: int = 40,
    rate_hz: float = 4.0,
    storage: str = "mcap",
    depth_encoding: str = "16UC1",
    phrasing: str = "heldout",
    min_visible_pixels: int = 150,
    overwrite: bool = False,
    commands_per_scene: int = 4,
    look_away: bool = True,
    move_object: bool = True,
) -> dict:
    """Write the demo bag, masks, script and scene description under `output`; returns a summary dict.

    Each scene has up to `commands_per_scene` commands, each followed by >= 9 images
    (one command, followed by the rest of the scene, when `frames_per_scene` < 20). Commands are stamped 20 ms
    after the frame they refer to (so that frame is the latest at or before the command,
    and the nearest). `look_away`: the camera turns away from the table during each
    scene's second command; `move_object`: the first scene's third command's target is
    moved mid-slot. Raises FileExistsError when `output` already holds a bag, unless
    `overwrite`; ValueError for a bad storage, depth encoding, frame count or rate.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if depth_encoding not in ("16UC1", "32FC1"):
        raise ValueError(f"depth_encoding must be '16UC1' or '32FC1', got {depth_encoding!r}")
    if frames_per_scene < 1 or scenes < 1 or commands_per_scene < 1:
        raise ValueError("scenes, frames per scene and commands per scene must be at least 1")
    if not 0 < rate_hz < math.inf:
        raise ValueError(f"rate must be positive and finite, got {rate_hz}")
    output = Path(output)
    bag_dir, mask_dir, script_path = output / "bag", output / "masks", output / "script.jsonl"
    if bag_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{bag_dir} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(bag_dir)
        shutil.rmtree(mask_dir, ignore_errors=True)
    mask_dir.mkdir(parents=True, exist_ok=True)

    import cv2

    store = get_typestore(Stores.ROS2_KILTED)
    period_ns = int(round(1e9 / rate_hz))
    entries, scene_info, counts = [], [], {key: 0 for key in TOPICS}
    last_ns = [START_NS]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(bag_dir, version=9, storage_plugin=plugin) as writer:
        connections = {key: writer.add_connection(TOPICS[key], _MSGTYPES[key], typestore=store) for key in TOPICS}

        def write(key, ns, fields):
            message = build(store, _MSGTYPES[key], fields)
            writer.write(connections[key], ns, store.serialize_cdr(message, _MSGTYPES[key]))
            counts[key] += 1
            last_ns[0] = max(last_ns[0], ns)

        frame_counter = 0
        for scene_index in range(scenes):
            scene, views, plan = _plan_scene(
                seed, split, scene_index, frames_per_scene, commands_per_scene, phrasing, min_visible_pixels,
                look_away, move_object and scene_index == 0,
            )
            # Each scene starts one period after the previous one ends, plus a pause of one period.
            base = frame_counter + scene_index
            stamps = [START_NS + (base + i) * period_ns for i in range(frames_per_scene)]
            times = [round((ns - START_NS) / 1e9, 6) for ns in stamps]
            scene_info.append(_scene_description(scene, frame_counter, times))
            starts = [start for start, _, _ in plan]
            for i, view in enumerate(views):
                ns = stamps[i]
                write("image", ns, _image_fields(ns, view.rgb, "rgb8"))
                if depth_encoding == "16UC1":
                    depth = np.round(np.clip(view.depth, 0, 65.535) * 1000).astype(np.uint16)
                else:
                    depth = np.where(view.depth > 0, view.depth, np.nan).astype(np.float32)
                write("depth", ns, _image_fields(ns, depth, depth_encoding))
                write("camera_info", ns, _camera_info_fields(ns, scene.intrinsics))
                write("pose", ns, _pose_fields(ns, view.pose))
                write("tf", ns, _tf_fields(ns, view.pose))
                for order, (view_index, command, move_at) in enumerate(plan):
                    if view_index != i:
                        continue
                    command_ns = ns + 20_000_000
                    write("command", command_ns, {"data": command.text})
                    number = len(entries)
                    mask_name = f"masks/{number:03d}.png"
                    cv2.imwrite(str(output / mask_name), command.mask(view).astype(np.uint8) * 255)
                    target = scene.objects_at(i)[command.target]
                    # Tracking ground truth: every later image of the scene stamped before the next
                    # command (its own image included: it arrives 20 ms before that command).
                    last = starts[order + 1] if order + 1 < len(plan) else frames_per_scene - 1
                    track = []
                    for j in range(i + 1, last + 1):
                        mask = command.mask(views[j])
                        name = None
                        if mask.any():
                            name = f"masks/{number:03d}_{frame_counter + j:03d}.png"
                            cv2.imwrite(str(output / name), mask.astype(np.uint8) * 255)
                        box = scene.objects_at(j)[command.target].box_dict()
                        track.append({"time": times[j], "frame": frame_counter + j, "mask": name, "box": box})
                    entry = {
                        "time": round((command_ns - START_NS) / 1e9, 6),
                        "command": command.text,
                        "mask": mask_name,
                        "box": target.box_dict(),
                        "object_id": f"{scene.scene_id}/{target.index}",
                        "answer": command.answer,
                        "intent": command.intent,
                        "category": target.category,
                        "scene": scene.scene_id,
                        "frame": frame_counter + i,
                        "track": track,
                    }
                    if move_at is not None:
                        entry["moved_at"] = times[move_at]
                    entries.append(entry)
            frame_counter += frames_per_scene

    # Object lines first (object_id, center, size and no command: the evaluator's object
    # definitions, which command entries refer to by object_id), then the commands.
    objects = [
        {"object_id": o["object_id"], "center": o["box"]["center"], "size": o["box"]["size"], "category": o["category"]}
        for scene in scene_info
        for o in scene["objects"]
    ]
    script_path.write_text("".join(json.dumps(line) + "\n" for line in objects + entries))
    description = {"seed": seed, "split": split, "scenes": scene_info}
    (output / "scene.json").write_text(json.dumps(description, indent=1) + "\n")
    return {
        "bag": str(bag_dir),
        "script": str(script_path),
        "storage": storage,
        "frames": frame_counter,
        "commands": len(entries),
        "track_frames": sum(len(entry["track"]) for entry in entries),
        "moved_at": [entry["moved_at"] for entry in entries if "moved_at" in entry],
        "counts": {TOPICS[key]: value for key, value in counts.items()},
        "duration_s": round((last_ns[0] - START_NS) / 1e9, 6),
    }
