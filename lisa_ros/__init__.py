"""lisa_ros: LISA reasoning segmentation on ROS 2 (hand-written modules merged with the generated interfaces)."""

__path__ = __import__("pkgutil").extend_path(__path__, __name__)
