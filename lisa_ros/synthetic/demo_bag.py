"""Record a demo rosbag2 (mcap or sqlite3) from the synthetic reasoning scenes, with a ground-truth script.

    lisa-demo-bag --output outputs/demo_bag [--scenes 2 --frames 12 --storage mcap]

writes

    outputs/demo_bag/bag/            the rosbag2 (metadata.yaml + bag_0.mcap)
    outputs/demo_bag/script.jsonl    one command per line (see below)
    outputs/demo_bag/masks/NNN.png   ground-truth masks (uint8 0/255, colour-image size)
    outputs/demo_bag/scene.json      every object of every scene (category, pose, world box)

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
object_id; and, informative: answer, intent, category, scene, frame (index of the
image the command refers to, the latest one at or before `time`).

Several scenes are tables at different places in the same `map` (4 m apart along x);
the camera moves along an arc in front of each in turn. Everything is deterministic
for a seed. Needs `rosbags` (pip install rosbags), no ROS install. The messages' fields come
from lisa_ros.runtime (message_fields, codec), as the node's and the bag tools' do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from lisa_ros.bag.typestore import build
from lisa_ros.runtime.codec import rgb_to_image_fields
from lisa_ros.runtime.message_fields import header_fields, quaternion_from_matrix

from .scenes import DemoScene, make_scene

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


def _plan_commands(scene: DemoScene, views: list, phrasing: str, min_visible_pixels: int):
    """(view index, command) pairs: each command once, at a view where its target is visible,
    spread evenly over the trajectory."""
    commands = scene.commands(phrasing)
    plan = []
    for order, command in enumerate(commands):
        wanted = int(round((order + 0.5) * len(views) / max(len(commands), 1) - 0.5))
        visible = [i for i, view in enumerate(views) if int(command.mask(view).sum()) >= min_visible_pixels]
        if not visible:
            continue
        plan.append((min(visible, key=lambda i: (abs(i - wanted), i)), command))
    return sorted(plan, key=lambda item: item[0])


def _scene_description(scene: DemoScene) -> dict:
    """scene.json's entry of a scene: its id, origin and objects (category, pose, world box)."""
    return {
        "scene": scene.scene_id,
        "origin": [float(v) for v in scene.origin],
        "objects": [
            {"object_id": f"{scene.scene_id}/{o.index}", "category": o.category,
             "position": [float(v) for v in o.position], "yaw": o.yaw, "scale": o.scale, "box": o.box_dict()}
            for o in scene.objects
        ],
    }


def record_demo_bag(
    output: str | Path = "outputs/demo_bag",
    seed: int = 0,
    split: str = "test",
    scenes: int = 2,
    frames_per_scene: int = 12,
    rate_hz: float = 4.0,
    storage: str = "mcap",
    depth_encoding: str = "16UC1",
    phrasing: str = "heldout",
    min_visible_pixels: int = 150,
    overwrite: bool = False,
) -> dict:
    """Write the demo bag, masks, script and scene description under `output`; returns a summary dict.

    Commands are stamped 20 ms after the frame they refer to (so that frame is the
    latest at or before the command, and the nearest). Raises FileExistsError when
    `output` already holds a bag, unless `overwrite`.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if depth_encoding not in ("16UC1", "32FC1"):
        raise ValueError(f"depth_encoding must be '16UC1' or '32FC1', got {depth_encoding!r}")
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
            origin = (SCENE_SPACING * scene_index, 0.0)
            scene = make_scene(seed, split, scene_index, frames=frames_per_scene, origin=origin)
            views = [scene.render(i) for i in range(frames_per_scene)]
            plan = _plan_commands(scene, views, phrasing, min_visible_pixels)
            # Each scene starts one period after the previous one ends, plus a pause of one period.
            base = frame_counter + scene_index
            scene_info.append(_scene_description(scene))
            for i, view in enumerate(views):
                ns = START_NS + (base + i) * period_ns
                write("image", ns, _image_fields(ns, view.rgb, "rgb8"))
                if depth_encoding == "16UC1":
                    depth = np.round(np.clip(view.depth, 0, 65.535) * 1000).astype(np.uint16)
                else:
                    depth = np.where(view.depth > 0, view.depth, np.nan).astype(np.float32)
                write("depth", ns, _image_fields(ns, depth, depth_encoding))
                write("camera_info", ns, _camera_info_fields(ns, scene.intrinsics))
                write("pose", ns, _pose_fields(ns, view.pose))
                write("tf", ns, _tf_fields(ns, view.pose))
                for view_index, command in plan:
                    if view_index != i:
                        continue
                    command_ns = ns + 20_000_000
                    write("command", command_ns, {"data": command.text})
                    mask_name = f"masks/{len(entries):03d}.png"
                    cv2.imwrite(str(output / mask_name), command.mask(view).astype(np.uint8) * 255)
                    target = scene.objects[command.target]
                    entries.append({
                        "time": round((command_ns - START_NS) / 1e9, 6),
                        "command": command.text,
                        "mask": mask_name,
                        "box": target.box_dict(),
                        "object_id": f"{scene.scene_id}/{target.index}",
                        "answer": command.answer,
                        "intent": command.intent,
                        "category": target.category,
                        "scene": scene.scene_id,
                        "frame": base + i,
                    })
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
        "counts": {TOPICS[key]: value for key, value in counts.items()},
        "duration_s": round((last_ns[0] - START_NS) / 1e9, 6),
    }
