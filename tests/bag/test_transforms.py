"""lisa_ros.bag.transforms: the TF tree of a bag's /tf and /tf_static."""

import numpy as np
import pytest

from lisa_ros.bag.transforms import TransformTree


def test_transform_tree():
    from lisa_ros.runtime.message_fields import matrix_from_pose

    class T:  # duck-typed geometry_msgs/TransformStamped
        def __init__(self, parent, child, xyz, q):
            from types import SimpleNamespace as N

            self.header = N(frame_id=parent)
            self.child_frame_id = child
            self.transform = N(translation=N(x=xyz[0], y=xyz[1], z=xyz[2]), rotation=N(x=q[0], y=q[1], z=q[2], w=q[3]))

    from types import SimpleNamespace

    yaw = (0.0, 0.0, float(np.sin(0.3)), float(np.cos(0.3)))
    tree = TransformTree()
    tree.add(SimpleNamespace(transforms=[T("map", "odom", (1, 0, 0), yaw), T("odom", "base", (0, 2, 0), yaw)]))
    tree.add(
        SimpleNamespace(transforms=[T("base", "camera", (0, 0, 1), (0, 0, 0, 1)), T("map", "other", (5, 5, 5), yaw)])
    )
    expected = (
        matrix_from_pose((1, 0, 0), yaw) @ matrix_from_pose((0, 2, 0), yaw) @ matrix_from_pose((0, 0, 1), (0, 0, 0, 1))
    )
    np.testing.assert_allclose(tree.lookup("map", "camera"), expected, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("camera", "map"), np.linalg.inv(expected), atol=1e-12)
    np.testing.assert_allclose(
        tree.lookup("other", "camera"), np.linalg.inv(matrix_from_pose((5, 5, 5), yaw)) @ expected, atol=1e-12
    )
    tree.add(SimpleNamespace(transforms=[T("odom", "base", (0, 3, 0), yaw)]))  # the newest wins
    assert tree.lookup("odom", "base")[1, 3] == 3
    with pytest.raises(LookupError, match="no transform chain"):
        tree.lookup("map", "nowhere")
