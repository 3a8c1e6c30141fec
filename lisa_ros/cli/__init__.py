"""Command-line entry points (console scripts; the node's is lisa_ros.node:main)."""
