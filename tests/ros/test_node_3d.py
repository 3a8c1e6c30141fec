"""lisa_node's 3D outputs end to end: image + depth + camera_info + command -> target cloud, markers, 3D fields.

The node runs in its own process with the tiny model trained to answer "segment the
red square" (conftest's `trained_tiny`, saved as a checkpoint); real rclpy, real DDS on
loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, this session's ROS_DOMAIN_ID: see
tests/ros_env.py). The synthetic scene: a camera (fx = fy = 80, cx = cy = 32) facing a
plane 1.0 m away; the red square's pixels (rows and columns 8..23) see a box face
0.8 m away, so one pixel there is 1 cm wide.
"""

import array
import threading
import time

import numpy as np
import pytest

from tests.helpers import ros_env
from tests.helpers.model import squares_scene
from tests.helpers.ros_env import STARTUP_TIMEOUT, TIMEOUT, start_node, wait_until

NAMESPACE = "/lisa_3d"
COMMAND = "segment the red square"
SIZE = 64
FX = FY = 80.0
CX = CY = 32.0
PLANE, FACE = 1.0, 0.8
RED_AT, BLUE_AT, SIDE = (8, 8), (36, 36), 16
EROSION = 2

pytestmark = pytest.mark.timeout(300)

_MISSING = ros_env.missing()
if _MISSING:
    pytest.fail(_MISSING, pytrace=False)


def truth_points(erosion=EROSION):
    """Camera-frame points of the red square's face, one per (eroded) pixel."""
    top, left = RED_AT
    rows, cols = np.mgrid[top + erosion : top + SIDE - erosion, left + erosion : left + SIDE - erosion]
    z = np.full(rows.size, FACE)
    return np.stack([(cols.ravel() - CX) * z / FX, (rows.ravel() - CY) * z / FY, z], axis=1)


def depth_meters(size=SIZE):
    depth = np.full((size, size), PLANE, np.float32)
    top, left = RED_AT
    depth[top : top + SIDE, left : left + SIDE] = FACE
    return depth


@pytest.fixture(scope="module")
def checkpoint(trained_tiny_checkpoint):
    return trained_tiny_checkpoint


@pytest.fixture(scope="module")
def client(ros_home):
    def make_client(context):
        from rclpy.node import Node

        return Client3D(Node("lisa_3d_test_client", context=context), NAMESPACE)

    with ros_env.spinning_client(ros_home, make_client) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def lisa(client, ros_home, checkpoint):
    model_path, clip_path = checkpoint
    node = start_node(
        ros_home,
        NAMESPACE,
        f"model_path:={model_path}",
        f"vision_tower_path:={clip_path}",
        "max_new_tokens:=8",
        "max_image_age:=30.0",
        "keep_conversation:=false",
        f"mask_erosion:={EROSION}",
        "voxel_size:=0.005",  # finer than the 1 cm pixels: the truth is exact
        "tracking:=false",  # answers' 3D outputs only (tracked images' are in test_node_tracking.py)
    )
    try:
        wait_until(client.ready, node, STARTUP_TIMEOUT, "ready")
        yield node
    finally:
        node.stop()


class Client3D:
    """Publishes image, depth, camera_info, camera poses and commands to the lisa_node in
    `namespace`; collects its results, clouds and markers."""

    def __init__(self, node, namespace):
        from geometry_msgs.msg import PoseStamped
        from rclpy.callback_groups import ReentrantCallbackGroup
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        from lisa_ros.msg import SegmentationResult

        self.node = node
        self.namespace = namespace
        group = ReentrantCallbackGroup()
        self.lock = threading.Lock()
        self.results, self.clouds, self.markers = [], [], []
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)

        def collect(bucket):
            def callback(msg):
                with self.lock:
                    bucket.append(msg)

            return callback

        sub = node.create_subscription
        sub(SegmentationResult, f"{namespace}/result", collect(self.results), reliable, callback_group=group)
        sub(PointCloud2, f"{namespace}/target_cloud", collect(self.clouds), reliable, callback_group=group)
        sub(MarkerArray, f"{namespace}/markers", collect(self.markers), reliable, callback_group=group)
        self.image_pub = node.create_publisher(Image, f"{namespace}/image", reliable)
        self.depth_pub = node.create_publisher(Image, f"{namespace}/depth", reliable)
        self.info_pub = node.create_publisher(CameraInfo, f"{namespace}/camera_info", reliable)
        self.command_pub = node.create_publisher(String, f"{namespace}/command", reliable)
        self.pose_pub = node.create_publisher(PoseStamped, f"{namespace}/camera_pose", reliable)
        self.Image, self.CameraInfo, self.String, self.PoseStamped = Image, CameraInfo, String, PoseStamped

    def ready(self) -> bool:
        return all(
            publisher.get_subscription_count() > 0
            for publisher in (self.image_pub, self.depth_pub, self.info_pub, self.command_pub)
        ) and all(
            self.node.count_publishers(f"{self.namespace}/{topic}") > 0
            for topic in ("result", "target_cloud", "markers")
        )

    def image_msg(self, stamp):
        rgb, _ = squares_scene(RED_AT, BLUE_AT)
        msg = self.Image(height=SIZE, width=SIZE, encoding="rgb8", step=SIZE * 3)
        msg.data = array.array("B", rgb.tobytes())
        msg.header.stamp, msg.header.frame_id = stamp, "camera"
        return msg

    def depth_msg(self, stamp, encoding="32FC1"):
        depth = depth_meters()
        if encoding == "32FC1":
            data, step = depth.astype("<f4").tobytes(), SIZE * 4
        else:
            data, step = np.round(depth * 1000).astype("<u2").tobytes(), SIZE * 2
        msg = self.Image(height=SIZE, width=SIZE, encoding=encoding, step=step, is_bigendian=0)
        msg.data = array.array("B", data)
        msg.header.stamp, msg.header.frame_id = stamp, "camera"
        return msg

    def camera_info_msg(self, stamp):
        msg = self.CameraInfo(height=SIZE, width=SIZE, distortion_model="plumb_bob")
        msg.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
        msg.header.stamp, msg.header.frame_id = stamp, "camera"
        return msg

    def pose_msg(self, stamp, frame_id, translation, quaternion):
        msg = self.PoseStamped()
        msg.header.stamp, msg.header.frame_id = stamp, frame_id
        position, orientation = msg.pose.position, msg.pose.orientation
        position.x, position.y, position.z = (float(v) for v in translation)
        orientation.x, orientation.y, orientation.z, orientation.w = (float(v) for v in quaternion)
        return msg

    def publish(self, image=None, depth=None, info=None, pose=None):
        """Publish a camera's messages a few times (the node's inputs are best effort)."""
        for _ in range(3):
            publishers = (self.pose_pub, pose), (self.depth_pub, depth), (self.info_pub, info), (self.image_pub, image)
            for publisher, msg in publishers:
                if msg is not None:
                    publisher.publish(msg)
            time.sleep(0.05)
        time.sleep(0.2)

    def stamp(self, offset_s=0.0):
        from rclpy.duration import Duration

        return (self.node.get_clock().now() + Duration(nanoseconds=int(offset_s * 1e9))).to_msg()

    def count(self, bucket):
        with self.lock:
            return len(bucket)

    def wait(self, bucket, start, n=1, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(bucket) >= start + n:
                    return list(bucket[start : start + n])
            time.sleep(0.02)
        raise AssertionError(f"expected {n} messages within {timeout} s, got {self.count(bucket) - start}")

    def command(self, text=COMMAND):
        """Send a command; wait for its result, target cloud and markers."""
        starts = [self.count(bucket) for bucket in (self.results, self.clouds, self.markers)]
        self.command_pub.publish(self.String(data=text))
        result = self.wait(self.results, starts[0])[0]
        if result.status == result.STATUS_ERROR:
            return result, None, None
        cloud = self.wait(self.clouds, starts[1])[0]
        markers = self.wait(self.markers, starts[2])[0]
        time.sleep(0.3)
        assert [self.count(b) - s for b, s in zip((self.results, self.clouds, self.markers), starts)] == [1, 1, 1]
        return result, cloud, markers


def cloud_points(cloud) -> np.ndarray:
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1),
        ("y", 4, 7, 1),
        ("z", 8, 7, 1),
    ]
    assert (cloud.height, cloud.point_step, cloud.row_step) == (1, 12, 12 * cloud.width)
    assert not cloud.is_bigendian
    return np.frombuffer(bytes(cloud.data), "<f4").reshape(cloud.width, 3)


def quaternion_matrix(q) -> np.ndarray:
    from lisa_ros.runtime.message_fields import matrix_from_pose

    return matrix_from_pose((0, 0, 0), (q.x, q.y, q.z, q.w))[:3, :3]


def assert_no_region(result, cloud, markers, *fragments):
    assert result.status == result.STATUS_OK, result.error_message or result.answer
    assert len(result.masks) == 1
    assert result.centroids == [] and result.box_poses == [] and result.box_sizes == []
    assert result.point_counts.tolist() == []
    for fragment in fragments:
        assert fragment in result.region_status, result.region_status
    assert cloud.width == 0 and len(cloud.data) == 0
    assert [m.action for m in markers.markers] == [markers.markers[0].DELETEALL]


def assert_region_on_the_face(result, cloud, markers, stamp, frame="camera", camera_to_frame=None):
    assert result.status == result.STATUS_OK, result.error_message or result.answer
    assert len(result.masks) == 1, result.answer
    assert result.region_status == "" and result.region_frame == frame
    assert len(result.centroids) == len(result.box_poses) == len(result.box_sizes) == len(result.point_counts) == 1
    truth = truth_points()

    # The cloud: on the face, inside the square's footprint, in the region frame at the image's stamp.
    assert (cloud.header.frame_id, cloud.header.stamp) == (frame, stamp)
    points = cloud_points(cloud)
    if camera_to_frame is not None:  # back to the camera frame, where the truth is simple
        points = (points - camera_to_frame[:3, 3]) @ camera_to_frame[:3, :3]
    assert len(points) >= 0.8 * len(truth) and result.point_counts[0] >= len(points)
    assert np.all(np.abs(points[:, 2] - FACE) < 0.01), points[:, 2]
    top, left = RED_AT
    low = np.array([(left - 0.5 - CX) * FACE / FX, (top - 0.5 - CY) * FACE / FY])
    high = np.array([(left + SIDE - 0.5 - CX) * FACE / FX, (top + SIDE - 0.5 - CY) * FACE / FY])
    assert np.all((points[:, :2] >= low) & (points[:, :2] <= high))

    # The result: centroid, oriented box holding every point, flat along the view.
    c = result.centroids[0]
    centroid = np.array([c.x, c.y, c.z])
    if camera_to_frame is not None:
        centroid = (centroid - camera_to_frame[:3, 3]) @ camera_to_frame[:3, :3]
    assert np.linalg.norm(centroid - truth.mean(axis=0)) < 0.01, (centroid, truth.mean(axis=0))
    pose, size = result.box_poses[0], result.box_sizes[0]
    q = pose.orientation
    assert abs(np.linalg.norm([q.x, q.y, q.z, q.w]) - 1.0) < 1e-6
    rotation = quaternion_matrix(q)
    center = np.array([pose.position.x, pose.position.y, pose.position.z])
    if camera_to_frame is not None:
        rotation = camera_to_frame[:3, :3].T @ rotation
        center = (center - camera_to_frame[:3, 3]) @ camera_to_frame[:3, :3]
    extents = np.array([size.x, size.y, size.z])
    local = (points - center) @ rotation
    assert np.all(np.abs(local) <= extents / 2 + 2e-3)
    span = truth.max(axis=0) - truth.min(axis=0)  # 11 cm x 11 cm x 0
    thin, _, wide = sorted(extents)
    assert thin < 0.01 and span.max() - 0.02 <= wide <= np.linalg.norm(span) + 0.02, extents
    normal_axis = np.argmin(extents)
    assert abs(abs(rotation[:, normal_axis] @ [0, 0, 1]) - 1.0) < 0.01  # the thin axis is the view axis

    # The markers: DELETEALL first, then a box, the centroid and the command as a label.
    kinds = [(m.action, m.type) for m in markers.markers]
    first = markers.markers[0]
    assert kinds == [
        (first.DELETEALL, first.ARROW),
        (first.ADD, first.CUBE),
        (first.ADD, first.SPHERE),
        (first.ADD, first.TEXT_VIEW_FACING),
    ]
    box, sphere, label = markers.markers[1:]
    assert all(m.header.frame_id == frame and m.header.stamp == stamp for m in markers.markers)
    assert box.pose == pose and (box.scale.x, box.scale.y) == pytest.approx((max(size.x, 0.005), max(size.y, 0.005)))
    assert (sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z) == (c.x, c.y, c.z)
    assert label.text == COMMAND


# --- tests, in order: the node starts without any depth ------------------------------


def test_without_depth_the_3d_fields_stay_empty(lisa, client):
    stamp = client.stamp()
    client.publish(image=client.image_msg(stamp))
    result, cloud, markers = client.command()
    assert_no_region(result, cloud, markers, "no depth image received")
    assert cloud.header.stamp == stamp


def test_without_camera_info(lisa, client):
    stamp = client.stamp()
    client.publish(image=client.image_msg(stamp), depth=client.depth_msg(stamp))
    assert_no_region(*client.command(), "no camera_info received")


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_point_cloud_on_the_object(lisa, client, encoding):
    stamp = client.stamp()
    client.publish(
        image=client.image_msg(stamp), depth=client.depth_msg(stamp, encoding), info=client.camera_info_msg(stamp)
    )
    result, cloud, markers = client.command()
    assert_region_on_the_face(result, cloud, markers, stamp)


def test_depth_too_far_apart_from_the_image(lisa, client):
    """No image of the last second has depth within max_depth_skew: the newest is answered, without a region.

    (With one that has, the command is answered on that one: the pairing tests in tests/runtime.)"""
    time.sleep(1.1)  # the earlier tests' images, with their depth, are now over PAIRING_WINDOW_S old
    stamp, late = client.stamp(), client.stamp(0.5)
    client.publish(depth=client.depth_msg(late), info=client.camera_info_msg(late))
    time.sleep(0.1)
    client.publish(image=client.image_msg(stamp))
    result, cloud, markers = client.command()
    assert_no_region(result, cloud, markers, "depth image is 0.500 s apart", "max_depth_skew")
    assert result.header.stamp == stamp


def test_a_no_target_answer_clears_the_3d_outputs(lisa, client):
    stamp = client.stamp()
    client.publish(
        image=client.image_msg(stamp), depth=client.depth_msg(stamp), info=client.camera_info_msg(stamp)
    )
    result, cloud, markers = client.command("what colour is the table?")
    assert result.status == result.STATUS_NO_TARGET and result.centroids == []
    assert "nothing was segmented" in result.region_status
    assert cloud.width == 0 and [m.action for m in markers.markers] == [markers.markers[0].DELETEALL]


def test_camera_poses_from_a_pose_topic(lisa, client, ros_home, checkpoint):
    """A second node with use_pose_topic and target_frame: regions in the target frame."""
    from lisa_ros.runtime.message_fields import matrix_from_pose

    model_path, clip_path = checkpoint
    namespace = f"{NAMESPACE}_pose"
    posed = Client3D(client.node, namespace)
    node = start_node(
        ros_home,
        namespace,
        f"model_path:={model_path}",
        f"vision_tower_path:={clip_path}",
        "max_new_tokens:=8",
        "max_image_age:=30.0",
        "keep_conversation:=false",
        "voxel_size:=0.005",
        "use_pose_topic:=true",
        "target_frame:=map",
    )
    try:
        ready = lambda: posed.ready() and posed.pose_pub.get_subscription_count() > 0  # noqa: E731
        wait_until(ready, node, STARTUP_TIMEOUT, "ready")
        translation, quaternion = (1.0, -2.0, 0.5), (0.0, 0.0, np.sin(np.pi / 8), np.cos(np.pi / 8))  # 45 deg yaw
        stamp = posed.stamp()
        posed.publish(
            image=posed.image_msg(stamp),
            depth=posed.depth_msg(stamp),
            info=posed.camera_info_msg(stamp),
            pose=posed.pose_msg(stamp, "map", translation, quaternion),
        )
        result, cloud, markers = posed.command()
        assert_region_on_the_face(result, cloud, markers, stamp, "map", matrix_from_pose(translation, quaternion))
        # A pose in another frame than target_frame is refused, with the reason.
        stamp = posed.stamp()
        posed.publish(
            image=posed.image_msg(stamp),
            depth=posed.depth_msg(stamp),
            info=posed.camera_info_msg(stamp),
            pose=posed.pose_msg(stamp, "odom", translation, quaternion),
        )
        assert_no_region(*posed.command(), "'odom', not target_frame 'map'")
    finally:
        node.stop()


# --- the conversions, without the node ---------------------------------------------


def test_quaternions_round_trip(client):
    from lisa_ros.runtime.message_fields import matrix_from_pose, quaternion_from_matrix

    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = -q if q[3] < 0 else q
        matrix = matrix_from_pose((1.0, 2.0, 3.0), q)
        assert np.allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3)) and np.isclose(np.linalg.det(matrix), 1)
        assert np.allclose(quaternion_from_matrix(matrix[:3, :3]), q, atol=1e-9)
        assert matrix[:3, 3].tolist() == [1.0, 2.0, 3.0]
    for angle in (0.0, np.pi, np.pi / 2):  # the branches where the trace is small
        for axis in np.eye(3):
            half = angle / 2
            q = np.append(axis * np.sin(half), np.cos(half))
            assert np.allclose(quaternion_from_matrix(matrix_from_pose((0, 0, 0), q)[:3, :3]), q, atol=1e-9)
    reflection = np.diag([1.0, 1.0, -1.0])  # improper: its third axis is flipped to a rotation
    assert np.allclose(quaternion_from_matrix(reflection), [0, 0, 0, 1])


def test_point_cloud_message(client):
    from std_msgs.msg import Header

    from lisa_ros.node.messages import point_cloud_msg

    points = np.arange(12, dtype=np.float32).reshape(4, 3)
    msg = point_cloud_msg(points, Header(frame_id="map"))
    assert (msg.width, msg.header.frame_id, msg.is_dense) == (4, "map", True)
    assert np.array_equal(cloud_points(msg), points)
    assert point_cloud_msg(np.zeros((0, 3)), Header()).width == 0


def test_tf2_lookup_adapter(client):
    """The tf2 path, with a stand-in Buffer (tf2_ros is not installable here)."""
    from geometry_msgs.msg import TransformStamped

    from lisa_ros.node.poses import tf_pose

    class Buffer:
        def __init__(self):
            self.calls = []

        def lookup_transform(self, target, source, time, timeout):
            self.calls.append((target, source, time.nanoseconds, timeout.nanoseconds))
            if source == "lost":
                raise RuntimeError("frame 'lost' does not exist")
            transform = TransformStamped()
            transform.transform.translation.x = 2.0
            transform.transform.rotation.z, transform.transform.rotation.w = 1.0, 0.0  # 180 deg yaw
            return transform

    buffer = Buffer()
    matrix, frame = tf_pose(buffer, "map", "camera", 123_000_000_456)
    assert frame == "map" and buffer.calls == [("map", "camera", 123_000_000_456, 200_000_000)]
    assert np.allclose(matrix, [[-1, 0, 0, 2], [0, -1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(LookupError, match="tf2: RuntimeError: frame 'lost' does not exist"):
        tf_pose(buffer, "map", "lost", 1)
