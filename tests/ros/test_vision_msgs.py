"""lisa_ros.node.messages' vision_msgs outputs against a built vision_msgs package.

vision_msgs is not on PyPI, so the test builds a stand-in with the released message
definitions (tests/helpers/vision_msgs_standin: the same field names and types) with
colcon, as scripts/setup.sh builds lisa_ros, into a cache folder keyed by the stand-in's
content and the venv (built once, about 20 s; later runs reuse it). A subprocess with
that install on its paths builds the Detection2DArray and Detection3DArray messages of a
result and of a tracked image, serialises them (the type support works) and prints their
fields for the checks here.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import ros_env

STANDIN = Path(__file__).resolve().parents[1] / "helpers" / "vision_msgs_standin"
SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"

pytestmark = pytest.mark.timeout(600)

_MISSING = ros_env.missing()
if _MISSING:
    pytest.fail(_MISSING, pytrace=False)


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lisa-ros"


def _key() -> str:
    digest = hashlib.sha256(sys.prefix.encode())
    for path in sorted(STANDIN.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(STANDIN).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def vision_msgs_install() -> Path:
    """The stand-in's colcon install folder (built now unless cached)."""
    install = _cache_root() / f"vision_msgs-{_key()}"
    if (install / "vision_msgs" / SITE / "vision_msgs" / "msg").is_dir():
        return install
    venv = Path(sys.prefix)
    # scripts/setup.sh points the wheels' cmake files at this link (numpy's include folder).
    numpy_link = _cache_root() / f"numpy-include-{hashlib.md5(str(venv).encode()).hexdigest()[:12]}"
    work = Path(tempfile.mkdtemp(prefix="vision_msgs-build-", dir=_cache_root()))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv))
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    command = [
        str(venv / "bin" / "colcon"),
        "build",
        "--base-paths",
        str(STANDIN),
        "--build-base",
        str(work / "build"),
        "--install-base",
        str(work / "install"),
        "--cmake-args",
        f"-DPython3_EXECUTABLE={venv / 'bin' / 'python'}",
        f"-DPython3_NumPy_INCLUDE_DIR={numpy_link}",
        "-DBUILD_TESTING=OFF",
    ]
    build = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=500)
    assert build.returncode == 0, f"colcon build of the vision_msgs stand-in failed:\n{build.stdout}\n{build.stderr}"
    try:
        (work / "install").rename(install)  # atomic: a concurrent session may have won
    except OSError:
        assert install.is_dir()
    shutil.rmtree(work, ignore_errors=True)
    return install


SCRIPT = r"""
import json
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message

from lisa_ros.node import messages
from lisa_ros.geometry import TargetRegion
from lisa_ros.runtime.tracking import TargetStatus, TrackedTarget, TrackingUpdate
from lisa_ros.runtime.types import Result, Status, mask_boxes

classes = messages.vision_msgs_classes()
assert classes is not None, "vision_msgs did not import"
masks = np.zeros((2, 48, 64), bool)
masks[0, 10:20, 5:15] = True
masks[1, 30:40, 40:50] = True
region = TargetRegion(
    points=np.zeros((1, 3), np.float32), centroid=np.array([1.0, 2.0, 3.0]), aabb_center=np.zeros(3),
    aabb_size=np.ones(3), obb_center=np.array([1.1, 2.1, 3.1]), obb_size=np.array([0.1, 0.2, 0.3]),
    obb_rotation=np.eye(3), point_count=9,
)
result = Result(
    command_id=3, command="the mug", stamp=5, frame_stamp=1_700_000_000_000_000_042, frame_id="camera",
    status=Status.OK, masks=masks, scores=np.array([0.9, 0.6], np.float32), boxes=mask_boxes(masks),
    image=np.zeros((48, 64, 3), np.uint8), regions=[region, None], region_frame="map",
)
target = TrackedTarget(
    target_id=8, command_id=3, command="the mug", answer="", status=TargetStatus.TRACKING, status_message="",
    score=0.7, box=mask_boxes(masks[:1])[0], mask=masks[0], region=region, region_frame="map",
    views_fused=2, age=0.5, reasks=0,
)
update = TrackingUpdate(1_700_000_001_000_000_000, "camera", np.zeros((48, 64, 3), np.uint8), [target])

out = {}
for kind, pairs in (("result", messages.detection_messages(result, classes)),
                    ("tracked", messages.tracking_detection_messages(update, classes))):
    for name, msg in pairs:
        again = deserialize_message(serialize_message(msg), type(msg))
        assert again == msg
        out[f"{kind} {name}"] = {
            "type": type(msg).__module__ + "." + type(msg).__name__,
            "header": [msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id],
            "detections": [
                {
                    "header": [d.header.stamp.sec, d.header.stamp.nanosec, d.header.frame_id],
                    "id": d.id,
                    "class_id": [r.hypothesis.class_id for r in d.results],
                    "score": [round(r.hypothesis.score, 4) for r in d.results],
                    "pose": [[r.pose.pose.position.x, r.pose.pose.position.y, r.pose.pose.position.z]
                             for r in d.results],
                    "bbox": (
                        [d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.theta,
                         d.bbox.size_x, d.bbox.size_y]
                        if hasattr(d.bbox, "size_x")
                        else [d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.position.z,
                              d.bbox.center.orientation.w, d.bbox.size.x, d.bbox.size.y, d.bbox.size.z]
                    ),
                }
                for d in msg.detections
            ],
        }
print("RESULT " + json.dumps(out))
"""


def test_vision_msgs_outputs_with_the_standin_package(vision_msgs_install, tmp_path):
    package = vision_msgs_install / "vision_msgs"
    env = ros_env.ros_environment(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(package / SITE), env["PYTHONPATH"]])
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(package), env["AMENT_PREFIX_PATH"]])
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(package / "lib"), env["LD_LIBRARY_PATH"]])
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    image = [1_700_000_000, 42, "camera"]

    two_d = out["result detections"]
    assert two_d["type"] == "vision_msgs.msg._detection2_d_array.Detection2DArray"
    assert two_d["header"] == image
    assert [d["bbox"] for d in two_d["detections"]] == [[9.5, 14.5, 0.0, 10.0, 10.0], [44.5, 34.5, 0.0, 10.0, 10.0]]
    assert [(d["header"], d["class_id"], d["score"], d["id"]) for d in two_d["detections"]] == [
        (image, ["the mug"], [0.9], ""),
        (image, ["the mug"], [0.6], ""),
    ]

    three_d = out["result detections_3d"]
    assert three_d["type"] == "vision_msgs.msg._detection3_d_array.Detection3DArray"
    assert three_d["header"] == [1_700_000_000, 42, "map"]
    (box,) = three_d["detections"]  # the second mask has no region
    assert box["bbox"] == pytest.approx([1.1, 2.1, 3.1, 1.0, 0.1, 0.2, 0.3])
    assert box["pose"] == [[1.0, 2.0, 3.0]] and box["header"] == [1_700_000_000, 42, "map"]

    tracked = out["tracked detections"]
    assert tracked["header"] == [1_700_000_001, 0, "camera"]
    assert [(d["id"], d["class_id"], d["score"]) for d in tracked["detections"]] == [("8", ["the mug"], [0.7])]
    tracked_3d = out["tracked detections_3d"]
    assert tracked_3d["header"] == [1_700_000_001, 0, "map"]
    assert [(d["id"], d["pose"]) for d in tracked_3d["detections"]] == [("8", [[1.0, 2.0, 3.0]])]


def test_without_vision_msgs_there_are_no_detection_outputs(tmp_path):
    script = "from lisa_ros.node import messages; print('CLASSES', messages.vision_msgs_classes())"
    run = subprocess.run(
        [sys.executable, "-c", script], env=ros_env.ros_environment(tmp_path), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "CLASSES None" in run.stdout


COMPRESSED_SCRIPT = r"""
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage

from lisa_ros.node import messages
from lisa_ros.runtime import codec
from lisa_ros.runtime.types import Result, Status, mask_boxes

masks = np.zeros((1, 48, 64), bool)
masks[0, 10:20, 5:15] = True
image = np.full((48, 64, 3), 120, np.uint8)
result = Result(command_id=1, command="c", stamp=1, frame_stamp=7, frame_id="camera", status=Status.OK,
                masks=masks, scores=np.ones(1, np.float32), boxes=mask_boxes(masks), image=image)
raw = dict(messages.result_messages(result, True))
compressed = messages.compressed_messages(list(raw.items()))
assert [name for name, _ in compressed] == ["mask/compressed", "overlay/compressed"]
for name, msg in compressed:
    assert isinstance(msg, CompressedImage) and deserialize_message(serialize_message(msg), CompressedImage) == msg
    source = raw[name.split("/")[0]]
    assert msg.header == source.header
    decoded = codec.compressed_to_rgb(msg)
    if name == "mask/compressed":
        assert msg.format == "mono8; png compressed "
        assert (decoded[:, :, 0] == np.frombuffer(bytes(source.data), np.uint8).reshape(48, 64)).all()
    else:
        assert msg.format == "rgb8; jpeg compressed bgr8"
        assert np.abs(decoded.astype(int) - codec.image_to_rgb(source).astype(int)).mean() < 3
print("COMPRESSED OK")
"""


def test_compressed_messages_decode_to_the_raw_ones(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", COMPRESSED_SCRIPT], env=ros_env.ros_environment(tmp_path), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "COMPRESSED OK" in run.stdout
