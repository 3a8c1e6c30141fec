"""Fixtures of the node tests: each test module's nodes share one temporary ROS_HOME (logs)."""

import pytest


@pytest.fixture(scope="module")
def ros_home(tmp_path_factory):
    return tmp_path_factory.mktemp("ros_home")
