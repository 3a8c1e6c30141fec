"""Bag tools: play a rosbag2 through the runtime, write an output bag, metrics and a report.

runner (evaluate: the entry point), topics (which topics are read, in which role), bagfile
(reading the input, writing the output bag), typestore (message types, messages from dicts),
transforms (the TF tree), script (the command script and its ground truth), metrics (scores
and latency statistics), report + templates/report.html.j2 and charts (report.html).
The command line is lisa_ros.cli.eval_bag.
"""
