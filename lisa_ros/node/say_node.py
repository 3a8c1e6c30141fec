"""`say_node`: speaks each explanation the perception node publishes (std_msgs/String on
`explanation`) and holds `mute` (std_msgs/Bool) true while it speaks, which speech_node obeys.

A plain node (no lifecycle: it holds no model); the TTS command line is a parameter.
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String

from ..speech.say import Speaker

# name, default, description (the node's parameters, declared once)
PARAMETERS = (
    ("command", ["espeak-ng", "-v", "en-us"], "the text-to-speech program and its options; the text is appended"),
    ("mute_tail_s", 0.3, "seconds `mute` stays true after speaking (echo, audio buffers)"),
)


class SayNode(Node):
    def __init__(self, node_name: str = "say", **kwargs):
        super().__init__(node_name, **kwargs)
        for name, default, _ in PARAMETERS:
            self.declare_parameter(name, default)
        # Latched, so that a speech node starting later learns whether the robot is speaking.
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)  # fmt: skip
        self._mute = self.create_publisher(Bool, "mute", latched)
        self._mute.publish(Bool(data=False))
        self._speaker = Speaker(
            self.get_parameter("command").value,
            lambda muted: self._mute.publish(Bool(data=muted)),
            float(self.get_parameter("mute_tail_s").value),
            on_error=self.get_logger().error,
        )
        every = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(String, "explanation", lambda msg: self._speaker.speak(msg.data), every)

    def close(self) -> None:
        self._speaker.close()


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = SayNode()
    except FileNotFoundError as error:
        print(f"say_node: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
