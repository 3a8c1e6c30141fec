"""The ROS-free runtime: frames and commands in, results out (shared by the node and the bag tools)."""
