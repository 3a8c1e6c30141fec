"""lisa_node's early results (issue 17): each [SEG]'s mask on `early_result` before the final
result on `result`, equal to its masks; the action's feedback carries the early result and
the text as it is generated; the diagnostics report time to first mask beside time to answer.

One node (the built-in demo model, which answers its scenes with "[SEG] <why>"), real rclpy
and DDS on loopback (tests/helpers/ros_env.py). Needs the colcon build that scripts/setup.sh makes.
"""

import array
import threading
import time

import numpy as np
import pytest

from tests.helpers import ros_env
from tests.helpers.ros_env import STARTUP_TIMEOUT, TIMEOUT, start_node, wait_until

NAMESPACE = "/lisa_early_test"

pytestmark = pytest.mark.timeout(240)

_MISSING = ros_env.missing()
if _MISSING:
    pytest.fail(_MISSING, pytrace=False)


@pytest.fixture(scope="module")
def scene():
    """A demo scene's frame and two commands the demo model answers with a [SEG]."""
    from training.data.demo_scenes import DemoScenesDataset

    dataset = DemoScenesDataset("test", num_scenes=1, frames_per_scene=1, phrasing="heldout", seed=0)
    return dataset.frame(0).rgb, [command.text for command in dataset.visible_commands(0)[:2]]


@pytest.fixture(scope="module")
def client(ros_home):
    with ros_env.spinning_client(ros_home, Client) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def lisa(client, ros_home):
    node = start_node(ros_home, NAMESPACE, "max_new_tokens:=48", "max_image_age:=0.0", "tracking:=false")
    try:
        wait_until(client.ready, node, STARTUP_TIMEOUT, "ready")
        yield node
    finally:
        node.stop()


class Client:
    """Collects result and early_result messages in the order they arrive, and diagnostics."""

    def __init__(self, context):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.action import ActionClient
        from rclpy.callback_groups import ReentrantCallbackGroup
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from lisa_ros.action import Segment as SegmentAction
        from lisa_ros.msg import SegmentationResult

        self.node = node = Node("lisa_early_test_client", context=context)
        group = ReentrantCallbackGroup()
        self.lock = threading.Lock()
        self.arrivals, self.diagnostics = [], []  # arrivals: (topic, SegmentationResult)
        reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)

        def collect(topic):
            def callback(msg):
                with self.lock:
                    self.arrivals.append((topic, msg))

            return callback

        for topic in ("result", "early_result"):
            node.create_subscription(
                SegmentationResult, f"{NAMESPACE}/{topic}", collect(topic), reliable, callback_group=group
            )

        def diagnostics(msg):
            with self.lock:
                self.diagnostics.append(msg)

        node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, reliable, callback_group=group)
        self.image_pub = node.create_publisher(Image, f"{NAMESPACE}/image", reliable)
        self.command_pub = node.create_publisher(String, f"{NAMESPACE}/command", reliable)
        self.action = ActionClient(node, SegmentAction, f"{NAMESPACE}/segment", callback_group=group)
        self.types = dict(Image=Image, String=String, SegmentAction=SegmentAction)

    def ready(self) -> bool:
        return (
            self.action.server_is_ready()
            and self.image_pub.get_subscription_count() > 0
            and self.command_pub.get_subscription_count() > 0
        )

    def image_msg(self, rgb):
        height, width = rgb.shape[:2]
        msg = self.types["Image"](height=height, width=width, encoding="rgb8", step=width * 3)
        msg.data = array.array("B", rgb.tobytes())
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = "camera"
        return msg

    def messages_of(self, command_id: int, timeout: float = TIMEOUT):
        """[(topic, msg)] of one command, in arrival order, once its final result came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                mine = [(topic, msg) for topic, msg in self.arrivals if msg.command_id == command_id]
            if any(topic == "result" for topic, _ in mine):
                time.sleep(0.3)  # anything still on its way after the result would be out of order
                with self.lock:
                    return [(topic, msg) for topic, msg in self.arrivals if msg.command_id == command_id]
            time.sleep(0.02)
        raise AssertionError(f"no result of command {command_id} within {timeout} s")

    def last_result_id(self) -> int:
        with self.lock:
            return max((msg.command_id for topic, msg in self.arrivals if topic == "result"), default=0)


def wait_future(future, timeout: float, what: str):
    done = threading.Event()
    future.add_done_callback(lambda f: done.set())
    if not done.wait(timeout):
        raise AssertionError(f"{what}: no answer within {timeout} s")
    return future.result()


def mask_arrays(msg) -> list[np.ndarray]:
    return [np.frombuffer(bytes(mask.data), np.uint8).reshape(mask.height, mask.width) for mask in msg.masks]


def assert_early_matches(early, final):
    """An early result holds the final result's first masks, the answer so far, no regions."""
    assert early.early and not final.early
    assert early.status == early.STATUS_OK and early.session_id == final.session_id
    assert early.header == final.header and early.command == final.command
    assert final.answer.startswith(early.answer) and early.answer.endswith("[SEG]")
    count = len(early.masks)
    assert 1 <= count <= len(final.masks)
    for got, expected in zip(mask_arrays(early), mask_arrays(final)[:count]):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(early.scores, final.scores[:count])
    assert len(early.centroids) == 0 and "early" in early.region_status
    assert "first_mask" in early.timing_stages


def test_early_results_come_before_the_result_with_its_masks(lisa, client, scene):
    rgb, commands = scene
    image = client.image_msg(rgb)
    for _ in range(3):  # the image input is best effort
        client.image_pub.publish(image)
        time.sleep(0.05)
    time.sleep(0.3)
    command_id = client.last_result_id() + 1
    client.command_pub.publish(client.types["String"](data=commands[0]))
    arrivals = client.messages_of(command_id)
    topics = [topic for topic, _ in arrivals]
    assert topics.count("result") == 1 and topics[-1] == "result", topics  # answered once, last
    final = arrivals[-1][1]
    assert final.status == final.STATUS_OK and final.header.stamp == image.header.stamp, final.error_message
    early = [msg for topic, msg in arrivals if topic == "early_result"]
    assert [len(msg.masks) for msg in early] == list(range(1, len(final.masks) + 1))
    for msg in early:
        assert_early_matches(msg, final)
    stages = list(final.timing_stages)
    first_mask = final.timing_seconds[stages.index("first_mask")]
    assert 0 < first_mask < final.timing_seconds[stages.index("total")]
    assert early[0].timing_seconds[list(early[0].timing_stages).index("first_mask")] == pytest.approx(first_mask)


def test_action_feedback_carries_the_early_result_and_the_streamed_text(lisa, client, scene):
    from action_msgs.msg import GoalStatus

    rgb, commands = scene
    SegmentAction = client.types["SegmentAction"]
    feedback = []
    goal = SegmentAction.Goal(command=commands[1], has_image=True, image=client.image_msg(rgb), reset_conversation=True)
    handle = wait_future(
        client.action.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)),
        TIMEOUT,
        "send goal",
    )
    assert handle.accepted
    response = wait_future(handle.get_result_async(), TIMEOUT, "goal result")
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    final = response.result.result
    assert final.status == final.STATUS_OK and len(final.masks) >= 1, final.error_message
    time.sleep(0.3)  # feedback and result travel separately
    stages = [f.stage for f in feedback]
    assert stages[0] == "queued" and stages[-1] == "done" and "mask" in stages, stages
    assert stages.index("mask") < stages.index("done")
    masks = [f for f in feedback if f.stage == "mask"]
    assert len(masks) == len(final.masks)
    for f in masks:
        assert f.partial_answer == f.early_result.answer
        assert_early_matches(f.early_result, final)
    # The text streamed as it was generated: growing prefixes of the answer, some after the first mask.
    streamed = [f.partial_answer for f in feedback if f.stage == "generating" and f.partial_answer]
    assert len(streamed) > 3 and streamed[-1] == final.answer
    assert all(later.startswith(earlier) for earlier, later in zip(streamed, streamed[1:]))
    assert any(f.stage == "generating" and f.partial_answer for f in feedback[stages.index("mask") :])
    assert all(not f.early_result.masks for f in feedback if f.stage != "mask")
    assert feedback[-1].partial_answer == final.answer


def test_diagnostics_report_time_to_first_mask_and_to_answer(lisa, client):
    def values():
        with client.lock:
            arrays = list(client.diagnostics)
        for array_msg in reversed(arrays):
            for status in array_msg.status:
                if status.name.startswith(f"{NAMESPACE}/lisa"):
                    found = {item.key: item.value for item in status.values}
                    if found.get("median_first_mask_seconds", "none yet") != "none yet":
                        return found
        return None

    wait_until(lambda: values() is not None, lisa, TIMEOUT, "diagnostics with a time to first mask")
    found = values()
    assert float(found["last_first_mask_seconds"]) > 0 and float(found["median_total_seconds"]) > 0
    assert float(found["median_first_mask_seconds"]) <= float(found["median_total_seconds"])
    assert float(found["warm_up_seconds"]) > 0 and int(found["images_pre_encoded"]) >= 1
