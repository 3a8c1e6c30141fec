"""Which of a bag's topics are read, in which role, checked against their message types."""

from __future__ import annotations

from .errors import EvalError
from .transforms import TF_TOPICS

EXPECTED_TYPES = {
    "image": ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"),
    "depth": ("sensor_msgs/msg/Image",),
    "camera_info": ("sensor_msgs/msg/CameraInfo",),
    "command": ("std_msgs/msg/String",),
    "pose": ("geometry_msgs/msg/PoseStamped",),
}
# The node's input topics (relative names) at the root namespace: the defaults.
DEFAULT_TOPICS = {
    "image": "/image",
    "depth": "/depth",
    "camera_info": "/camera_info",
    "command": "/command",
    "pose": "/camera_pose",
}


def absolute(name: str) -> str:
    """A topic name with its leading slash."""
    return name if name.startswith("/") else "/" + name


def requested_topics(named: dict[str, str | None], use_pose_topic: bool, script: bool) -> tuple[dict, list]:
    """The topics to read (role -> topic) and the roles whose topic the bag must have.

    Arguments:
        named: role -> the topic asked for, or None for the default (DEFAULT_TOPICS); a pose
            topic is read when named (not "") or, when None, if `use_pose_topic`.
        script: the commands come from a script, not from the bag.
    The image is always required; depth and camera_info when named; the pose topic when
    read; the command topic without a script.
    """
    roles = ("image", "depth", "camera_info", "command")
    topics = {role: absolute(named.get(role) or DEFAULT_TOPICS[role]) for role in roles}
    pose = named.get("pose")
    if pose or (pose is None and use_pose_topic):
        topics["pose"] = absolute(pose or DEFAULT_TOPICS["pose"])
    required = ["image"] + [role for role in ("depth", "camera_info") if named.get(role) is not None]
    required += ["pose"] if "pose" in topics else []
    required += [] if script else ["command"]
    return topics, required


class BagTopics:
    """A bag's topics and their message types, from a rosbags reader's connections."""

    def __init__(self, connections):
        self.types: dict[str, set[str]] = {}
        for connection in connections:
            self.types.setdefault(connection.topic, set()).add(connection.msgtype)

    def __contains__(self, topic: str) -> bool:
        return topic in self.types

    def kind(self, topic: str) -> str | None:
        """The topic's message type; None when it has several (or is absent)."""
        types = self.types.get(topic, set())
        return next(iter(types)) if len(types) == 1 else None

    def listing(self) -> str:
        """"topic (type), ..." for error messages."""
        return ", ".join(f"{t} ({self.kind(t) or 'several types'})" for t in sorted(self.types)) or "none"


def select_inputs(bag_topics: BagTopics, topics: dict[str, str], required: list[str], bag, script: bool) -> dict:
    """topic -> role of the messages to feed: the requested `topics` (role -> topic) present in
    the bag with the expected types, the bag's commands unless a script replaces them, and
    /tf + /tf_static unless a pose topic is read.

    Raises EvalError for a `required` role's missing topic or any requested topic's wrong type.
    """
    inputs = {}
    for role, topic in topics.items():
        if topic not in bag_topics:
            if role in required:
                note = " (and no --script was given)" if role == "command" else ""
                raise EvalError(f"bag {bag} has no {role} topic {topic}{note}; its topics: {bag_topics.listing()}")
            continue
        if role == "command" and script:
            continue  # the script's commands replace the bag's
        kind = bag_topics.kind(topic)
        if kind not in EXPECTED_TYPES[role]:
            raise EvalError(
                f"topic {topic} ({role}) is {kind or 'of several types'}, expected {' or '.join(EXPECTED_TYPES[role])}"
            )
        inputs[topic] = role
    for topic in TF_TOPICS:
        if topic in bag_topics and bag_topics.kind(topic) == "tf2_msgs/msg/TFMessage" and "pose" not in topics:
            inputs[topic] = "tf"
    return inputs
