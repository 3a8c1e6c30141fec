"""LisaNode: the LISA lifecycle node, a thin ROS adapter around lisa_ros.runtime.

The node never changes its own lifecycle state: whoever starts it (the launch file's
`autostart`, a lifecycle manager, `ros2 lifecycle set`) configures and activates it.
Configure loads the model (or shares the one a node of another camera in this process
loaded), runs every stage once (the warm-up: the first command is not slower than the
later ones) and creates the lifecycle publishers; activate starts the subscriptions, the
`segment` service and action, `reset_conversation` and `~/clear`, and enables the
publishers; deactivate and shutdown answer every command that reached the node (the
running one is finished, the queued ones and those still in the command topic's reader
get an error result) before the inputs go; cleanup frees the model.
"""

from __future__ import annotations

import threading
import time
import uuid

from geometry_msgs.msg import PoseStamped
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.service import Service
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..action import Segment as SegmentAction
from ..runtime.inputs import PipelineInputs
from ..runtime.message_fields import frame_from_msg
from ..runtime.parameters import PARAMETERS
from ..runtime.pipeline import Pipeline, command_error
from ..runtime.shared_models import ModelRegistry
from ..runtime.types import Result, Stage, Status, error_result
from ..runtime.worker import DEACTIVATED, STOPPED, CommandWorker, Job
from ..srv import Segment as SegmentService
from . import messages, poses
from .outputs import NodeOutputs, every_message_qos, sensor_qos
from .parameters import apply_parameters, declare_parameters
from .self_checks import SelfChecks

NODE_NAME = "lisa"
CLOSE_TIMEOUT = 60.0  # seconds deactivate/shutdown wait for the running command and the calls in flight


class LisaNode(LifecycleNode):
    """Answers commands about the newest camera image with LISA: text and masks.

    Arguments:
        node_name (str): the node's name.
        models (ModelRegistry | None): loaded models shared with the other nodes of this
            process (one per camera); None: its own.
        **kwargs: as rclpy's Node (namespace, context, ...).
    """

    def __init__(self, node_name: str = NODE_NAME, models: ModelRegistry | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.add_on_set_parameters_callback(lambda parameters: apply_parameters(self, self._pipeline, parameters))
        self.session_id = str(uuid.uuid4())  # command ids restart with each run: this tells runs apart
        self._models = models or ModelRegistry()
        self._group = ReentrantCallbackGroup()
        self._pipeline: Pipeline | None = None
        self._worker: CommandWorker | None = None
        self._checks = SelfChecks(self)  # set-up mistakes: logged once each, kept for the diagnostics
        self._outputs = NodeOutputs(self, self._checks)
        self._inputs = []  # subscriptions, services, action server, timer: alive while active
        self._commands = None  # (command subscription, its callback group) while active
        self._refusal = "the node is not active"  # why a command is refused while not accepting
        self._accepting_commands = False  # false while closing: calls already dispatched are refused
        self._ids_lock = threading.Lock()
        self._last_id = 0
        self._outputs_lock = threading.Lock()  # results, tracked images and diagnostics come from several threads
        self._in_flight = 0  # service and action calls waiting for their result
        self._in_flight_done = threading.Condition()
        self._goals = {}  # goal id bytes -> Job, while the goal executes
        self._goals_lock = threading.Lock()
        self._tf_listener = None  # tf2_ros.TransformListener while active (when tf2 is used)
        self.transition_lock = threading.Lock()  # held during each transition (process shutdown waits on it)

    def _param(self, name: str):
        return self.get_parameter(name).value

    # --- lifecycle -------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self.transition_lock:
            params = {spec.name: self._param(spec.name) for spec in PARAMETERS}
            try:
                self._pipeline = Pipeline.from_parameters(params, logger=self.get_logger(), models=self._models)
            except Exception as error:  # bad parameter, missing checkpoint, no GPU, ...
                self.get_logger().error(f"cannot load the model: {type(error).__name__}: {error}")
                self._pipeline = None
                return TransitionCallbackReturn.FAILURE
            try:
                self._worker = CommandWorker(
                    self._pipeline, queue_size=params["queue_size"], logger=self.get_logger(), on_track=self._tracked
                )
                self._outputs.create()
            except Exception as error:
                self.get_logger().error(f"cannot create the publishers: {type(error).__name__}: {error}")
                self._release()
                return TransitionCallbackReturn.FAILURE
            try:
                with self._pipeline.model_lock:
                    timings = self._pipeline.warm_up()
            except Exception as error:
                self.get_logger().error(f"the model failed its warm-up: {type(error).__name__}: {error}")
                self._release()
                return TransitionCallbackReturn.FAILURE
            self._outputs.warm_up_s = timings["total"]
            self.get_logger().info(
                f"warmed up in {timings['total']:.2f} s "
                f"(model {timings['model_total']:.2f} s, 3D regions {timings['regions']:.3f} s)"
            )
            self.get_logger().info(f"configured (session {self.session_id})")
            return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self.transition_lock:
            try:
                image_topic = self._start_inputs()
            except Exception as error:  # e.g. an invalid topic name
                self.get_logger().error(f"cannot start the inputs: {type(error).__name__}: {error}")
                self._destroy_inputs()
                return TransitionCallbackReturn.FAILURE
            self._accepting_commands = True
            command_topic = self.resolve_topic_name("command")
            self.get_logger().info(f"active: images on {image_topic}, commands on {command_topic}")
            return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self.transition_lock:
            self._close_inputs(DEACTIVATED)
            self.get_logger().info("inactive")
            return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self.transition_lock:
            self._release()
            self.get_logger().info("cleaned up: model released")
            return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self.transition_lock:
            self._close_inputs(STOPPED)
            self._release()
            return TransitionCallbackReturn.SUCCESS

    def _start_inputs(self) -> str:
        """Create the subscriptions, services, action server and timer; returns the image topic."""
        compressed = self._param("use_compressed_image")
        inputs = PipelineInputs(self._pipeline, depth_scale=lambda: self._param("depth_scale"), compressed=compressed)
        qos = sensor_qos(self._param("reliable_inputs"))
        group, checks = self._group, self._checks
        add = self._inputs.append  # one by one: a failure destroys what was created

        def feed(role):
            def callback(msg):
                now = self._now()
                checks.observe(role, msg, now)
                inputs.feed(role, msg, now)
                # Track the live targets on the newest frame when the worker is free (a frame
                # waiting for its depth or camera_info is tracked once they arrive).
                self._worker.frame_arrived()

            return callback

        # image_transport's names: raw images on `image`, compressed ones on `image/compressed`.
        image_topic = "image/compressed" if compressed else "image"
        add(self.create_subscription(CompressedImage if compressed else Image, image_topic, feed("image"), qos,
                                     callback_group=group))  # fmt: skip
        add(self.create_subscription(Image, "depth", feed("depth"), qos, callback_group=group))
        add(self.create_subscription(CameraInfo, "camera_info", feed("camera_info"), qos, callback_group=group))
        if self._param("use_pose_topic"):
            add(self.create_subscription(PoseStamped, "camera_pose", feed("camera_pose"), qos, callback_group=group))
        # Commands are not sensor data: every one must reach the node's own queue, in the order
        # they came (their own mutually exclusive group: the executor's threads could reorder them).
        in_order = MutuallyExclusiveCallbackGroup()
        command = self.create_subscription(String, "command", self._on_command, every_message_qos(),
                                           callback_group=in_order)  # fmt: skip
        add(command)
        self._commands = (command, in_order)
        add(self.create_service(SegmentService, "segment", self._on_segment, callback_group=group))
        add(self.create_service(Trigger, "reset_conversation", self._on_reset, callback_group=group))
        add(self.create_service(Trigger, "~/clear", self._on_clear, callback_group=group))
        add(
            ActionServer(
                self,
                SegmentAction,
                "segment",
                self._execute_goal,
                goal_callback=self._on_goal,
                cancel_callback=self._on_cancel,
                callback_group=group,
            )
        )
        add(self.create_timer(1.0, self._publish_diagnostics, callback_group=group))
        self._tf_listener = poses.start(self, self._pipeline.lifter, checks)
        return self.resolve_topic_name(image_topic)

    def _close_inputs(self, reason: str) -> None:
        """Stop taking commands and answer every one that reached the node, then destroy the inputs.

        The commands still in the command topic's reader and the queued ones get an ERROR result
        saying `reason`; the running one is finished (canceled when the node stops); service and
        action calls get their result.
        """
        self._refusal, self._accepting_commands = reason, False
        self._drain_commands()
        if self._worker is not None:
            self._worker.drop_queued(reason, timeout=CLOSE_TIMEOUT, cancel_running=reason == STOPPED)
        # Let service and action calls already accepted get their result before their servers go.
        with self._in_flight_done:
            if not self._in_flight_done.wait_for(lambda: self._in_flight == 0, timeout=CLOSE_TIMEOUT):
                self.get_logger().warning(f"{self._in_flight} service/action calls still waiting; closing anyway")
        self._destroy_inputs()
        if not self._outputs.flush():
            self.get_logger().warning("a subscriber did not acknowledge the last results")

    def _drain_commands(self) -> None:
        """Take the commands the executor has not taken yet and refuse each (with an error result),
        then destroy the command subscription: none is lost with it."""
        if self._commands is None:
            return
        subscription, group = self._commands
        self._commands = None
        deadline = time.monotonic() + CLOSE_TIMEOUT
        # Hold the subscription's (mutually exclusive) group: no command callback runs meanwhile,
        # and none starts for this subscription before it is destroyed.
        while not group.beginning_execution(subscription):
            if time.monotonic() > deadline:
                self.get_logger().warning("a command callback did not finish; closing anyway")
                break
            time.sleep(0.001)
        else:
            try:
                while True:
                    with subscription.handle:
                        taken = subscription.handle.take_message(subscription.msg_type, subscription.raw)
                    if taken is None:
                        break
                    self._on_command(taken[0])
                self._inputs.remove(subscription)
                self.destroy_subscription(subscription)
            finally:
                group.ending_execution(subscription)

    def _destroy_inputs(self) -> None:
        if self._tf_listener is not None:
            poses.stop(self, self._tf_listener, self._pipeline.lifter if self._pipeline is not None else None)
            self._tf_listener = None
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
        self._commands = None

    def _release(self) -> None:
        if self._worker is not None:
            self._worker.stop()  # queued commands get an error result; the running one finishes
            self._worker = None
        self._outputs.destroy()
        if self._pipeline is not None:
            self._pipeline.close()  # the last node using the model frees it (and the CUDA cache)
            self._pipeline = None

    # --- inputs ----------------------------------------------------------------------
    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    def _next_id(self) -> int:
        with self._ids_lock:
            self._last_id += 1
            return self._last_id

    def _submit(
        self, command: str, image=None, reset: bool = False, on_progress=None, on_early=None, on_text=None
    ) -> Job:
        """Queue a command; its early results and its result are published as they come. Returns
        its Job (already done, with an error result, when the node is not active or the queue is full).
        on_early (callable(Result)) gets each early result after it is published; on_text the text."""
        command_id, stamp = self._next_id(), self._now()
        worker = self._worker
        if worker is None or not self._accepting_commands:
            self.get_logger().warning(f"command {command_id} refused: {self._refusal}")
            return Job.rejected(error_result(command_id, command, stamp, self._refusal), self._publish)

        def early(result: Result) -> None:
            self._publish_early(result)
            if on_early is not None:
                on_early(result)

        return worker.submit(
            command_id,
            command,
            stamp,
            image=image,
            reset=reset,
            on_result=self._publish,
            on_progress=on_progress,
            on_early=early,
            on_text=on_text,
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
            self._tracked(update)
            response.success, response.message = True, f"{len(update.targets)} live targets ended"
            self.get_logger().info(response.message)
        return response

    def _on_goal(self, goal) -> GoalResponse:
        """Reject a goal whose command cannot be answered (empty, too long) before it is queued."""
        problem = command_error(goal.command, self._param("max_command_length"))
        if problem:
            self.get_logger().warning(f"goal rejected: {problem}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

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
            streamed = []  # the answer's text so far

            def feedback(stage: Stage, text: str, early: Result | None = None) -> None:
                message = SegmentAction.Feedback(stage=str(stage.value), partial_answer=text)
                if early is not None:
                    message.early_result = messages.result_to_msg(early)
                goal_handle.publish_feedback(message)

            def text_arrived(text: str) -> None:
                streamed.append(text)
                feedback(Stage.GENERATING, "".join(streamed))

            job = self._submit(
                goal.command,
                image=self._request_frame(goal),
                reset=goal.reset_conversation,
                on_progress=feedback,
                on_early=lambda result: feedback(Stage.MASK, result.answer, result),
                on_text=text_arrived,
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
            elif result.status == Status.ERROR:
                goal_handle.abort()  # not answered (refused, no image, invalid image, ...): the result says why
            else:
                goal_handle.succeed()
            return SegmentAction.Result(result=messages.result_to_msg(result))
        finally:
            self._end_call()

    def _end_call(self) -> None:
        with self._in_flight_done:
            self._in_flight -= 1
            self._in_flight_done.notify_all()

    # --- outputs ---------------------------------------------------------------------
    def _publish(self, result: Result) -> None:
        result.session_id = self.session_id
        with self._outputs_lock:
            self._outputs.result(result)

    def _publish_early(self, result: Result) -> None:
        result.session_id = self.session_id
        with self._outputs_lock:
            self._outputs.early(result)

    def _tracked(self, update) -> None:
        with self._outputs_lock:
            self._outputs.tracked(update)

    def _publish_diagnostics(self) -> None:
        with self._outputs_lock:
            self._outputs.diagnostics(self._worker, self._pipeline, self._now())
