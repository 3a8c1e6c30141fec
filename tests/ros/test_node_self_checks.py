"""lisa_node's self-checks wired to what the node sees: a set-up mistake is one WARNING in the log
and an entry in the diagnostics (level WARN), never silent and never repeated; a correct set-up
reports nothing.

One lisa_node process (real rclpy, DDS on loopback) goes through a correct set-up, then depth
in the wrong unit, a camera_info of another aspect ratio and a subscriber asking for an
incompatible QoS. The clock, stamp and tf wiring are checked in this process on a SelfChecks
of a plain node (no tf2_ros here: the tf lookup gets a stand-in buffer).
"""

import array
import threading
import time

import numpy as np
import pytest

from tests.helpers import ros_env
from tests.helpers.ros_env import TIMEOUT, start_node, wait_until

NAMESPACE = "/lisa_self_checks"
WIDTH, HEIGHT = 32, 24
DEPTH_WARNING = "16UC1 depth has a median of"
SIZE_WARNING = "camera_info is for 64x36 images but the depth image is 32x24"
QOS_WARNING = f"a subscriber of {NAMESPACE}/result asks for an incompatible durability QoS"
QOS_CAUSE = f"self_check incompatible_qos {NAMESPACE}/result DURABILITY"

pytestmark = pytest.mark.timeout(300)

_MISSING = ros_env.missing()
if _MISSING:
    pytest.fail(_MISSING, pytrace=False)


class Client:
    """Publishes a camera's image, depth and camera_info to the node; collects its diagnostics."""

    def __init__(self, context):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        self.node = Node("lisa_self_checks_test_client", context=context)
        self.Image, self.CameraInfo = Image, CameraInfo
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, f"{NAMESPACE}/image", reliable)
        self.depth_pub = self.node.create_publisher(Image, f"{NAMESPACE}/depth", reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, f"{NAMESPACE}/camera_info", reliable)
        self.lock = threading.Lock()
        self.statuses = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, reliable)

    def _diagnostics(self, msg):
        with self.lock:
            self.statuses += [s for s in msg.status if s.name.startswith(f"{NAMESPACE}/lisa:")]

    def latest(self):
        """(level, {key: value}) of the node's newest diagnostics status, None before the first."""
        with self.lock:
            status = self.statuses[-1] if self.statuses else None
        return None if status is None else (status.level, {kv.key: kv.value for kv in status.values})

    def ready(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (self.image_pub, self.depth_pub, self.info_pub))

    def publish(self, depth_values: np.ndarray, info_size=(WIDTH, HEIGHT)) -> None:
        """One camera frame: an image, a 16UC1 depth image of `depth_values` and a camera_info."""
        stamp = self.node.get_clock().now().to_msg()
        rgb = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        image = self.Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
        image.data = array.array("B", rgb.tobytes())
        depth = self.Image(height=HEIGHT, width=WIDTH, encoding="16UC1", step=WIDTH * 2, is_bigendian=0)
        depth.data = array.array("B", depth_values.astype("<u2").tobytes())
        info = self.CameraInfo(width=info_size[0], height=info_size[1], distortion_model="plumb_bob")
        info.k = [40.0, 0.0, info_size[0] / 2, 0.0, 40.0, info_size[1] / 2, 0.0, 0.0, 1.0]
        for msg in (image, depth, info):
            msg.header.stamp, msg.header.frame_id = stamp, "camera"
        self.depth_pub.publish(depth)
        self.info_pub.publish(info)
        self.image_pub.publish(image)


@pytest.fixture(scope="module")
def client(ros_home):
    with ros_env.spinning_client(ros_home, Client) as test_client:
        yield test_client


def received(values: dict) -> dict:
    """The diagnostics' inputs_received ("image 3, depth 3, ...") as {input: count}."""
    return {name: int(count) for name, count in (part.rsplit(" ", 1) for part in values["inputs_received"].split(", "))}


def publishing_until(client, node, condition, what, depth_values, info_size=(WIDTH, HEIGHT)):
    """Publish camera frames (10 a second) until `condition()` holds."""

    def publish_and_check():
        client.publish(depth_values, info_size)
        return condition()

    wait_until(publish_and_check, node, TIMEOUT, what)


def test_set_up_mistakes_are_warned_once_and_kept_in_diagnostics(client, ros_home):
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from lisa_ros.msg import SegmentationResult
    from lisa_ros.node.self_checks import DEPTH_CHECK_PERIOD_S

    millimetres = np.full((HEIGHT, WIDTH), 1500)  # 1.5 m, as a depth camera's 16UC1 gives it
    metres = np.where(np.arange(WIDTH) < WIDTH // 2, 1, 2)[None, :].repeat(HEIGHT, 0)  # whole metres: wrong
    node = start_node(ros_home, NAMESPACE, "max_image_age:=0.0", "tracking:=false")
    subscription = None
    try:
        wait_until(client.ready, node, TIMEOUT, "subscribed")
        log = lambda: node.log_path.read_text(errors="replace")  # noqa: E731 (the whole log, not its tail)

        # A correct set-up: every input checked (the counts come after the checks), nothing found.
        def correct_inputs_seen():
            latest = client.latest()
            return latest is not None and min(received(latest[1])[k] for k in ("image", "depth", "camera_info")) >= 3

        publishing_until(client, node, correct_inputs_seen, "receiving the correct inputs", millimetres)
        level, values = client.latest()
        assert level == DiagnosticStatus.OK and not [key for key in values if key.startswith("self_check")], values
        warnings = [line for line in log().splitlines() if "[WARN]" in line]
        assert [line for line in warnings if "model_path is empty" not in line] == [], log()  # the demo model's

        # Depth in whole metres as 16UC1: one warning, also after further checked frames.
        publishing_until(client, node, lambda: DEPTH_WARNING in log(), "warning about the depth units", metres)
        deadline = time.monotonic() + 2.5 * DEPTH_CHECK_PERIOD_S
        publishing_until(client, node, lambda: time.monotonic() > deadline, "publishing more frames", metres)
        assert log().count(DEPTH_WARNING) == 1, log()
        assert "publish metres as 32FC1" in log()

        # A camera_info for 16:9 images with 4:3 depth images.
        sized = lambda: SIZE_WARNING in log()  # noqa: E731
        publishing_until(client, node, sized, "warning about camera_info", millimetres, info_size=(64, 36))

        # A subscriber of the (volatile) result asking for transient-local durability.
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        topic = f"{NAMESPACE}/result"
        subscription = client.node.create_subscription(SegmentationResult, topic, lambda msg: None, latched)
        wait_until(lambda: QOS_WARNING in log(), node, TIMEOUT, "warning about the result's QoS")

        # All three stay in the diagnostics, at level WARN.
        causes = ("self_check depth_units", "self_check camera_info_size", QOS_CAUSE)
        wait_until(lambda: all(c in client.latest()[1] for c in causes), node, TIMEOUT, "diagnosing the findings")
        level, values = client.latest()
        assert level == DiagnosticStatus.WARN and DEPTH_WARNING in values["self_check depth_units"]
        assert SIZE_WARNING in values["self_check camera_info_size"] and QOS_WARNING in values[QOS_CAUSE]
        text = log()
        assert [text.count(w) for w in (DEPTH_WARNING, SIZE_WARNING, QOS_WARNING)] == [1, 1, 1], text
        assert all("[WARN]" in line for line in text.splitlines() if SIZE_WARNING in line or QOS_WARNING in line)
    finally:
        if subscription is not None:
            client.node.destroy_subscription(subscription)
        rc = node.stop()
    assert rc == 0 and "Traceback" not in node.log(), node.log()


class StandInBuffer:
    """A tf2 buffer that knows base_link -> camera and odom -> base_link, but no map."""

    def lookup_transform(self, target, source, time, timeout):
        raise RuntimeError(f'"{target}" passed to lookupTransform argument target_frame does not exist')

    def all_frames_as_yaml(self):
        return "camera: {parent: 'base_link', broadcaster: 'a'}\nbase_link: {parent: 'odom', broadcaster: 'b'}\n"


def test_stamps_clock_jumps_and_unreachable_target_frames_are_reported(client):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.time import Time
    from sensor_msgs.msg import Image

    from lisa_ros.node.poses import checked_lookup
    from lisa_ros.node.self_checks import SelfChecks

    probe = Node("lisa_self_checks_probe", context=client.node.context)
    try:
        checks = SelfChecks(probe)
        now = probe.get_clock().now().nanoseconds
        recorded = Image()
        recorded.header.stamp = Time(nanoseconds=now - 3600 * 10**9).to_msg()
        checks.observe("image", recorded, now)
        assert "use_sim_time:=true" in checks.diagnostic_values()["self_check replay_without_sim_time"]

        # tf without the map: reported once tf had time to fill, and the lookup still fails.
        with pytest.raises(LookupError):
            checked_lookup(StandInBuffer(), "map", checks, settle_s=3600.0)("camera", now)
        assert not [key for key in checks.diagnostic_values() if "target_frame" in key]
        with pytest.raises(LookupError):
            checked_lookup(StandInBuffer(), "map", checks, settle_s=0.0)("camera", now)
        text = checks.diagnostic_values()["self_check target_frame map from camera"]
        assert "'map' is not in tf" in text and "base_link, camera, odom" in text

        # A bag looping with use_sim_time: the clock jumps back.
        probe.set_parameters([Parameter("use_sim_time", value=True)])
        clock = probe.get_clock()
        clock.set_ros_time_override(Time(seconds=100, clock_type=clock.clock_type))
        assert "self_check clock_jump" not in checks.diagnostic_values()  # forward: fine
        clock.set_ros_time_override(Time(seconds=10, clock_type=clock.clock_type))
        assert "jumped back 90.0 s: the bag restarted" in checks.diagnostic_values()["self_check clock_jump"]
    finally:
        probe.destroy_node()
