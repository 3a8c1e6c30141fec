"""Record a demo rosbag2 (mcap or sqlite3) from the synthetic reasoning scenes, with a ground-truth script.

    python -m lisa_ros.demo_bag --output outputs/demo_bag [--scenes 2 --frames 12 --storage mcap]

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
for a seed. Needs `rosbags` (pip install rosbags), no ROS install.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from lisa_ros.demo_scenes import DemoScene, make_scene

__all__ = ["TOPICS", "record_demo_bag", "main"]

TOPICS = {
    "image": "/camera/color/image_raw",
    "depth": "/camera/depth/image_raw",
    "camera_info": "/camera/color/camera_info",
    "pose": "/camera/pose",
    "tf": "/tf",
    "command": "/lisa/command",
}
CAMERA_FRAME = "camera_color_optical_frame"
MAP_FRAME = "map"
START_NS = 1_700_000_000 * 10**9  # the bag's first stamp (fixed, so bags are reproducible)
SCENE_SPACING = 4.0


def _quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    return float(x), float(y), float(z), float(w)


class _Messages:
    """Builders of the rosbags message objects used here."""

    def __init__(self):
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_KILTED)
        self.t = self.store.types

    def stamp(self, ns: int):
        return self.t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)

    def header(self, ns: int, frame_id: str):
        return self.t["std_msgs/msg/Header"](stamp=self.stamp(ns), frame_id=frame_id)

    def image(self, ns: int, array: np.ndarray, encoding: str):
        array = np.ascontiguousarray(array)
        height, width = array.shape[:2]
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(ns, CAMERA_FRAME), height=height, width=width, encoding=encoding, is_bigendian=0,
            step=array.nbytes // height, data=np.frombuffer(array.tobytes(), dtype=np.uint8),
        )

    def camera_info(self, ns: int, intrinsics):
        k = intrinsics.matrix()
        p = np.zeros((3, 4))
        p[:3, :3] = k
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(ns, CAMERA_FRAME), height=intrinsics.height, width=intrinsics.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=k.ravel(), r=np.eye(3).ravel(), p=p.ravel(),
            binning_x=0, binning_y=0, roi=roi,
        )

    def pose(self, ns: int, pose: np.ndarray):
        x, y, z, w = _quaternion(pose[:3, :3])
        t = pose[:3, 3]
        return self.t["geometry_msgs/msg/PoseStamped"](
            header=self.header(ns, MAP_FRAME),
            pose=self.t["geometry_msgs/msg/Pose"](
                position=self.t["geometry_msgs/msg/Point"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
                orientation=self.t["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
            ),
        )

    def tf(self, ns: int, pose: np.ndarray):
        x, y, z, w = _quaternion(pose[:3, :3])
        t = pose[:3, 3]
        transform = self.t["geometry_msgs/msg/TransformStamped"](
            header=self.header(ns, MAP_FRAME), child_frame_id=CAMERA_FRAME,
            transform=self.t["geometry_msgs/msg/Transform"](
                translation=self.t["geometry_msgs/msg/Vector3"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
                rotation=self.t["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
            ),
        )
        return self.t["tf2_msgs/msg/TFMessage"](transforms=[transform])

    def string(self, text: str):
        return self.t["std_msgs/msg/String"](data=text)


_MSGTYPES = {
    "image": "sensor_msgs/msg/Image",
    "depth": "sensor_msgs/msg/Image",
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "pose": "geometry_msgs/msg/PoseStamped",
    "tf": "tf2_msgs/msg/TFMessage",
    "command": "std_msgs/msg/String",
}


def _plan_commands(scene: DemoScene, frames: list, phrasing: str, min_visible_pixels: int):
    """(frame index, command) pairs: each command once, at a frame where its target is visible,
    spread evenly over the trajectory."""
    commands = scene.commands(phrasing)
    plan = []
    for order, command in enumerate(commands):
        wanted = int(round((order + 0.5) * len(frames) / max(len(commands), 1) - 0.5))
        visible = [i for i, f in enumerate(frames) if int(command.mask(f).sum()) >= min_visible_pixels]
        if not visible:
            continue
        plan.append((min(visible, key=lambda i: (abs(i - wanted), i)), command))
    return sorted(plan, key=lambda item: item[0])


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

    msgs = _Messages()
    period_ns = int(round(1e9 / rate_hz))
    entries, scene_info, counts = [], [], {key: 0 for key in TOPICS}
    last_ns = [START_NS]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(bag_dir, version=9, storage_plugin=plugin) as writer:
        connections = {
            key: writer.add_connection(TOPICS[key], _MSGTYPES[key], typestore=msgs.store) for key in TOPICS
        }

        def write(key, ns, msg):
            writer.write(connections[key], ns, msgs.store.serialize_cdr(msg, _MSGTYPES[key]))
            counts[key] += 1
            last_ns[0] = max(last_ns[0], ns)

        frame_counter = 0
        for scene_index in range(scenes):
            scene = make_scene(seed, split, scene_index, frames=frames_per_scene, origin=(SCENE_SPACING * scene_index, 0.0))
            frames = [scene.render(i) for i in range(frames_per_scene)]
            plan = _plan_commands(scene, frames, phrasing, min_visible_pixels)
            # Each scene starts one period after the previous one ends, plus a pause of one period.
            base = frame_counter + scene_index
            scene_info.append({
                "scene": scene.scene_id,
                "origin": [float(v) for v in scene.origin],
                "objects": [
                    {"object_id": f"{scene.scene_id}/{o.index}", "category": o.category,
                     "position": [float(v) for v in o.position], "yaw": o.yaw, "scale": o.scale, "box": o.box_dict()}
                    for o in scene.objects
                ],
            })
            for i, frame in enumerate(frames):
                ns = START_NS + (base + i) * period_ns
                write("image", ns, msgs.image(ns, frame.rgb, "rgb8"))
                if depth_encoding == "16UC1":
                    depth = np.round(np.clip(frame.depth, 0, 65.535) * 1000).astype(np.uint16)
                else:
                    depth = np.where(frame.depth > 0, frame.depth, np.nan).astype(np.float32)
                write("depth", ns, msgs.image(ns, depth, depth_encoding))
                write("camera_info", ns, msgs.camera_info(ns, scene.intrinsics))
                write("pose", ns, msgs.pose(ns, frame.pose))
                write("tf", ns, msgs.tf(ns, frame.pose))
                for frame_index, command in plan:
                    if frame_index != i:
                        continue
                    command_ns = ns + 20_000_000
                    write("command", command_ns, msgs.string(command.text))
                    mask_name = f"masks/{len(entries):03d}.png"
                    cv2.imwrite(str(output / mask_name), command.mask(frame).astype(np.uint8) * 255)
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
    (output / "scene.json").write_text(json.dumps({"seed": seed, "split": split, "scenes": scene_info}, indent=1) + "\n")
    return {
        "bag": str(bag_dir),
        "script": str(script_path),
        "storage": storage,
        "frames": frame_counter,
        "commands": len(entries),
        "counts": {TOPICS[key]: value for key, value in counts.items()},
        "duration_s": round((last_ns[0] - START_NS) / 1e9, 6),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lisa_ros.demo_bag",
        description="Record a demo rosbag2 from the synthetic reasoning scenes, with a ground-truth script.",
    )
    parser.add_argument("--output", default="outputs/demo_bag", help="output folder (bag/, script.jsonl, masks/, scene.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"],
                        help="scene stream (test: held out from training and from model selection)")
    parser.add_argument("--scenes", type=int, default=2, help="tables, visited one after the other")
    parser.add_argument("--frames", type=int, default=12, help="frames per scene")
    parser.add_argument("--rate", type=float, default=4.0, help="frame rate, Hz")
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    parser.add_argument("--depth-encoding", default="16UC1", choices=["16UC1", "32FC1"])
    parser.add_argument("--phrasing", default="heldout", choices=["train", "heldout"], help="command phrasings")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag in --output")
    args = parser.parse_args(argv)
    try:
        summary = record_demo_bag(
            args.output, seed=args.seed, split=args.split, scenes=args.scenes, frames_per_scene=args.frames,
            rate_hz=args.rate, storage=args.storage, depth_encoding=args.depth_encoding, phrasing=args.phrasing,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
