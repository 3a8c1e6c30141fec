"""Start lisa_node (a lifecycle node) and, with autostart (the default), configure and activate it.

  ros2 launch lisa_ros lisa.launch.py image:=/camera/color/image_raw device:=cuda
  ros2 launch lisa_ros lisa.launch.py cameras:=front,wrist   # one process, one model, a node per camera
  ros2 launch lisa_ros lisa.launch.py voice:=true rviz:=true  # spoken commands; RViz with config/lisa.rviz
  ros2 launch lisa_ros lisa.launch.py voice:=true say:=true   # and the explanations spoken back
  ros2 launch lisa_ros lisa.launch.py --show-args

The launch file is the one owner of the nodes' lifecycle transitions (the nodes never
change their own state): with autostart:=false they wait unconfigured for a lifecycle
manager or `ros2 lifecycle set`. The arguments and their mapping to parameters,
remappings and namespaces live in lisa_ros/runtime/launch_config.py (tested without ROS);
this file only adapts them to launch_ros.
"""

import os
import tempfile
import threading

import launch.logging
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessStart
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.ros_adapters import get_ros_node
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState as ChangeStateService

from lisa_ros.runtime.launch_config import (
    LAUNCH_ARGUMENTS,
    NODE_NAME,
    SPEECH_NODE_NAME,
    check_known,
    launch_plan,
    rviz_config,
)

_LOGGER = launch.logging.get_logger("lisa.launch")


def _change_state(node, transition_id):
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))


def _autostart(node) -> list:
    """Configure `node` (a LifecycleNode action) whenever its process starts (respawns too), then activate it."""
    return [
        RegisterEventHandler(
            OnProcessStart(target_action=node, on_start=[_change_state(node, Transition.TRANSITION_CONFIGURE)])
        ),
        # Activate after configure (not after a later manual deactivate).
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                start_state="configuring",
                goal_state="inactive",
                entities=[_change_state(node, Transition.TRANSITION_ACTIVATE)],
            )
        ),
    ]


def _transition(client, name: str, transitions, context) -> None:
    """Call `name`'s change_state service with each transition in turn (on a worker thread)."""
    for transition, label in transitions:
        while not client.wait_for_service(timeout_sec=1.0):
            if context.is_shutdown:
                return
        request = ChangeStateService.Request()
        request.transition.id = transition
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        while not done.wait(1.0):
            if context.is_shutdown:
                future.cancel()
                return
        if future.exception() is not None or not future.result().success:
            _LOGGER.error(f"{name}: {label} failed; its log says why")
            return


def _autostart_nodes(node_names):
    """Configure and activate lifecycle nodes of one process (a multi-camera lisa_node) by their full names:
    launch_ros's LifecycleNode action manages one node per process."""
    transitions = ((Transition.TRANSITION_CONFIGURE, "configure"), (Transition.TRANSITION_ACTIVATE, "activate"))

    def start(context):
        ros_node = get_ros_node(context)
        for name in node_names:
            client = ros_node.create_client(ChangeStateService, f"{name}/change_state")
            context.add_completion_future(
                context.asyncio_loop.run_in_executor(None, _transition, client, name, transitions, context)
            )

    return OpaqueFunction(function=start)


def _given_arguments(context) -> list[str]:
    """The argument names given on the `ros2 launch` command line (name:=value)."""
    return [argument.split(":=", 1)[0] for argument in getattr(context, "argv", []) or [] if ":=" in argument]


def _rviz(plan, parameters):
    template_path = os.path.join(get_package_share_directory("lisa_ros"), "config", "lisa.rviz")
    with open(template_path, encoding="utf-8") as stream:
        template = stream.read()
    namespace = plan.cameras[0].namespace if plan.cameras else plan.namespace
    text = rviz_config(template, namespace, parameters["target_frame"] or "camera_color_optical_frame")
    handle, path = tempfile.mkstemp(prefix="lisa-", suffix=".rviz")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    sim_time = [{"use_sim_time": parameters["use_sim_time"]}] if "use_sim_time" in parameters else []
    return Node(package="rviz2", executable="rviz2", arguments=["-d", path], parameters=sim_time, output="screen")


def _start(context):
    check_known(_given_arguments(context))  # launch itself ignores unknown arguments
    plan = launch_plan({name: LaunchConfiguration(name).perform(context) for name, _, _ in LAUNCH_ARGUMENTS})
    # Without value_type, launch_ros would YAML-parse strings ("1.0" -> float).
    parameters = {
        name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
        for name, value in plan.parameters.items()
    }
    common = dict(
        package="lisa_ros",
        parameters=[parameters],
        output="screen",
        respawn=plan.respawn,
        respawn_delay=plan.respawn_delay,
    )
    actions = []
    if plan.cameras:
        # One process, a node per camera under <namespace>/<camera>: names come from --cameras, so the
        # action sets no name or namespace (launch_ros would rename every node of the process).
        process = Node(executable="lisa_node", arguments=plan.node_arguments, **common)
        actions.append(process)
        if plan.autostart:
            start = _autostart_nodes(plan.node_names)
            actions.append(RegisterEventHandler(OnProcessStart(target_action=process, on_start=[start])))
    else:
        node = LifecycleNode(
            executable="lisa_node",
            name=NODE_NAME,
            namespace=plan.namespace or "/",
            remappings=plan.remappings,
            **common,
        )
        actions.append(node)
        if plan.autostart:
            actions += _autostart(node)
    if plan.speech is not None:  # its command goes where lisa_node's comes from
        sim_time = {name: plan.parameters[name] for name in ("use_sim_time",) if name in plan.parameters}
        speech = LifecycleNode(
            package="lisa_ros",
            executable="speech_node",
            name=SPEECH_NODE_NAME,
            namespace=plan.namespace or "/",
            parameters=[plan.speech | sim_time],
            remappings=plan.speech_remappings,
            output="screen",
            respawn=plan.respawn,
            respawn_delay=plan.respawn_delay,
        )
        actions.append(speech)
        if plan.autostart:
            actions += _autostart(speech)
    if plan.say:  # explanations spoken; `mute` (same namespace) keeps speech_node from hearing them
        sim_time = [{name: plan.parameters[name]} for name in ("use_sim_time",) if name in plan.parameters]
        actions.append(Node(package="lisa_ros", executable="say_node", name="say", namespace=plan.namespace or "/",
                            parameters=sim_time, output="screen", respawn=plan.respawn,
                            respawn_delay=plan.respawn_delay))  # fmt: skip
    if plan.rviz:
        actions.append(_rviz(plan, plan.parameters))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=text)
            for name, default, text in LAUNCH_ARGUMENTS
        ]
        + [OpaqueFunction(function=_start)]
    )
