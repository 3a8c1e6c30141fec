"""`lisa_node`: the LISA lifecycle node, a thin ROS adapter around lisa_ros.runtime.

Configure loads the model and creates the (lifecycle) publishers; activate starts the
subscriptions, the `segment` service and action, `reset_conversation` and `~/clear`, and
enables the publishers; deactivate stops them; cleanup frees the model. Commands are
answered on a worker thread (lisa_ros.runtime.worker.CommandWorker), so subscriptions and
services stay responsive while the model runs; between commands the same thread tracks
the answered targets on new images (lisa_ros.runtime.tracking) and the node publishes
them on `targets` with the mask, overlay and 3D outputs of each tracked image.

Every topic and service name is relative: with the launch defaults (namespace `lisa`)
they are /lisa/image, /lisa/command, /lisa/result, ...; remapping moves them.

Depth, camera_info and camera poses (the camera_pose topic with use_pose_topic, or tf2
when `tf2_ros` is installed and target_frame is set) go to the pipeline, which matches
them to the image by stamp and computes each mask's 3D region; the node publishes them
(target_cloud, markers and the result's 3D fields).
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.service import Service
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from . import messages
from .action import Segment as SegmentAction
from .msg import SegmentationResult, TargetArray
from .runtime.inputs import PipelineInputs
from .runtime.message_fields import frame_from_msg, transform_msg_to_matrix
from .runtime.parameters import PARAMETERS, tracking_settings, validate
from .runtime.pipeline import Pipeline
from .runtime.regions import GEOMETRY_PARAMETERS
from .runtime.tracking import TrackingUpdate
from .runtime.types import Result, Stage, Status, error_result
from .runtime.worker import CommandWorker, Job
from .srv import Segment as SegmentService

NODE_NAME = "lisa"
# Parameters that select the model: set them when the node starts.
READ_ONLY = frozenset({"model_path", "vision_tower_path", "device", "precision", "conversation_template"})
# Parameters applied as soon as they are set; the others take effect at the next configure/activate.
TRACKING = frozenset(spec.name for spec in PARAMETERS if spec.name.startswith("tracking"))
LIVE = frozenset(
    {"max_new_tokens", "max_image_age", "max_command_length", "max_image_pixels", "max_image_aspect_ratio"}
    | {"keep_conversation", "publish_overlay", "depth_scale"}
    | (set(GEOMETRY_PARAMETERS) - {"target_frame"})
    | TRACKING
)
_NAMES = frozenset(spec.name for spec in PARAMETERS)
_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def parameter_descriptor(spec) -> ParameterDescriptor:
    """The ParameterDescriptor of a lisa_ros.runtime.parameters.ParameterSpec."""
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=_TYPES[spec.type],
        description=spec.description,
        additional_constraints=spec.constraints,
        read_only=spec.name in READ_ONLY,
    )
    if spec.type is int and (spec.min is not None or spec.max is not None):
        low = spec.min if spec.min is not None else -(2**63)
        high = spec.max if spec.max is not None else 2**63 - 1
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
    if spec.type is float and (spec.min is not None or spec.max is not None):
        low = spec.min if spec.min is not None else -sys.float_info.max
        high = spec.max if spec.max is not None else sys.float_info.max
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    return descriptor


def sensor_qos(reliable: bool) -> QoSProfile:
    """Input QoS: sensor data (best effort, newest message only), or reliable."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def reliable_qos(depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def every_message_qos() -> QoSProfile:
    """Reliable and keep-all: for commands and results, where every message must arrive.

    A keep-last reader history overwrites commands the executor has not taken yet under a
    burst, before the node could answer them; keep-all makes the writer wait instead, and
    the node's own queue answers overflow with an error result.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


class LisaNode(LifecycleNode):
    """Answers commands about the newest camera image with LISA: text and masks."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._group = ReentrantCallbackGroup()
        self._pipeline: Pipeline | None = None
        self._worker: CommandWorker | None = None
        self._outputs = {}  # lifecycle publishers: created on configure, enabled while active
        self._inputs = []  # subscriptions, services, action server, timer: alive while active
        self._accepting_commands = False  # false while deactivating: calls already dispatched are refused
        self._ids_lock = threading.Lock()
        self._last_id = 0
        self._in_flight = 0  # service and action calls waiting for their result
        self._in_flight_done = threading.Condition()
        self._goals = {}  # goal id bytes -> Job, while the goal executes
        self._goals_lock = threading.Lock()
        self._stats = {"answered": 0, "errors": 0, "last_total_s": 0.0, "last_error": ""}
        self._tracking = {"frames": 0, "last_total_s": 0.0, "since": time.monotonic(), "rate": 0.0, "targets": ""}
        self._tf_listener = None  # tf2_ros.TransformListener while active (when tf2 is used)

    def _param(self, name: str):
        return self.get_parameter(name).value

    # --- lifecycle -------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = {spec.name: self._param(spec.name) for spec in PARAMETERS}
        try:
            self._pipeline = Pipeline.from_parameters(params, logger=self.get_logger())
        except Exception as error:  # bad parameter, missing checkpoint, no GPU, ...
            self.get_logger().error(f"cannot load the model: {type(error).__name__}: {error}")
            self._pipeline = None
            return TransitionCallbackReturn.FAILURE
        try:
            self._worker = CommandWorker(
                self._pipeline,
                queue_size=params["queue_size"],
                logger=self.get_logger(),
                on_track=self._publish_tracking,
            )
            publish = self.create_lifecycle_publisher
            self._outputs = {
                "result": publish(SegmentationResult, "result", every_message_qos()),
                "mask": publish(Image, "mask", reliable_qos(10)),
                "overlay": publish(Image, "overlay", reliable_qos(10)),
                "explanation": publish(String, "explanation", every_message_qos()),
                "targets": publish(TargetArray, "targets", reliable_qos(10)),
                "diagnostics": publish(DiagnosticArray, "/diagnostics", reliable_qos(10)),
                "target_cloud": publish(PointCloud2, "target_cloud", reliable_qos(10)),
                "markers": publish(MarkerArray, "markers", reliable_qos(10)),
            }
        except Exception as error:
            self.get_logger().error(f"cannot create the publishers: {type(error).__name__}: {error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        compressed = self._param("use_compressed_image")
        inputs = PipelineInputs(
            self._pipeline, depth_scale=lambda: self._param("depth_scale"), compressed=compressed
        )
        qos = sensor_qos(self._param("reliable_inputs"))
        group = self._group
        try:

            def subscribe(msg_type, topic, callback, profile=qos):
                self._inputs.append(self.create_subscription(msg_type, topic, callback, profile, callback_group=group))

            def feed(role):
                def callback(msg):
                    inputs.feed(role, msg, self._now())
                    # Track the live targets on the newest frame when the worker is free (a frame
                    # waiting for its depth or camera_info is tracked once they arrive).
                    self._worker.frame_arrived()

                return callback

            subscribe(CompressedImage if compressed else Image, "image", feed("image"))
            subscribe(Image, "depth", feed("depth"))
            subscribe(CameraInfo, "camera_info", feed("camera_info"))
            if self._param("use_pose_topic"):
                subscribe(PoseStamped, "camera_pose", feed("camera_pose"))
            # Commands are not sensor data: every one must reach the node's own queue, in the order
            # they came (their own mutually exclusive group: the executor's threads could reorder them).
            in_order = MutuallyExclusiveCallbackGroup()
            qos_all = every_message_qos()
            command = self.create_subscription(String, "command", self._on_command, qos_all, callback_group=in_order)
            self._inputs.append(command)
            add = self._inputs.append  # one by one: a failure destroys what was created
            add(self.create_service(SegmentService, "segment", self._on_segment, callback_group=group))
            add(self.create_service(Trigger, "reset_conversation", self._on_reset, callback_group=group))
            add(self.create_service(Trigger, "~/clear", self._on_clear, callback_group=group))
            add(
                ActionServer(
                    self,
                    SegmentAction,
                    "segment",
                    self._execute_goal,
                    goal_callback=lambda goal: GoalResponse.ACCEPT,
                    cancel_callback=self._on_cancel,
                    callback_group=group,
                )
            )
            add(self.create_timer(1.0, self._publish_diagnostics, callback_group=group))
            image_topic = self.resolve_topic_name("image")
            command_topic = self.resolve_topic_name("command")
            self._start_poses()
        except Exception as error:  # e.g. an invalid topic name
            self.get_logger().error(f"cannot start the inputs: {type(error).__name__}: {error}")
            self._destroy_inputs()
            return TransitionCallbackReturn.FAILURE
        self._accepting_commands = True
        kind = "sensor_msgs/CompressedImage" if compressed else "sensor_msgs/Image"
        self.get_logger().info(f"active: images ({kind}) on {image_topic}, commands on {command_topic}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._accepting_commands = False
        # Let service and action calls already accepted get their result before their servers go.
        with self._in_flight_done:
            if not self._in_flight_done.wait_for(lambda: self._in_flight == 0, timeout=60.0):
                self.get_logger().warning(f"{self._in_flight} service/action calls still waiting; closing anyway")
        self._destroy_inputs()
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._accepting_commands = False
        self._destroy_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _start_poses(self) -> None:
        """Where camera poses come from: the camera_pose topic with use_pose_topic, else tf2 when
        installed and target_frame is set, else none (the regions stay in the camera frame)."""
        lifter = self._pipeline.lifter
        target = self._param("target_frame")
        lifter.target_frame = target
        lifter.pose_lookup = None
        if self._param("use_pose_topic"):
            lifter.pose_lookup = lifter.cached_pose
            topic = self.resolve_topic_name("camera_pose")
            self.get_logger().info(f"camera poses from {topic} (geometry_msgs/PoseStamped)")
        elif target:
            try:
                import tf2_ros
            except ImportError:
                self.get_logger().warning(
                    f"target_frame is {target!r} but tf2_ros is not installed and use_pose_topic is false: "
                    "3D regions stay in the camera frame"
                )
                return
            buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(buffer, self)
            lifter.pose_lookup = lambda camera_frame, stamp: self._tf_pose(buffer, target, camera_frame, stamp)
            self.get_logger().info(f"3D regions in {target!r} through tf2")

    @staticmethod
    def _tf_pose(buffer, target: str, camera_frame: str, stamp: int):
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            transform = buffer.lookup_transform(
                target, camera_frame, Time(nanoseconds=stamp), timeout=Duration(seconds=0.2)
            )
        except Exception as error:  # tf2 LookupException, ExtrapolationException, ...
            raise LookupError(f"tf2: {type(error).__name__}: {error}") from error
        return transform_msg_to_matrix(transform.transform), target

    def _destroy_inputs(self) -> None:
        if self._tf_listener is not None:
            try:
                self._tf_listener.unregister()
            except Exception as error:  # older tf2_ros without unregister
                self.get_logger().debug(f"tf2 listener: {error}")
            self._tf_listener = None
            if self._pipeline is not None:
                self._pipeline.lifter.pose_lookup = None
        for entity in self._inputs:
            if isinstance(entity, ActionServer):
                entity.destroy()
            elif isinstance(entity, Timer):
                self.destroy_timer(entity)
            elif isinstance(entity, Service):
                self.destroy_service(entity)
            else:
                self.destroy_subscription(entity)
        self._inputs = []

    def _release(self) -> None:
        if self._worker is not None:
            self._worker.stop()  # queued commands get an error result; the running one finishes
            self._worker = None
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        if self._pipeline is not None:
            self._pipeline.close()  # frees the model (and the CUDA cache)
            self._pipeline = None

    # --- inputs ----------------------------------------------------------------------
    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    def _next_id(self) -> int:
        with self._ids_lock:
            self._last_id += 1
            return self._last_id

    def _submit(self, command: str, image=None, reset: bool = False, on_progress=None) -> Job:
        """Queue a command; its result is published when it is answered. Returns its Job
        (already done, with an error result, when the node is not active or the queue is full)."""
        command_id, stamp = self._next_id(), self._now()
        worker = self._worker
        if worker is None or not self._accepting_commands:
            self.get_logger().warning(f"command {command_id} refused: the node is not active")
            return Job.rejected(error_result(command_id, command, stamp, "the node is not active"), self._publish)
        return worker.submit(
            command_id, command, stamp, image=image, reset=reset, on_result=self._publish, on_progress=on_progress
        )

    def _on_command(self, msg: String) -> None:
        self._submit(msg.data)

    def _request_frame(self, request):
        return frame_from_msg(request.image, False, self._now()) if request.has_image else None

    def _on_segment(self, request, response):
        with self._in_flight_done:
            self._in_flight += 1
        try:
            job = self._submit(request.command, image=self._request_frame(request))
            response.result = messages.result_to_msg(job.wait())
            return response
        finally:
            self._end_call()

    def _on_reset(self, request, response):
        if self._pipeline is None:
            response.success, response.message = False, "the node is not configured"
        else:
            self._pipeline.reset_conversation()
            response.success, response.message = True, "the next command starts a new conversation"
            self.get_logger().info("conversation reset")
        return response

    def _on_clear(self, request, response):
        if self._pipeline is None:
            response.success, response.message = False, "the node is not configured"
            return response
        update = self._pipeline.tracker.clear(self._now())
        if update is None:
            response.success, response.message = True, "no live target"
        else:
            self._publish_tracking(update)
            response.success, response.message = True, f"{len(update.targets)} live targets ended"
            self.get_logger().info(response.message)
        return response

    def _on_cancel(self, goal_handle) -> CancelResponse:
        with self._goals_lock:
            job = self._goals.get(bytes(goal_handle.goal_id.uuid))
        if job is not None:
            job.cancel()  # a queued command is dropped at once; a running one stops at its next stage
        return CancelResponse.ACCEPT

    def _execute_goal(self, goal_handle):
        goal = goal_handle.request
        key = bytes(goal_handle.goal_id.uuid)
        with self._in_flight_done:
            self._in_flight += 1
        try:

            def feedback(stage: Stage, text: str) -> None:
                goal_handle.publish_feedback(SegmentAction.Feedback(stage=str(stage.value), partial_answer=text))

            job = self._submit(
                goal.command, image=self._request_frame(goal), reset=goal.reset_conversation, on_progress=feedback
            )
            if job.accepted:
                with self._goals_lock:
                    self._goals[key] = job
                if goal_handle.is_cancel_requested:  # canceled before the job was registered
                    job.cancel()
            result = job.wait()
            with self._goals_lock:
                self._goals.pop(key, None)
            if result.canceled:
                # The cancel callback ran, but the goal turns CANCELING only once it has returned.
                deadline = time.monotonic() + 5.0
                while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
                    time.sleep(0.005)
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
            elif not job.accepted or result.canceled:
                goal_handle.abort()  # refused (not active, queue full): the result says why
            else:
                goal_handle.succeed()  # answered, or an error result saying what was wrong with the goal
            return SegmentAction.Result(result=messages.result_to_msg(result))
        finally:
            self._end_call()

    def _end_call(self) -> None:
        with self._in_flight_done:
            self._in_flight -= 1
            self._in_flight_done.notify_all()

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        ours = [parameter for parameter in parameters if parameter.name in _NAMES]  # not use_sim_time, ...
        for parameter in ours:
            try:
                validate(parameter.name, parameter.value)
            except ValueError as error:
                return SetParametersResult(successful=False, reason=str(error))
        pipeline = self._pipeline
        for parameter in ours:
            if parameter.name not in LIVE:
                if pipeline is not None:
                    self.get_logger().info(f"{parameter.name} takes effect at the next configure/activate")
                continue
            if pipeline is None or parameter.name in ("publish_overlay", "depth_scale"):  # read when used
                continue
            value = validate(parameter.name, parameter.value)
            if parameter.name == "max_new_tokens":
                pipeline.predictor.max_new_tokens = value
            elif parameter.name in TRACKING:
                values = {name: self._param(name) for name in TRACKING}
                values[parameter.name] = value
                pipeline.tracker.settings = tracking_settings(values)
            else:
                setattr(pipeline, parameter.name, value)
        return SetParametersResult(successful=True)

    # --- outputs ---------------------------------------------------------------------
    def _publish(self, result: Result) -> None:
        """Publish a result on result (every command's), and its explanation, mask, overlay and 3D outputs."""
        with self._ids_lock:
            self._stats["answered"] += 1
            self._stats["last_total_s"] = result.timings.get("total", 0.0)
            if result.status == Status.ERROR:
                self._stats["errors"] += 1
                self._stats["last_error"] = result.error
        # Which messages a result gets (and their content) is lisa_ros.runtime.message_fields'
        # decision, shared with the bag evaluator.
        overlay = self._param("publish_overlay")
        self._send(lambda: messages.result_messages(result, overlay), f"the result of command {result.command_id}")

    def _publish_tracking(self, update: TrackingUpdate) -> None:
        """Publish a tracked image's targets, mask, overlay and 3D outputs (or an event's targets)."""
        with self._ids_lock:
            if update.image is not None:
                self._tracking["frames"] += 1
                self._tracking["last_total_s"] = update.timings.get("total", 0.0)
            self._tracking["targets"] = ", ".join(f"{t.target_id} {t.status.name.lower()}" for t in update.targets)
        overlay = self._param("publish_overlay")
        self._send(lambda: messages.tracking_messages(update, overlay), "the tracked targets")

    def _send(self, build_messages, what: str) -> None:
        """Publish the (output name, message) pairs `build_messages()` returns, while configured."""
        publishers = self._outputs
        if not publishers:
            return
        try:
            for name, msg in build_messages():
                publishers[name].publish(msg)
        except Exception as error:  # e.g. a publisher destroyed by a concurrent cleanup
            self.get_logger().error(f"cannot publish {what}: {error}")

    def _tracking_rate(self) -> float:
        """Tracked images per second since the last call (one diagnostics period)."""
        with self._ids_lock:
            now = time.monotonic()
            elapsed = now - self._tracking["since"]
            rate = self._tracking["frames"] / elapsed if elapsed > 0 else 0.0
            self._tracking["frames"], self._tracking["since"] = 0, now
            return rate

    def _publish_diagnostics(self) -> None:
        publisher = self._outputs.get("diagnostics")
        worker, pipeline = self._worker, self._pipeline
        if publisher is None or worker is None or pipeline is None:
            return
        pending = worker.pending()
        queue_size = self._param("queue_size")
        frame = pipeline.latest_frame
        image_age = f"{(self._now() - frame.stamp) / 1e9:.3f}" if frame is not None else "no image yet"
        if frame is None:
            level, message = DiagnosticStatus.WARN, "no image received yet"
        elif pending >= queue_size:
            level, message = DiagnosticStatus.WARN, "command queue full"
        else:
            level, message = DiagnosticStatus.OK, "ready"
        model = self._param("model_path") or "built-in demo model"
        device = str(getattr(pipeline.predictor.model, "device", "?"))
        values = {
            "model": model,
            "commands_waiting": pending,
            "queue_size": queue_size,
            "commands_answered": self._stats["answered"],
            "errors": self._stats["errors"],
            "last_error": self._stats["last_error"],
            "last_total_seconds": f"{self._stats['last_total_s']:.3f}",
            "image_age_seconds": image_age,
            "tracking_rate_hz": f"{self._tracking_rate():.2f}",
            "tracking_last_seconds": f"{self._tracking['last_total_s']:.3f}",
            "live_targets": ", ".join(str(t.target_id) for t in pipeline.tracker.targets) or "none",
            "last_target_statuses": self._tracking["targets"],
            "images_tracked": pipeline.tracker.frames_tracked,
            "images_skipped_while_tracking": pipeline.tracker.frames_skipped,
        }
        name = f"{self.get_fully_qualified_name()}: LISA segmentation"
        publisher.publish(
            messages.diagnostics_msg(name, device, self.get_clock().now().to_msg(), level, message, values)
        )


def main(args=None) -> int:
    """Run lisa_node: configure and activate itself, then spin until shut down."""
    rclpy.init(args=args)
    node = LisaNode()
    executor = MultiThreadedExecutor(num_threads=8)
    executor.add_node(node)
    try:
        start = time.perf_counter()
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
            node.get_logger().info(f"ready in {time.perf_counter() - start:.1f} s")
        else:
            node.get_logger().error(
                "configure failed; the node stays unconfigured (fix the parameters and configure it again)"
            )
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.on_shutdown(None)
        except Exception as error:  # shutting down anyway
            print(f"lisa_node: shutdown: {error}", file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
