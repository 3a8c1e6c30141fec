"""lisa_node's outputs: the publishers, their QoS, and what each result and tracked image publishes.

Durability as RViz and robot code expect it:

- result, early_result, explanation: reliable, keep all, volatile. Every command's answer
  (and each of its early results, published before it) reaches every live subscriber, in
  order, also under a burst.
- markers, targets, target_cloud, detections, detections_3d: reliable, keep last 1,
  transient local ("latched"). The current state: a display or node that starts later
  gets the latest at once.
- mask, overlay, mask/compressed, overlay/compressed: reliable, keep last 5, volatile. Image
  streams, as camera drivers publish them (best-effort subscribers match too).
- /diagnostics: reliable, keep last 10, volatile (the diagnostic_aggregator convention).

A transient-local publisher matches volatile and transient-local subscribers alike; the
result stays volatile because a history for late joiners would either drop results of a
burst (keep last) or grow without bound (keep all): late joiners read the latest state on
targets and markers.
"""

from __future__ import annotations

import statistics
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from ..runtime.tracking import TrackingUpdate
from ..runtime.types import Result, Status
from . import messages

FLUSH_TIMEOUT = 5.0  # seconds to wait for subscribers to acknowledge the last results on shutdown
LATENCY_WINDOW = 100  # answers the diagnostics' medians are taken over


def sensor_qos(reliable: bool) -> QoSProfile:
    """Input QoS: sensor data (best effort, newest message only), or reliable."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def every_message_qos() -> QoSProfile:
    """Reliable and keep-all: for commands and results, where every message must arrive.

    A keep-last reader history overwrites commands the executor has not taken yet under a
    burst, before the node could answer them; keep-all makes the writer wait instead, and
    the node's own queue answers overflow with an error result.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE
    )


def latched_qos() -> QoSProfile:
    """The latest message kept for subscribers that join later (RViz's 'Transient Local')."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def stream_qos(depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


# output name -> (message class, QoS profile factory); topics are the names, relative to the namespace.
OUTPUTS = {
    "result": (messages.MESSAGE_CLASSES["result"], every_message_qos),
    "early_result": (messages.MESSAGE_CLASSES["result"], every_message_qos),
    "explanation": (messages.MESSAGE_CLASSES["explanation"], every_message_qos),
    "mask": (messages.MESSAGE_CLASSES["mask"], lambda: stream_qos(5)),
    "overlay": (messages.MESSAGE_CLASSES["overlay"], lambda: stream_qos(5)),
    "targets": (messages.MESSAGE_CLASSES["targets"], latched_qos),
    "target_cloud": (messages.MESSAGE_CLASSES["target_cloud"], latched_qos),
    "markers": (messages.MESSAGE_CLASSES["markers"], latched_qos),
    "diagnostics": (DiagnosticArray, lambda: stream_qos(10)),
}
TOPICS = {"diagnostics": "/diagnostics"}
COMPRESSED = {
    "mask/compressed": (CompressedImage, lambda: stream_qos(5)),
    "overlay/compressed": (CompressedImage, lambda: stream_qos(5)),
}


class NodeOutputs:
    """The lifecycle publishers of one LisaNode (created on configure, enabled while active) and
    what it publishes; `stats` counts the answers and tracked images for the diagnostics.
    `checks` (lisa_ros.node.self_checks.SelfChecks): hears of incompatible subscribers, and
    its findings and input counts go into the diagnostics."""

    def __init__(self, node, checks):
        self.node = node
        self.checks = checks
        self.publishers = {}
        self.detection_classes = None  # vision_msgs classes while they are published
        self.stats = {"answered": 0, "errors": 0, "last_total_s": 0.0, "last_first_mask_s": None, "last_error": ""}
        # Seconds from the start of an answer to its end and to its first mask, over the recent answers.
        self.latency = {"total": deque(maxlen=LATENCY_WINDOW), "first_mask": deque(maxlen=LATENCY_WINDOW)}
        self.warm_up_s = 0.0
        self.tracking = {"frames": 0, "last_total_s": 0.0, "since": time.monotonic(), "targets": ""}

    def create(self) -> None:
        """Create the publishers; the optional ones (vision_msgs, compressed images) as configured."""
        outputs = dict(OUTPUTS)
        self.detection_classes = messages.vision_msgs_classes()
        if self.detection_classes is None:
            self.node.get_logger().info(messages.VISION_MSGS_MISSING)
        else:
            outputs.update({name: (cls, latched_qos) for name, cls in self.detection_classes.items()})
        if self.node.get_parameter("publish_compressed").value:
            outputs.update(COMPRESSED)
        for name, (cls, make_qos) in outputs.items():
            topic, qos = TOPICS.get(name, name), make_qos()
            events = self.checks.publisher_events(self.node.resolve_topic_name(topic), qos)
            self.publishers[name] = self.node.create_lifecycle_publisher(cls, topic, qos, event_callbacks=events)

    def destroy(self) -> None:
        for publisher in self.publishers.values():
            self.node.destroy_lifecycle_publisher(publisher)
        self.publishers = {}

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until reliable subscribers have every result (before the publishers go)."""
        publisher = self.publishers.get("result")
        return publisher is None or publisher.wait_for_all_acked(Duration(seconds=timeout))

    # --- results and tracked images -----------------------------------------------------
    def result(self, result: Result) -> None:
        """Publish a result on result (every command's), and its explanation, mask, overlay and 3D outputs."""
        stats = self.stats
        stats["answered"] += 1
        stats["last_total_s"] = result.timings.get("total", 0.0)
        if result.status == Status.ERROR:
            stats["errors"] += 1
            stats["last_error"] = result.error
        else:
            self.latency["total"].append(stats["last_total_s"])
        if "first_mask" in result.timings:
            stats["last_first_mask_s"] = result.timings["first_mask"]
            self.latency["first_mask"].append(stats["last_first_mask_s"])
        # Which messages a result gets (and their content) is lisa_ros.runtime.message_fields'
        # decision, shared with the bag evaluator.
        overlay = self.node.get_parameter("publish_overlay").value

        def build():
            built = messages.result_messages(result, overlay)
            return built + self._extra(built, lambda classes: messages.detection_messages(result, classes))

        self._send(build, f"the result of command {result.command_id}")

    def early(self, result: Result) -> None:
        """Publish an early result (a [SEG]'s mask the moment it is generated) on early_result."""

        def build():
            return [("early_result", messages.result_to_msg(result))]

        self._send(build, f"an early result of command {result.command_id}")

    def tracked(self, update: TrackingUpdate) -> None:
        """Publish a tracked image's targets, mask, overlay and 3D outputs (or an event's targets)."""
        if update.image is not None:
            self.tracking["frames"] += 1
            self.tracking["last_total_s"] = update.timings.get("total", 0.0)
        self.tracking["targets"] = ", ".join(f"{t.target_id} {t.status.name.lower()}" for t in update.targets)
        overlay = self.node.get_parameter("publish_overlay").value

        def build():
            built = messages.tracking_messages(update, overlay)
            return built + self._extra(built, lambda classes: messages.tracking_detection_messages(update, classes))

        self._send(build, "the tracked targets")

    def _extra(self, built, detections) -> list:
        """The optional outputs of messages `built`: compressed images and vision_msgs detections."""
        extra = []
        if "mask/compressed" in self.publishers:
            extra += messages.compressed_messages(built)
        if self.detection_classes is not None:
            extra += detections(self.detection_classes)
        return extra

    def _send(self, build_messages, what: str) -> None:
        """Publish the (output name, message) pairs `build_messages()` returns, while configured."""
        publishers = self.publishers
        if not publishers:
            return
        try:
            for name, msg in build_messages():
                publishers[name].publish(msg)
        except Exception as error:  # e.g. a publisher destroyed by a concurrent cleanup
            self.node.get_logger().error(f"cannot publish {what}: {error}")

    # --- diagnostics ----------------------------------------------------------------------
    def tracking_rate(self) -> float:
        """Tracked images per second since the last call (one diagnostics period)."""
        now = time.monotonic()
        elapsed = now - self.tracking["since"]
        rate = self.tracking["frames"] / elapsed if elapsed > 0 else 0.0
        self.tracking["frames"], self.tracking["since"] = 0, now
        return rate

    def diagnostics(self, worker, pipeline, now_ns: int) -> None:
        publisher = self.publishers.get("diagnostics")
        if publisher is None or worker is None or pipeline is None:
            return
        node = self.node
        pending = worker.pending()
        queue_size = node.get_parameter("queue_size").value
        frame = pipeline.latest_frame
        image_age = f"{(now_ns - frame.stamp) / 1e9:.3f}" if frame is not None else "no image yet"
        findings = self.checks.diagnostic_values()
        if frame is None:
            level, message = DiagnosticStatus.WARN, "no image received yet"
        elif pending >= queue_size:
            level, message = DiagnosticStatus.WARN, "command queue full"
        elif findings:
            level, message = DiagnosticStatus.WARN, "set-up problems: see the self_check values"
        else:
            level, message = DiagnosticStatus.OK, "ready"
        model = node.get_parameter("model_path").value or "built-in demo model"
        device = str(getattr(pipeline.predictor.model, "device", "?"))
        values = {
            "model": model,
            "session_id": node.session_id,
            "commands_waiting": pending,
            "queue_size": queue_size,
            "commands_answered": self.stats["answered"],
            "errors": self.stats["errors"],
            "last_error": self.stats["last_error"],
            "last_total_seconds": f"{self.stats['last_total_s']:.3f}",
            "median_total_seconds": _median(self.latency["total"]),
            "last_first_mask_seconds": _seconds(self.stats["last_first_mask_s"]),
            "median_first_mask_seconds": _median(self.latency["first_mask"]),
            "images_pre_encoded": pipeline.pre_encoded,
            "last_pre_encode_seconds": f"{pipeline.last_pre_encode_s:.3f}",
            "warm_up_seconds": f"{self.warm_up_s:.3f}",
            "image_age_seconds": image_age,
            "tracking_rate_hz": f"{self.tracking_rate():.2f}",
            "tracking_last_seconds": f"{self.tracking['last_total_s']:.3f}",
            "live_targets": ", ".join(str(t.target_id) for t in pipeline.tracker.targets) or "none",
            "last_target_statuses": self.tracking["targets"],
            "images_tracked": pipeline.tracker.frames_tracked,
            "images_skipped_while_tracking": pipeline.tracker.frames_skipped,
            "inputs_received": self.checks.received(),
            **findings,
        }
        name = f"{node.get_fully_qualified_name()}: LISA segmentation"
        stamp = node.get_clock().now().to_msg()
        publisher.publish(messages.diagnostics_msg(name, device, stamp, level, message, values))


def _seconds(value: float | None) -> str:
    return "none yet" if value is None else f"{value:.3f}"


def _median(values) -> str:
    return _seconds(statistics.median(values) if values else None)
