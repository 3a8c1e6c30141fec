"""Start lisa_node (a lifecycle node) and take it to active; with voice:=true also speech_node.

  ros2 launch lisa_ros lisa.launch.py image:=/camera/color/image_raw device:=cuda
  ros2 launch lisa_ros lisa.launch.py voice:=true          # spoken commands from the microphone
  ros2 launch lisa_ros lisa.launch.py --show-args

The arguments and their mapping to parameters and remappings live in
lisa_ros/runtime/launch_config.py; this file only adapts them to launch_ros.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

from lisa_ros.runtime.launch_config import LAUNCH_ARGUMENTS, NODE_NAME, launch_configuration, speech_configuration


def _change_state(node, transition_id):
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))


def _start_node(context):
    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in LAUNCH_ARGUMENTS}
    parameters, remappings, namespace = launch_configuration(values)
    # Without value_type, launch_ros would YAML-parse strings ("1.0" -> float).
    parameters = {
        name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
        for name, value in parameters.items()
    }
    node = LifecycleNode(
        package="lisa_ros",
        executable="lisa_node",
        name=NODE_NAME,
        namespace=namespace,
        parameters=[parameters],
        remappings=remappings,
        output="screen",
    )
    # Activate only after configure (not after a later manual deactivate).
    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="configuring",
            goal_state="inactive",
            entities=[_change_state(node, Transition.TRANSITION_ACTIVATE)],
        )
    )
    actions = [node, activate, _change_state(node, Transition.TRANSITION_CONFIGURE)]
    speech = speech_configuration(values)
    if speech is not None:  # it configures and activates itself; its command goes where lisa_node's comes from
        command = [(topic, target) for topic, target in remappings if topic == "command"]
        speech_node = Node(
            package="lisa_ros",
            executable="speech_node",
            name="speech",
            namespace=namespace,
            parameters=[speech],
            remappings=command,
            output="screen",
        )
        actions.append(speech_node)
    return actions


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=text)
            for name, default, text in LAUNCH_ARGUMENTS
        ]
        + [OpaqueFunction(function=_start_node)]
    )
