"""lisa_node on a robot: lifecycle owned by whoever starts it, clean Ctrl-C, deactivation that
answers every command, rejected goals, session ids, latched markers, and several cameras on
one model. Each test starts its own node process (real rclpy, DDS on loopback)."""

import array
import signal
import threading
import time

import numpy as np
import pytest

from tests.helpers import ros_env
from tests.helpers.ros_env import TIMEOUT, lifecycle_client, start_node, wait_until

pytestmark = pytest.mark.timeout(600)

_MISSING = ros_env.missing()
if _MISSING:
    pytest.fail(_MISSING, pytrace=False)


class Camera:
    """The test side of one node's topics in `namespace`: images and commands in, results out."""

    def __init__(self, node, namespace, image_topic=None):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from lisa_ros.msg import SegmentationResult

        self.node, self.namespace = node, namespace
        self.lock = threading.Lock()
        self.results = []
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.images = node.create_publisher(Image, image_topic or f"{namespace}/image", reliable)
        self.commands = node.create_publisher(String, f"{namespace}/command", reliable)
        self.subscription = node.create_subscription(
            SegmentationResult, f"{namespace}/result", self._collect, reliable
        )
        self.types = dict(Image=Image, String=String, QoSProfile=QoSProfile, Durability=DurabilityPolicy)

    def _collect(self, msg):
        with self.lock:
            self.results.append(msg)

    def ready(self) -> bool:
        return self.images.get_subscription_count() > 0 and self.commands.get_subscription_count() > 0

    def publish_image(self, seed=0):
        rgb = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        msg = self.types["Image"](height=24, width=32, encoding="rgb8", step=96)
        msg.data = array.array("B", rgb.tobytes())
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = "camera"
        for _ in range(3):  # the node's image input is best effort
            self.images.publish(msg)
            time.sleep(0.05)
        time.sleep(0.2)

    def send(self, *commands):
        for text in commands:
            self.commands.publish(self.types["String"](data=text))

    def wait_results(self, n, process, timeout=TIMEOUT):
        wait_until(lambda: self.count() >= n, process, timeout, f"answering {n} commands on {self.namespace}")
        with self.lock:
            return list(self.results)

    def count(self):
        with self.lock:
            return len(self.results)

    def close(self):
        self.node.destroy_publisher(self.images)
        self.node.destroy_publisher(self.commands)
        self.node.destroy_subscription(self.subscription)


class Client:
    def __init__(self, context):
        from rclpy.node import Node

        self.node = Node("lisa_robot_test_client", context=context)


@pytest.fixture(scope="module")
def client(ros_home):
    with ros_env.spinning_client(ros_home, Client) as test_client:
        yield test_client


def test_a_bare_node_stays_unconfigured_until_told(client, ros_home):
    namespace = "/lisa_bare"
    node = start_node(ros_home, namespace, "max_new_tokens:=2", "max_image_age:=0.0", activate=False)
    camera = Camera(client.node, namespace)
    try:
        with lifecycle_client(ros_home) as lifecycle:
            assert lifecycle.state(f"{namespace}/lisa", node) == "unconfigured"
            assert "configured (session" not in node.log() and not camera.ready()
            lifecycle.change(f"{namespace}/lisa", "configure", node)
            assert lifecycle.state(f"{namespace}/lisa", node) == "inactive"
            lifecycle.change(f"{namespace}/lisa", "activate", node)
        wait_until(camera.ready, node, TIMEOUT, "subscribed")
        camera.publish_image()
        camera.send("segment the cup")
        result = camera.wait_results(1, node)[0]
        assert result.status != result.STATUS_ERROR, result.error_message
        assert "ERROR" not in node.log(), node.log()  # one owner of the lifecycle: no failed transitions
    finally:
        camera.close()
        node.stop()


def test_a_model_that_does_not_load_leaves_the_node_unconfigured(client, ros_home):
    namespace = "/lisa_missing_model"
    node = start_node(ros_home, namespace, "model_path:=/nonexistent/LISA-7B-v1", activate=False)
    try:
        with lifecycle_client(ros_home) as lifecycle:
            assert not lifecycle.change(f"{namespace}/lisa", "configure", node, expect=False)
            assert lifecycle.state(f"{namespace}/lisa", node) == "unconfigured"
        assert "cannot load the model" in node.log() and "/nonexistent/LISA-7B-v1" in node.log()
        assert node.alive()
    finally:
        node.stop()


@pytest.mark.parametrize("run", range(3))
def test_ctrl_c_answers_queued_commands_and_exits_cleanly(client, ros_home, run):
    namespace = f"/lisa_sigint_{run}"
    camera = Camera(client.node, namespace)
    node = start_node(ros_home, namespace, "max_new_tokens:=48", "max_image_age:=0.0", "tracking:=false")
    try:
        wait_until(camera.ready, node, TIMEOUT, "subscribed")
        camera.publish_image()
        commands = [f"describe the scene {k}" for k in range(8)]
        camera.send(*commands)
        wait_until(lambda: camera.count() >= 1, node, TIMEOUT, "answering the first command")
        node.process.send_signal(signal.SIGINT)
        node.process.send_signal(signal.SIGINT)  # the terminal's Ctrl-C and launch's SIGINT: two of them
        assert node.process.wait(60) == 0, node.log()
        results = camera.wait_results(len(commands), node, timeout=10)
    finally:
        camera.close()
        node.stop()
    assert "Traceback" not in node.log(), node.log()
    assert sorted(r.command for r in results) == sorted(commands)  # exactly one result each
    stopped = [r for r in results if r.status == r.STATUS_ERROR]
    assert stopped and all("stopped before answering" in r.error_message for r in stopped)
    # Command ids restart with the process; the session id tells the runs apart.
    assert min(r.command_id for r in results) == 1 and len({r.session_id for r in results}) == 1
    sessions = getattr(client, "sessions", set())
    assert results[0].session_id and results[0].session_id not in sessions
    client.sessions = sessions | {results[0].session_id}


def test_deactivate_answers_every_command_that_reached_the_node(client, ros_home):
    namespace = "/lisa_deactivate"
    camera = Camera(client.node, namespace)
    node = start_node(ros_home, namespace, "max_new_tokens:=48", "max_image_age:=0.0", "tracking:=false")
    try:
        wait_until(camera.ready, node, TIMEOUT, "subscribed")
        camera.publish_image()
        commands = [f"describe the scene {k}" for k in range(10)]
        with lifecycle_client(ros_home) as lifecycle:
            camera.send(*commands)
            lifecycle.change(f"{namespace}/lisa", "deactivate", node)
            results = camera.wait_results(len(commands), node, timeout=10)
            assert sorted(r.command for r in results) == sorted(commands)  # exactly one result each
            refused = [r for r in results if r.status == r.STATUS_ERROR]
            assert all("deactivated before answering" in r.error_message for r in refused)
            lifecycle.change(f"{namespace}/lisa", "activate", node)  # and it answers again
        wait_until(camera.ready, node, TIMEOUT, "subscribed again")
        camera.publish_image()
        camera.send("segment the cup")
        assert camera.wait_results(len(commands) + 1, node)[-1].status != results[0].STATUS_ERROR
    finally:
        camera.close()
        node.stop()


def test_invalid_goals_are_rejected_and_unanswered_ones_abort(client, ros_home):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient

    from lisa_ros.action import Segment as SegmentAction
    from tests.ros.test_node import wait_future

    namespace = "/lisa_goals"
    node = start_node(ros_home, namespace, "max_new_tokens:=2", "max_command_length:=50")
    action = ActionClient(client.node, SegmentAction, f"{namespace}/segment")
    try:
        assert action.wait_for_server(timeout_sec=TIMEOUT)
        for command in ("", "   ", "x" * 51):
            handle = wait_future(action.send_goal_async(SegmentAction.Goal(command=command)), TIMEOUT, "send goal")
            assert not handle.accepted, repr(command)
        # Valid, but not answerable: no image yet. The goal is aborted, the result says why.
        handle = wait_future(action.send_goal_async(SegmentAction.Goal(command="segment the cup")), TIMEOUT, "send")
        assert handle.accepted
        response = wait_future(handle.get_result_async(), TIMEOUT, "goal result")
        assert response.status == GoalStatus.STATUS_ABORTED
        assert "no image" in response.result.result.error_message
    finally:
        action.destroy()
        node.stop()


def test_markers_are_latched_for_late_subscribers(client, ros_home):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    namespace = "/lisa_latched"
    camera = Camera(client.node, namespace)
    node = start_node(ros_home, namespace, "max_new_tokens:=4", "max_image_age:=0.0", "tracking:=false")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    got = {"markers": [], "target_cloud": []}
    subscriptions = []
    try:
        wait_until(camera.ready, node, TIMEOUT, "subscribed")
        camera.publish_image()
        camera.send("segment the cup")
        camera.wait_results(1, node)
        time.sleep(0.5)
        # Subscribers that join after the answer, asking for transient-local durability as RViz can.
        for name, cls in (("markers", MarkerArray), ("target_cloud", PointCloud2)):
            subscriptions.append(client.node.create_subscription(cls, f"{namespace}/{name}", got[name].append, latched))
        wait_until(lambda: got["markers"] and got["target_cloud"], node, TIMEOUT, "latching markers and the cloud")
        assert got["markers"][0].markers[0].action == got["markers"][0].markers[0].DELETEALL
        assert "incompatible" not in node.log().lower()
    finally:
        for subscription in subscriptions:
            client.node.destroy_subscription(subscription)
        camera.close()
        node.stop()


def test_cameras_by_hand_and_from_the_launch_file(client):
    from lisa_ros.node.process import node_arguments, parse_arguments
    from lisa_ros.runtime.launch_config import Camera as LaunchCamera
    from lisa_ros.runtime.launch_config import cameras_argument

    by_hand = parse_arguments(["lisa_node", "--cameras", "front,wrist", "--ros-args", "-r", "__ns:=/robot"]).cameras
    assert [node_arguments(camera) for camera in by_hand] == [
        ["--ros-args", "-r", "__ns:=/robot/front"],
        ["--ros-args", "-r", "__ns:=/robot/wrist"],
    ]
    front = LaunchCamera("front", "/lisa/front", (("image", "/front/color/image_raw"), ("depth", "/front/depth")))
    from_launch = parse_arguments(["lisa_node", "--cameras", cameras_argument([front]), "--ros-args"]).cameras
    assert from_launch == [front]
    assert node_arguments(front) == [
        "--ros-args", "-r", "__ns:=/lisa/front", "-r", "image:=/front/color/image_raw", "-r", "depth:=/front/depth"
    ]  # fmt: skip
    for bad in ("front,front", "", "[{}]"):
        with pytest.raises(SystemExit):
            parse_arguments(["lisa_node", "--cameras", bad])


def test_two_cameras_in_one_process_share_one_model(client, ros_home):
    """Started as the launch file starts them (--cameras with the JSON list): the front camera's
    images come from the camera driver's topic through that node's own remapping."""
    from lisa_ros.runtime.launch_config import Camera as LaunchCamera

    namespace = "/lisa_cameras"
    driver_topic = "/lisa_cameras_driver/front/color/image_raw"
    launch = [
        LaunchCamera("front", f"{namespace}/front", (("image", driver_topic),)),
        LaunchCamera("wrist", f"{namespace}/wrist"),
    ]
    cameras = {
        "front": Camera(client.node, f"{namespace}/front", image_topic=driver_topic),
        "wrist": Camera(client.node, f"{namespace}/wrist"),
    }
    node = start_node(ros_home, namespace, "max_new_tokens:=2", "max_image_age:=0.0", cameras=launch)
    try:
        for camera in cameras.values():
            wait_until(camera.ready, node, TIMEOUT, f"subscribed on {camera.namespace}")
        # The remapping is the front node's own: it reads the driver's topic, not its namespace's image.
        assert client.node.count_subscribers(f"{namespace}/front/image") == 0
        assert client.node.count_subscribers(f"{namespace}/wrist/image") == 1
        cameras["front"].publish_image(seed=1)
        for name, camera in cameras.items():
            camera.send(f"segment the cup on the {name} camera")
        front = cameras["front"].wait_results(1, node)[0]
        unseen = cameras["wrist"].wait_results(1, node)[0]
        cameras["wrist"].publish_image(seed=2)
        cameras["wrist"].send("segment the cup on the wrist camera")
        wrist = cameras["wrist"].wait_results(2, node)[1]
    finally:
        for camera in cameras.values():
            camera.close()
        rc = node.stop()
    assert front.status != front.STATUS_ERROR and front.command == "segment the cup on the front camera"
    # Each camera has its own frames: the wrist camera had seen no image, then answers on its own.
    assert unseen.status == unseen.STATUS_ERROR and "no image" in unseen.error_message
    assert wrist.status != wrist.STATUS_ERROR, wrist.error_message
    assert front.session_id != wrist.session_id
    log = node.log()
    assert log.count("loaded ") == 1, log  # one model load for both cameras
    assert f"{namespace}/front/lisa" in log and f"{namespace}/wrist/lisa" in log
    assert rc == 0 and "Traceback" not in log
