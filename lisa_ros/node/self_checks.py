"""lisa_node's self-checks in ROS terms: what the node sees, handed to lisa_ros.runtime.self_checks.

Each set-up mistake is logged once, as a warning, and stays in the node's diagnostics (the
values "self_check <cause>", level WARN) until the node ends:

- depth in the wrong unit: the first depth image and then one a second (DEPTH_CHECK_PERIOD_S;
  a median on every frame would cost the subscription thread for nothing: units do not
  change while a camera runs);
- camera_info for another image than the depth image: each camera_info and depth image
  (an integer comparison) against the newest of the other;
- images stamped long before the node's clock, or stamps jumping back: every image;
- the node's clock jumping back (a looping bag with use_sim_time): rclpy's jump callback;
- a subscriber of an output asking for an incompatible QoS: each output publisher's event;
- target_frame unreachable: when a tf lookup fails (lisa_ros.node.poses).
"""

from __future__ import annotations

import threading
import time

from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.qos import QoSPolicyKind, ReliabilityPolicy

try:
    from rclpy.event_handler import PublisherEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks

from ..runtime import codec
from ..runtime.message_fields import stamp_ns
from ..runtime.self_checks import (
    JUMP_TOLERANCE_S,
    OncePerCause,
    StampWatch,
    camera_info_size,
    clock_jump,
    depth_units,
    incompatible_qos,
    parse_tf_frames,
    target_frame_reach,
)

DEPTH_CHECK_PERIOD_S = 1.0
INPUTS = ("image", "depth", "camera_info", "camera_pose")


class SelfChecks:
    """The self-checks of one LisaNode.

    `observe` every input message (from any subscription thread); `publisher_events` for each
    output publisher; `tf_lookup_failed` when tf cannot give a camera pose; `diagnostic_values`
    for the diagnostics. Created with the node: its clock's jump callback lives as long.
    """

    def __init__(self, node):
        self._node = node
        self.reporter = OncePerCause(node.get_logger().warning)
        self._lock = threading.Lock()
        self._stamps = StampWatch()
        self._depth_size: tuple[int, int] | None = None  # (width, height) of the newest depth image
        self._info_size: tuple[int, int] | None = None  # (width, height) of the newest camera_info
        self._next_depth_check = 0.0  # time.monotonic() of the next depth unit check
        self._received = dict.fromkeys(INPUTS, 0)
        threshold = JumpThreshold(
            min_forward=None, min_backward=Duration(seconds=-JUMP_TOLERANCE_S), on_clock_change=False
        )  # a clock change (use_sim_time's /clock taking over) is no jump: only jumps within one clock count
        self._jump_handle = node.get_clock().create_jump_callback(threshold, post_callback=self._clock_jumped)

    def _use_sim_time(self) -> bool:
        return bool(self._node.get_parameter("use_sim_time").value)

    # --- inputs ------------------------------------------------------------------------
    def observe(self, role: str, msg, now_ns: int) -> None:
        """Check one input message of `role` ("image", "depth", "camera_info", "camera_pose")."""
        if role == "image":
            with self._lock:
                finding = self._stamps.check(stamp_ns(msg.header.stamp), now_ns, self._use_sim_time())
            self.reporter.report(finding)
        elif role == "depth":
            self._depth(msg)
        elif role == "camera_info":
            with self._lock:
                self._info_size = (int(msg.width), int(msg.height))
            self._sizes()
        with self._lock:
            self._received[role] += 1

    def _depth(self, msg) -> None:
        now = time.monotonic()
        with self._lock:
            self._depth_size = (int(msg.width), int(msg.height))
            due = now >= self._next_depth_check
            if due:
                self._next_depth_check = now + DEPTH_CHECK_PERIOD_S
        self._sizes()
        if not due:
            return
        try:
            encoding, pixels = codec.depth_pixels(msg)
        except codec.ImageError:
            return  # not depth the node reads: the answers' region status says why
        self.reporter.report(depth_units(encoding, pixels, self._node.get_parameter("depth_scale").value))

    def _sizes(self) -> None:
        with self._lock:
            info, depth = self._info_size, self._depth_size
        if info is not None and depth is not None:
            self.reporter.report(camera_info_size(*info, *depth))

    def received(self) -> str:
        """How many messages of each input arrived: a topic with none is not connected."""
        with self._lock:
            return ", ".join(f"{role} {count}" for role, count in self._received.items())

    # --- clock, QoS, tf ----------------------------------------------------------------
    def _clock_jumped(self, jump) -> None:
        self.reporter.report(clock_jump(jump.delta.nanoseconds, self._use_sim_time()))

    def publisher_events(self, topic: str, qos) -> PublisherEventCallbacks:
        """An output publisher's event callbacks: a subscriber asking for an incompatible QoS is reported."""
        offered = "best_effort" if qos.reliability == ReliabilityPolicy.BEST_EFFORT else "reliable"

        def incompatible(info) -> None:
            policy = QoSPolicyKind(info.last_policy_kind).name
            self.reporter.report(incompatible_qos(topic, policy, offered))

        return PublisherEventCallbacks(incompatible_qos=incompatible)

    def tf_lookup_failed(self, target_frame: str, camera_frame: str, frames_yaml: str) -> None:
        """tf gave no camera pose: report a target_frame it cannot reach (tf's frames as YAML,
        Buffer.all_frames_as_yaml); a transform that is only late is no finding."""
        self.reporter.report(target_frame_reach(target_frame, camera_frame, parse_tf_frames(frames_yaml)))

    def diagnostic_values(self) -> dict[str, str]:
        return self.reporter.diagnostic_values()
