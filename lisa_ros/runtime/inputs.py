"""Camera input messages -> the pipeline: the one input adapter of the node and the bag tools.

The messages may be rclpy's (the live node) or rosbags' (the bag tools): both have the
same field names, and nothing here needs more. Images and depth are decoded lazily, on
the thread that answers a command, so a subscriber never waits for a decode.

A message whose header stamp is zero (publishers that leave it unset) takes the time it
was received (`received`, integer nanoseconds).
"""

from __future__ import annotations

from typing import Callable

from . import codec
from .message_fields import camera_info_intrinsics, frame_from_msg, pose_msg_to_matrix, stamp_ns


class PipelineInputs:
    """Feeds image, depth, camera_info and camera pose messages to a `Pipeline`.

    Arguments:
        pipeline (lisa_ros.runtime.pipeline.Pipeline): where the inputs go.
        depth_scale (callable() -> float): integer depth units per metre, read when a depth
            image is decoded (so a live parameter change applies to depth already cached).
        compressed (bool): images are sensor_msgs/CompressedImage, not sensor_msgs/Image.
    """

    def __init__(self, pipeline, depth_scale: Callable[[], float], compressed: bool = False):
        self.pipeline = pipeline
        self.depth_scale = depth_scale
        self.compressed = compressed

    def feed(self, role: str, msg, received: int) -> None:
        """Give one message of `role` ("image", "depth", "camera_info" or "camera_pose") to the pipeline."""
        getattr(self, role)(msg, received)

    def image(self, msg, received: int) -> None:
        frame = frame_from_msg(msg, self.compressed, received)
        self.pipeline.set_frame(frame.decode, frame.stamp, frame.frame_id)

    def depth(self, msg, received: int) -> None:
        decode = lambda: codec.depth_to_meters(msg, self.depth_scale())  # noqa: E731
        self.pipeline.set_depth(decode, stamp_ns(msg.header.stamp) or received, msg.header.frame_id)

    def camera_info(self, msg, received: int) -> None:
        try:
            intrinsics, error = camera_info_intrinsics(msg), ""
        except ValueError as problem:
            intrinsics, error = None, str(problem)
        stamp = stamp_ns(msg.header.stamp) or received
        self.pipeline.set_camera_info(intrinsics, stamp, msg.header.frame_id, error=error)

    def camera_pose(self, msg, received: int) -> None:
        """geometry_msgs/PoseStamped: the camera's pose in its header frame."""
        self.pipeline.set_camera_pose(
            pose_msg_to_matrix(msg.pose), stamp_ns(msg.header.stamp) or received, msg.header.frame_id
        )
