"""The ROS room: the nodes (thin ROS adapters around the ROS-free rooms) and message conversion,
the only modules that import rclpy. Nothing is imported here, so that each executable loads
only its own node (speech_node and say_node never load the model).

`lisa_node`, the LISA lifecycle node, around lisa_ros.runtime:
    lisa_node: LisaNode, the lifecycle, commands, services and the action.
    outputs: the publishers, their QoS (durability table there) and what each result publishes.
    parameters: parameter descriptors and the changes applied while the node runs.
    poses: camera poses from the camera_pose topic or tf2.
    process: the executable: one node per camera in one process, one shared model, clean signals.
    self_checks: set-up mistakes (depth units, camera_info size, QoS, clock, tf) logged once, in diagnostics.
    messages: results <-> rclpy messages (the content comes from lisa_ros.runtime.message_fields).

`speech_node` (voice commands, around lisa_ros.speech) and `say_node` (spoken explanations).

Commands are answered on a worker thread (lisa_ros.runtime.worker.CommandWorker), so
subscriptions and services stay responsive while the model runs; between commands the
same thread tracks the answered targets on new images (lisa_ros.runtime.tracking) and the
node publishes them on `targets` with the mask, overlay and 3D outputs of each tracked image.

Every topic and service name is relative: with the launch defaults (namespace `lisa`)
they are /lisa/image, /lisa/command, /lisa/result, ...; remapping moves them.

Depth, camera_info and camera poses (the camera_pose topic with use_pose_topic, or tf2
when `tf2_ros` is installed and target_frame is set) go to the pipeline, which answers on
the newest image that has its depth and computes each mask's 3D region; the node publishes
them (target_cloud, markers and the result's 3D fields).
"""
