"""lisa_node end to end: the node in its own process with the tiny model, real rclpy, real DDS on loopback.

The node is started once for this module (tests run in file order and share it);
every ROS process here has ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and this test
session's own ROS_DOMAIN_ID (tests/helpers/ros_env.py). Needs the colcon build that
scripts/setup.sh makes.
"""

import array
import threading
import time

import numpy as np
import pytest

from tests.helpers import ros_env
from tests.helpers.ros_env import STARTUP_TIMEOUT, TIMEOUT, start_node, wait_until

NAMESPACE = "/lisa_test"
NODE = f"{NAMESPACE}/lisa"
IMAGE_SIZE = (48, 64)  # height, width

# A hung node or DDS must fail the test, not the whole run (the waits below time out sooner).
pytestmark = pytest.mark.timeout(240)

_MISSING = ros_env.missing()
if _MISSING:
    pytest.fail(_MISSING, pytrace=False)


@pytest.fixture(scope="module")
def client(ros_home):
    """A test node in this process, spinning on its own thread."""
    with ros_env.spinning_client(ros_home, Client) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def lisa(client, ros_home):
    """lisa_node in its own process: tiny model, 4 new tokens, images up to 30 s old."""
    node = start_node(ros_home, NAMESPACE, "max_new_tokens:=4", "max_image_age:=30.0", "max_command_length:=200")
    try:
        wait_until(client.ready, node, STARTUP_TIMEOUT, "ready")
        yield node
    finally:
        node.stop()


class Client:
    """Publishers, subscribers and clients of the test process; collects what the node sends."""

    def __init__(self, context):
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters
        from rclpy.action import ActionClient
        from rclpy.callback_groups import ReentrantCallbackGroup
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from lisa_ros.action import Segment as SegmentAction
        from lisa_ros.msg import SegmentationResult
        from lisa_ros.srv import Segment

        self.node = node = Node("lisa_test_client", context=context)
        group = ReentrantCallbackGroup()
        self.lock = threading.Lock()
        self.results, self.explanations, self.masks, self.overlays, self.diagnostics = [], [], [], [], []
        reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)

        def collect(bucket):
            def callback(msg):
                with self.lock:
                    bucket.append(msg)

            return callback

        node.create_subscription(
            SegmentationResult, f"{NAMESPACE}/result", collect(self.results), reliable, callback_group=group
        )
        node.create_subscription(
            String, f"{NAMESPACE}/explanation", collect(self.explanations), reliable, callback_group=group
        )
        node.create_subscription(Image, f"{NAMESPACE}/mask", collect(self.masks), reliable, callback_group=group)
        node.create_subscription(Image, f"{NAMESPACE}/overlay", collect(self.overlays), reliable, callback_group=group)
        node.create_subscription(
            DiagnosticArray, "/diagnostics", collect(self.diagnostics), reliable, callback_group=group
        )
        self.image_pub = node.create_publisher(Image, f"{NAMESPACE}/image", reliable)
        self.command_pub = node.create_publisher(String, f"{NAMESPACE}/command", reliable)
        self.segment = node.create_client(Segment, f"{NAMESPACE}/segment", callback_group=group)
        self.reset = node.create_client(Trigger, f"{NAMESPACE}/reset_conversation", callback_group=group)
        self.change_state = node.create_client(ChangeState, f"{NODE}/change_state", callback_group=group)
        self.get_state = node.create_client(GetState, f"{NODE}/get_state", callback_group=group)
        self.set_parameters = node.create_client(SetParameters, f"{NODE}/set_parameters", callback_group=group)
        self.action = ActionClient(node, SegmentAction, f"{NAMESPACE}/segment", callback_group=group)
        self.types = dict(
            Image=Image, String=String, Segment=Segment, SegmentAction=SegmentAction, Result=SegmentationResult
        )

    def ready(self) -> bool:
        return (
            self.segment.service_is_ready()
            and self.action.server_is_ready()
            and self.image_pub.get_subscription_count() > 0
            and self.command_pub.get_subscription_count() > 0
        )

    # --- inputs ---
    def now(self):
        return self.node.get_clock().now()

    def image_msg(self, height=IMAGE_SIZE[0], width=IMAGE_SIZE[1], encoding="rgb8", stamp=None, seed=0, **fields):
        rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
        msg = self.types["Image"](height=height, width=width, encoding=encoding, step=width * 3)
        msg.data = array.array("B", rgb.tobytes())
        msg.header.stamp = (stamp or self.now()).to_msg()
        msg.header.frame_id = "camera"
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    def publish_image(self, msg=None):
        """Publish an image as a camera would, a few times (the node's input is best effort)."""
        msg = msg or self.image_msg()
        for _ in range(3):
            self.image_pub.publish(msg)
            time.sleep(0.05)
        time.sleep(0.1)
        return msg

    def command(self, text: str):
        """Publish a command and wait for its one result (matched by command text and order)."""
        start = self.count()
        self.command_pub.publish(self.types["String"](data=text))
        return self.wait_results(start, 1)[0]

    # --- outputs ---
    def count(self, bucket=None) -> int:
        with self.lock:
            return len(self.results if bucket is None else bucket)

    def wait_results(self, start: int, n: int, timeout: float = TIMEOUT, bucket=None):
        bucket = self.results if bucket is None else bucket
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(bucket) >= start + n:
                    return list(bucket[start : start + n])
            time.sleep(0.02)
        with self.lock:
            got = list(bucket[start:])
        raise AssertionError(
            f"expected {n} messages within {timeout} s, got {len(got)}: {[getattr(r, 'command', r) for r in got]}"
        )

    def call(self, client, request, timeout: float = TIMEOUT):
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        return wait_future(future, timeout, f"call to {client.srv_name}")


def wait_future(future, timeout: float, what: str):
    done = threading.Event()
    future.add_done_callback(lambda f: done.set())
    if not done.wait(timeout):
        raise AssertionError(f"{what}: no answer within {timeout} s")
    return future.result()


def assert_well_formed(result, command: str, image_msg=None):
    """Structure every result has; the image's stamp and size when one was answered."""
    assert result.command == command
    assert result.command_id > 0
    assert result.command_stamp.sec > 0
    assert len(result.masks) == len(result.scores) == len(result.boxes)
    assert len(result.timing_stages) == len(result.timing_seconds)
    assert result.centroids == [] and result.point_counts.tolist() == [] and result.region_status
    if image_msg is not None:
        assert result.header.stamp == image_msg.header.stamp
        assert result.header.frame_id == image_msg.header.frame_id
        for mask in result.masks:
            assert (mask.height, mask.width, mask.encoding) == (image_msg.height, image_msg.width, "mono8")


def assert_answered(result, command: str, image_msg=None):
    assert result.status in (result.STATUS_OK, result.STATUS_NO_TARGET), result.error_message
    assert result.error_message == ""
    assert result.answer.strip()
    assert result.status == (result.STATUS_OK if len(result.masks) else result.STATUS_NO_TARGET)
    assert "total" in result.timing_stages
    assert_well_formed(result, command, image_msg)


def assert_error(result, command: str, *fragments: str):
    assert result.status == result.STATUS_ERROR, f"expected an error result, got status {result.status}"
    for fragment in fragments:
        assert fragment in result.error_message, f"{fragment!r} not in {result.error_message!r}"
    assert_well_formed(result, command)


# --- tests, in order: the first one runs before any image is published ---------------


def test_command_before_any_image(lisa, client):
    result = client.command("segment the cup")
    assert_error(result, "segment the cup", "no image")
    assert result.header.stamp.sec == 0 and len(result.masks) == 0


def test_topic_command_gets_one_result(lisa, client):
    image = client.publish_image()
    explanations, masks, overlays = (
        client.count(client.explanations),
        client.count(client.masks),
        client.count(client.overlays),
    )
    start = client.count()
    result = client.command("something to cut paper with")
    assert_answered(result, "something to cut paper with", image)
    assert [e.data for e in client.wait_results(explanations, 1, bucket=client.explanations)] == [result.answer]
    union = client.wait_results(masks, 1, bucket=client.masks)[0]
    assert (union.height, union.width, union.encoding) == (*IMAGE_SIZE, "mono8")
    assert union.header.stamp == image.header.stamp
    overlay = client.wait_results(overlays, 1, bucket=client.overlays)[0]
    assert (overlay.height, overlay.width, overlay.encoding) == (*IMAGE_SIZE, "rgb8")
    time.sleep(0.5)
    assert client.count() == start + 1, "one command, one result"


def test_service_with_an_image(lisa, client):
    Segment = client.types["Segment"]
    image = client.image_msg(height=30, width=40, seed=3)
    masks = client.count(client.masks)
    response = client.call(client.segment, Segment.Request(command="the red one", has_image=True, image=image))
    assert_answered(response.result, "the red one", image)
    union = client.wait_results(masks, 1, bucket=client.masks)[0]
    assert (union.height, union.width) == (30, 40)


def test_service_on_the_newest_image(lisa, client):
    Segment = client.types["Segment"]
    image = client.publish_image(client.image_msg(seed=4))
    response = client.call(client.segment, Segment.Request(command="and the blue one?"))
    assert_answered(response.result, "and the blue one?", image)


def test_action_with_feedback(lisa, client):
    from action_msgs.msg import GoalStatus

    SegmentAction = client.types["SegmentAction"]
    image = client.image_msg(height=20, width=24, seed=5)
    feedback = []
    goal = SegmentAction.Goal(command="what can I sit on?", has_image=True, image=image, reset_conversation=True)
    handle = wait_future(
        client.action.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)),
        TIMEOUT,
        "send goal",
    )
    assert handle.accepted
    response = wait_future(handle.get_result_async(), TIMEOUT, "goal result")
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    assert_answered(response.result.result, "what can I sit on?", image)
    time.sleep(0.2)  # feedback and result travel separately
    stages = [f.stage for f in feedback]
    assert stages[0] == "queued" and stages[-1] == "done" and "generating" in stages, stages
    assert feedback[-1].partial_answer == response.result.result.answer


def set_parameter(client, name, **value):
    from rcl_interfaces.msg import Parameter, ParameterValue
    from rcl_interfaces.srv import SetParameters

    request = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(**value))])
    return client.call(client.set_parameters, request).results[0]


def set_max_new_tokens(client, value):
    from rcl_interfaces.msg import ParameterType

    assert set_parameter(client, "max_new_tokens", type=ParameterType.PARAMETER_INTEGER, integer_value=value).successful


def reset_conversation(client):
    from std_srvs.srv import Trigger

    assert client.call(client.reset, Trigger.Request()).success


def test_action_cancel_of_a_queued_goal(lisa, client):
    from action_msgs.msg import GoalStatus

    SegmentAction = client.types["SegmentAction"]
    client.publish_image()
    start = client.count()
    set_max_new_tokens(client, 64)  # slower answers: the goal surely waits behind the commands
    try:
        for k in range(20):
            client.command_pub.publish(client.types["String"](data=f"busy {k}"))
        time.sleep(0.05)
        handle = wait_future(
            client.action.send_goal_async(SegmentAction.Goal(command="never mind")), TIMEOUT, "send goal"
        )
        assert handle.accepted
        cancel = wait_future(handle.cancel_goal_async(), TIMEOUT, "cancel goal")
        assert len(cancel.goals_canceling) == 1
        response = wait_future(handle.get_result_async(), TIMEOUT, "goal result")
        assert response.status == GoalStatus.STATUS_CANCELED
        assert_error(response.result.result, "never mind", "canceled")
        results = client.wait_results(start, 21)  # the 20 commands and the canceled goal: one result each
    finally:
        set_max_new_tokens(client, 4)
        reset_conversation(client)  # drop the long answers: later prompts stay short
    busy = [r for r in results if r.command.startswith("busy")]
    assert [r.command for r in busy] == [f"busy {k}" for k in range(20)]
    assert all(r.status != r.STATUS_ERROR for r in busy)
    assert [r.command for r in results if r.command == "never mind"] == ["never mind"]
    # The canceled goal was dropped from the queue: answered before the commands ahead of it.
    assert [r.command for r in results].index("never mind") < 20


def test_action_cancel_of_a_running_goal(lisa, client):
    from action_msgs.msg import GoalStatus

    SegmentAction = client.types["SegmentAction"]
    client.publish_image()
    set_max_new_tokens(client, 256)  # a long answer: the cancel arrives while it runs
    try:
        goal = SegmentAction.Goal(command="describe everything", reset_conversation=True)
        handle = wait_future(client.action.send_goal_async(goal), TIMEOUT, "send goal")
        cancel = wait_future(handle.cancel_goal_async(), TIMEOUT, "cancel goal")
        assert len(cancel.goals_canceling) == 1
        response = wait_future(handle.get_result_async(), TIMEOUT, "goal result")
    finally:
        set_max_new_tokens(client, 4)
        reset_conversation(client)  # drop the long answers: later prompts stay short
    assert response.status == GoalStatus.STATUS_CANCELED
    assert response.result.result.command == "describe everything"


def test_burst_of_50_commands(lisa, client):
    client.publish_image()
    start = client.count()
    for k in range(50):
        client.command_pub.publish(client.types["String"](data=f"burst {k}"))
    results = client.wait_results(start, 50)
    assert [r.command for r in results] == [f"burst {k}" for k in range(50)]
    ids = [r.command_id for r in results]
    assert ids == list(range(ids[0], ids[0] + 50))
    assert all(r.status != r.STATUS_ERROR for r in results), [r.error_message for r in results if r.error_message]


BAD_IMAGES = {
    "unsupported encoding": (dict(encoding="8UC3"), "unsupported image encoding"),
    "short data": (dict(data=array.array("B", bytes(100))), "expected height"),
    "zero size": (dict(height=0, width=0, step=0, data=array.array("B")), "empty image"),
    "step shorter than a row": (dict(step=10), "step 10"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_on_the_topic(lisa, client, case):
    fields, message = BAD_IMAGES[case]
    client.publish_image(client.image_msg(**fields))
    assert_error(client.command("segment the cup"), "segment the cup", "invalid image", message)
    good = client.publish_image()
    assert_answered(client.command("segment the cup"), "segment the cup", good)
    assert lisa.alive()


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_in_a_service_call(lisa, client, case):
    Segment = client.types["Segment"]
    fields, message = BAD_IMAGES[case]
    request = Segment.Request(command="segment the cup", has_image=True, image=client.image_msg(**fields))
    assert_error(client.call(client.segment, request).result, "segment the cup", "invalid image", message)
    ok = client.call(
        client.segment, Segment.Request(command="segment the cup", has_image=True, image=client.image_msg())
    )
    assert_answered(ok.result, "segment the cup")


@pytest.mark.parametrize(
    "command, message",
    [("", "empty"), ("   \t\n", "empty"), ("x" * 201, "201 characters; at most 200")],
    ids=["empty", "whitespace", "too long"],
)
def test_bad_commands(lisa, client, command, message):
    client.publish_image()
    assert_error(client.command(command), command, message)
    assert_answered(client.command("segment the cup"), "segment the cup")


def test_old_image(lisa, client):
    from rclpy.duration import Duration

    client.publish_image(client.image_msg(stamp=client.now() - Duration(seconds=100)))
    assert_error(client.command("segment the cup"), "segment the cup", "no recent image", "max_image_age")
    client.publish_image()
    assert_answered(client.command("segment the cup"), "segment the cup")


def test_reset_conversation(lisa, client):
    from std_srvs.srv import Trigger

    response = client.call(client.reset, Trigger.Request())
    assert response.success, response.message
    client.publish_image()
    assert_answered(client.command("segment the cup"), "segment the cup")


def test_live_parameter_and_validation(lisa, client):
    from rcl_interfaces.msg import ParameterType

    integer, string = ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_STRING
    assert set_parameter(client, "max_command_length", type=integer, integer_value=5).successful
    client.publish_image()
    assert_error(client.command("segment the cup"), "segment the cup", "at most 5")
    assert set_parameter(client, "max_command_length", type=integer, integer_value=200).successful
    assert not set_parameter(client, "max_new_tokens", type=integer, integer_value=0).successful  # out of range
    assert not set_parameter(client, "device", type=string, string_value="gpu").successful  # read-only
    assert not set_parameter(client, "target_frame", type=integer, integer_value=3).successful  # wrong type
    boolean = ParameterType.PARAMETER_BOOL
    assert set_parameter(client, "use_sim_time", type=boolean, bool_value=False).successful  # not ours: accepted
    assert_answered(client.command("segment the cup"), "segment the cup")


def test_diagnostics(lisa, client):
    start = client.count(client.diagnostics)
    arrays = client.wait_results(start, 2, timeout=5, bucket=client.diagnostics)
    statuses = [s for a in arrays for s in a.status if s.name.startswith(NODE)]
    assert statuses, [s.name for a in arrays for s in a.status]
    values = {kv.key: kv.value for kv in statuses[-1].values}
    assert values["model"] == "built-in demo model" and int(values["commands_answered"]) > 0


def test_lifecycle_transitions(lisa, client):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    def transition(transition_id):
        request = ChangeState.Request(transition=Transition(id=transition_id))
        assert client.call(
            client.change_state, request, timeout=60
        ).success, f"transition {transition_id} failed:\n{lisa.log()}"

    def state():
        return client.call(client.get_state, GetState.Request()).current_state.label

    assert state() == "active"
    transition(Transition.TRANSITION_DEACTIVATE)
    assert state() == "inactive"
    deadline = time.monotonic() + 10
    while client.segment.service_is_ready():  # the service goes with deactivate
        assert time.monotonic() < deadline, "segment still offered after deactivate"
        time.sleep(0.1)
    transition(Transition.TRANSITION_CLEANUP)  # frees the model
    assert state() == "unconfigured"
    transition(Transition.TRANSITION_CONFIGURE)  # loads it again
    transition(Transition.TRANSITION_ACTIVATE)
    assert state() == "active"
    deadline = time.monotonic() + TIMEOUT
    while not client.ready():
        assert time.monotonic() < deadline, "the node's inputs did not come back after activate"
        time.sleep(0.1)
    image = client.publish_image()
    assert_answered(client.command("segment the cup"), "segment the cup", image)
    assert lisa.alive()


# --- conversions (ROS message types, no node needed) -------------------------------------


def test_result_message_conversion(client):
    from lisa_ros.node import messages
    from lisa_ros.runtime.message_fields import stamp_ns
    from lisa_ros.runtime.types import Result, Status, mask_boxes

    masks = np.zeros((2, 6, 8), bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 5, 7] = True
    rgb = np.full((6, 8, 3), 100, np.uint8)
    stamp = 1_700_000_000_123_456_789
    result = Result(
        command_id=9,
        command="both",
        stamp=stamp + 5,
        frame_stamp=stamp,
        frame_id="camera",
        status=Status.OK,
        answer="[SEG] and [SEG].",
        masks=masks,
        scores=np.array([0.25, 0.75], np.float32),
        boxes=mask_boxes(masks),
        timings={"clip": 0.5, "total": 1.25},
        image=rgb,
    )
    msg = messages.result_to_msg(result)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        1_700_000_000,
        123_456_789,
        "camera",
    )
    assert stamp_ns(msg.command_stamp) == stamp + 5
    assert (msg.command_id, msg.command, msg.answer, msg.status) == (9, "both", "[SEG] and [SEG].", msg.STATUS_OK)
    assert msg.scores.tolist() == [0.25, 0.75]
    assert [(b.x_min, b.y_min, b.x_max, b.y_max) for b in msg.boxes] == [(2, 1, 4, 2), (7, 5, 7, 5)]
    assert list(msg.timing_stages) == ["clip", "total"] and msg.timing_seconds.tolist() == [0.5, 1.25]
    for image, mask in zip(msg.masks, masks):
        assert (image.height, image.width, image.encoding, image.step) == (6, 8, "mono8", 8)
        pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(6, 8)
        assert np.array_equal(pixels == 255, mask) and set(np.unique(pixels)) <= {0, 255}
        assert image.header == msg.header
    union = messages.union_mask_msg(result)
    assert np.array_equal(np.frombuffer(bytes(union.data), np.uint8).reshape(6, 8) == 255, masks.any(0))
    overlay = messages.overlay_msg(result)
    assert (overlay.height, overlay.width, overlay.encoding) == (6, 8, "rgb8")
    assert not np.array_equal(np.frombuffer(bytes(overlay.data), np.uint8).reshape(6, 8, 3), rgb)
    assert (
        messages.union_mask_msg(Result(1, "x", stamp)) is None and messages.overlay_msg(Result(1, "x", stamp)) is None
    )


def test_frames_from_image_messages(client):
    from lisa_ros.runtime.message_fields import frame_from_msg, stamp_ns

    msg = client.image_msg(height=4, width=5, encoding="bgr8")
    frame = frame_from_msg(msg, False, fallback_stamp=7)
    assert frame.stamp == stamp_ns(msg.header.stamp) and frame.frame_id == "camera"
    bgr = np.frombuffer(bytes(msg.data), np.uint8).reshape(4, 5, 3)
    assert np.array_equal(frame.image(), bgr[:, :, ::-1])
    msg.header.stamp.sec, msg.header.stamp.nanosec = 0, 0
    assert frame_from_msg(msg, False, fallback_stamp=7).stamp == 7  # unset stamp: received now


# --- other configurations: each its own node process -----------------------------------


class Streamer:
    """Publishes the current message at 20 Hz on its own thread, as a camera does."""

    def __init__(self, publisher):
        self.publisher, self.msg = publisher, None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.wait(0.05):
            if self.msg is not None:
                self.publisher.publish(self.msg)

    def stop(self):
        self.stopped.set()
        self.thread.join(5)


def test_compressed_images(client, ros_home):
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    from lisa_ros.msg import SegmentationResult
    from lisa_ros.runtime.codec import encode_compressed

    namespace = "/lisa_test_compressed"
    node = start_node(ros_home, namespace, "use_compressed_image:=true", "max_new_tokens:=2", "max_image_age:=30.0")
    # image_transport's naming: compressed images on <image>/compressed
    images = client.node.create_publisher(CompressedImage, f"{namespace}/image/compressed", 10)
    commands = client.node.create_publisher(String, f"{namespace}/command", 10)
    results = []
    subscription = client.node.create_subscription(
        SegmentationResult, f"{namespace}/result", results.append, QoSProfile(depth=10)
    )
    camera = Streamer(images)
    try:
        wait_until(
            lambda: images.get_subscription_count() and commands.get_subscription_count(),
            node,
            STARTUP_TIMEOUT,
            "subscribed",
        )
        rgb = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
        fmt, data = encode_compressed(rgb, "png")
        msg = CompressedImage(format=fmt, data=array.array("B", data))
        msg.header.stamp, msg.header.frame_id = client.now().to_msg(), "camera"
        camera.msg = msg
        time.sleep(1.0)
        commands.publish(String(data="segment the cup"))
        wait_until(lambda: results, node, TIMEOUT, "answering")
        assert_answered(results[0], "segment the cup")
        assert results[0].header.stamp == msg.header.stamp
        garbage = CompressedImage(format="jpeg", data=array.array("B", b"not a jpeg"))
        garbage.header.stamp = client.now().to_msg()
        camera.msg = garbage
        time.sleep(0.5)
        commands.publish(String(data="segment the cup"))
        wait_until(lambda: len(results) > 1, node, TIMEOUT, "answering")
        assert_error(results[1], "segment the cup", "invalid image", "cannot decode")
    finally:
        camera.stop()
        node.stop()
        client.node.destroy_subscription(subscription)
        client.node.destroy_publisher(images)
        client.node.destroy_publisher(commands)
