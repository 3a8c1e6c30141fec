"""Command-line entry points (console scripts; the nodes' are in lisa_ros.node)."""
