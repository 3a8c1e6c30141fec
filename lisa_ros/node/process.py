"""The `lisa_node` executable: one LisaNode per camera in one process, sharing one loaded model.

    lisa_node [--cameras front,wrist] --ros-args -r __ns:=/lisa -p device:=cuda ...

Without --cameras there is one node, `lisa`, in the namespace the ROS arguments give.
With --cameras each camera gets its own node `lisa` (its own topics, services, frames,
conversation and live targets); the nodes share one loaded model, and their command
workers take turns on it. --cameras takes plain names (by hand: each node in
`<namespace>/<camera>`) or the JSON list the launch file writes, with each camera's
namespace and its own input remappings (lisa_ros.runtime.launch_config.cameras_argument).
The nodes stay unconfigured until told (the launch file's `autostart`, a lifecycle manager
or `ros2 lifecycle set`).

SIGINT and SIGTERM end the process cleanly, with exit status 0: every command that reached
a node is answered (the queued ones with an error result) and acknowledged by reliable
subscribers before the nodes go. rclpy's own signal handlers are off: they shut the
context down at once (the results could no longer be published) and raise
KeyboardInterrupt wherever the main thread happens to be.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import rclpy
import rclpy.utilities
from rclpy.exceptions import InvalidHandle
from rclpy.executors import MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from ..runtime.launch_config import Camera, parse_cameras_argument
from ..runtime.shared_models import ModelRegistry
from .lisa_node import NODE_NAME, LisaNode

THREADS_PER_NODE = 8


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The executable's own arguments of the command line `argv` (the program name first, the ROS
    arguments are skipped); `cameras`: the launch_config.Camera list, None without --cameras.
    Exits with a usage message for a bad --cameras."""
    parser = argparse.ArgumentParser(prog="lisa_node", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cameras",
        default=None,
        help="camera names 'front,wrist' (one node per camera in <namespace>/<camera>, one shared model) "
        "or the launch file's JSON list of cameras with their namespaces and remappings",
    )
    options = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    if options.cameras is not None:
        try:
            options.cameras = parse_cameras_argument(options.cameras, base_namespace(argv))
        except ValueError as error:
            parser.error(str(error))
    return options


def base_namespace(argv: list[str]) -> str:
    """The namespace the ROS arguments give the nodes (`-r __ns:=/lisa`, also `lisa:__ns:=`); "/" without."""
    namespace = "/"
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-r", "--remap"):
            rule = argv[i + 1]
            for prefix in ("__ns:=", f"{NODE_NAME}:__ns:="):
                if rule.startswith(prefix):
                    namespace = rule[len(prefix) :]
    return namespace


def node_arguments(camera: Camera) -> list[str]:
    """A camera's node's own ROS arguments: its namespace and its input remappings.

    A node's own rules win over the process-wide ones (which would put every camera's node
    in one namespace) and apply to that node only.
    """
    arguments = ["--ros-args", "-r", f"__ns:={camera.namespace}"]
    for topic, target in camera.remappings:
        arguments += ["-r", f"{topic}:={target}"]
    return arguments


def create_nodes(cameras: list[Camera] | None, models: ModelRegistry, context) -> list[LisaNode]:
    if not cameras:
        return [LisaNode(models=models, context=context)]
    return [LisaNode(models=models, context=context, cli_args=node_arguments(camera)) for camera in cameras]


def spin(executor, context, done: threading.Event) -> None:
    """executor.spin() until `done`, but an entity destroyed on another thread while the executor
    builds its wait set (a transition destroying publishers, subscriptions and their event
    handlers) costs one wait, not the executor thread: rclpy skips entering a destroyed waitable
    but adds it to the wait set all the same (InvalidHandle; ros2/rclpy#1284). The next wait set
    leaves it out: the node took it off its waitables before destroying it."""
    while context.ok() and not done.is_set():
        try:
            executor.spin_once(timeout_sec=1.0)
        except InvalidHandle:
            continue  # the next wait set waits on the other entities again


def close(node: LisaNode) -> None:
    """Take `node` through its shutdown transition (answering every command), once any running transition ended."""
    with node.transition_lock:  # a configure (model load) or deactivate in progress finishes first
        pass
    try:
        node.trigger_shutdown()
    except Exception as error:  # finalized already (a shutdown request), or a transition just started
        node.get_logger().warning(f"shutdown transition: {error}; closing directly")
        node.on_shutdown(None)


def main(args: list[str] | None = None) -> int:
    argv = list(sys.argv if args is None else args)
    try:
        options = parse_arguments(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    stop = threading.Event()

    def request_stop(signum, frame):  # a second signal (launch's SIGINT after the terminal's) changes nothing
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    context = rclpy.Context()
    rclpy.init(args=argv, context=context, signal_handler_options=SignalHandlerOptions.NO)
    models = ModelRegistry()
    nodes = create_nodes(options.cameras, models, context)
    executor = MultiThreadedExecutor(num_threads=THREADS_PER_NODE * len(nodes), context=context)
    for node in nodes:
        executor.add_node(node)
    spinning_done = threading.Event()
    spinner = threading.Thread(target=spin, args=(executor, context, spinning_done), name="lisa-executor", daemon=True)
    spinner.start()
    for node in nodes:
        node.get_logger().info(f"{node.get_fully_qualified_name()}: unconfigured; waiting for configure and activate")
    while not stop.wait(0.2) and spinner.is_alive():
        pass
    # The executor keeps spinning while the nodes close: service and action results still go out.
    closers = [threading.Thread(target=close, args=(node,)) for node in nodes]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join()
    spinning_done.set()
    executor.shutdown()
    spinner.join(10)
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown(context=context)
    return 0
