"""The TF tree of a bag's /tf and /tf_static messages."""

from __future__ import annotations

import numpy as np

from lisa_ros.runtime import message_fields as fields

TF_TOPICS = ("/tf", "/tf_static")


class TransformTree:
    """Static transforms plus the latest dynamic transform of each child frame, composed
    along the chain between two frames (no interpolation in time: the newest wins)."""

    def __init__(self):
        self.parents: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, child-to-parent)

    def add(self, tf_message) -> None:
        """Take the transforms of a tf2_msgs/TFMessage."""
        for transform in tf_message.transforms:
            child, parent = transform.child_frame_id.lstrip("/"), transform.header.frame_id.lstrip("/")
            self.parents[child] = (parent, fields.transform_msg_to_matrix(transform.transform))

    def _to_root(self, frame: str) -> list[tuple[str, np.ndarray]]:
        chain, seen = [(frame, np.eye(4))], {frame}
        while chain[-1][0] in self.parents:
            parent, matrix = self.parents[chain[-1][0]]
            if parent in seen:
                break
            seen.add(parent)
            chain.append((parent, matrix @ chain[-1][1]))  # start -> child -> parent
        return chain

    def lookup(self, target: str, source: str) -> np.ndarray:
        """The 4x4 source-to-target transform; LookupError when the frames are not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        up_source = dict(self._to_root(source))
        for frame, target_to_frame in self._to_root(target):
            if frame in up_source:  # common ancestor: source -> frame -> target
                return np.linalg.inv(target_to_frame) @ up_source[frame]
        raise LookupError(f"no transform chain from {source!r} to {target!r} in /tf and /tf_static")
