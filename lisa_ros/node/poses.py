"""Where lisa_node's camera poses come from: the camera_pose topic, tf2, or none."""

from __future__ import annotations

import time

from ..runtime.message_fields import transform_msg_to_matrix

# Seconds after the listener starts during which a failed lookup is not reported: tf's
# buffer is still filling (dynamic transforms arrive at their rate, static ones at once).
TF_SETTLE_S = 5.0


def start(node, lifter, checks):
    """Set the lifter's pose lookup: the camera_pose topic with use_pose_topic, else tf2 when
    installed and target_frame is set, else none (the regions stay in the camera frame).

    checks (lisa_ros.node.self_checks.SelfChecks): told when tf cannot give a pose.
    Returns the tf2_ros.TransformListener when tf2 is used (for `stop`), else None.
    """
    target = node.get_parameter("target_frame").value
    lifter.target_frame = target
    lifter.pose_lookup = None
    if node.get_parameter("use_pose_topic").value:
        lifter.pose_lookup = lifter.cached_pose
        topic = node.resolve_topic_name("camera_pose")
        node.get_logger().info(f"camera poses from {topic} (geometry_msgs/PoseStamped)")
        return None
    if not target:
        return None
    try:
        import tf2_ros
    except ImportError:
        node.get_logger().warning(
            f"target_frame is {target!r} but tf2_ros is not installed and use_pose_topic is false: "
            "3D regions stay in the camera frame"
        )
        return None
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, node)
    lifter.pose_lookup = checked_lookup(buffer, target, checks)
    node.get_logger().info(f"3D regions in {target!r} through tf2")
    return listener


def checked_lookup(buffer, target: str, checks, settle_s: float = TF_SETTLE_S):
    """tf_pose on `buffer`; once tf had `settle_s` seconds to fill, a failed lookup is given to
    `checks` (which names a missing link) before the LookupError goes on."""
    started = time.monotonic()

    def lookup(camera_frame: str, stamp: int):
        try:
            return tf_pose(buffer, target, camera_frame, stamp)
        except LookupError:
            if time.monotonic() - started >= settle_s:
                checks.tf_lookup_failed(target, camera_frame, buffer.all_frames_as_yaml())
            raise

    return lookup


def stop(node, listener, lifter) -> None:
    try:
        listener.unregister()
    except Exception as error:  # older tf2_ros without unregister
        node.get_logger().debug(f"tf2 listener: {error}")
    if lifter is not None:
        lifter.pose_lookup = None


def tf_pose(buffer, target: str, camera_frame: str, stamp: int):
    """The camera-to-`target` transform at `stamp` from a tf2 buffer; LookupError when there is none."""
    from rclpy.duration import Duration
    from rclpy.time import Time

    try:
        transform = buffer.lookup_transform(
            target, camera_frame, Time(nanoseconds=stamp), timeout=Duration(seconds=0.2)
        )
    except Exception as error:  # tf2 LookupException, ExtrapolationException, ...
        raise LookupError(f"tf2: {type(error).__name__}: {error}") from error
    return transform_msg_to_matrix(transform.transform), target
