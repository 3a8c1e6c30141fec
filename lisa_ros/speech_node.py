"""`speech_node`: voice commands, a thin lifecycle adapter around lisa_ros.speech.

Configure builds the recogniser (pocketsphinx with a language model from the expected
commands, or Whisper from a model folder) and the publishers; activate starts the audio
source (a WAV/FLAC file or folder, or the default microphone) on a thread that splits it
into utterances, recognises each and publishes a `lisa_ros/Transcript` on `transcript`
and, when it is sent, the text as `std_msgs/String` on `command` (the perception node's
input, unchanged). While `mute` (std_msgs/Bool) is true, e.g. while the robot speaks,
utterances are dropped (reported with reason "muted"), so the robot never commands itself.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time

import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String

from .msg import Transcript as TranscriptMsg

NODE_NAME = "speech"
# Seconds a file source waits for a subscriber of `command` before it plays.
FILE_WAIT_S = 10.0
# name, default, description (the node's parameters, declared once)
PARAMETERS = (
    ("source", "microphone", "audio source: 'microphone' (the default PortAudio device) or 'file' (audio_path)"),
    ("audio_path", "", "a WAV/FLAC file or a folder of them, with source 'file' (replay, tests)"),
    ("engine", "pocketsphinx", "'pocketsphinx' (embedded, no download) or 'whisper' (whisper_model_path)"),
    ("whisper_model_path", "", "a Whisper model folder (transformers), with engine 'whisper'"),
    ("sentences_file", "", "pocketsphinx: the expected commands, one per line; empty: the demo's vocabulary"),
    ("min_confidence", 0.3, "transcripts with a lower confidence are not sent as commands"),
    ("vad_aggressiveness", 2, "webrtcvad aggressiveness, 0 (keeps most) to 3 (drops most non-speech)"),
    ("max_utterance_s", 15.0, "longer speech is cut into an utterance of this length"),
)


def every_message_qos() -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE
    )


def stamp_after(start: Time, seconds: float) -> Time:
    """`start` + `seconds` as a builtin_interfaces/Time."""
    nanoseconds = start.sec * 10**9 + start.nanosec + round(seconds * 1e9)
    return Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9)


class SpeechNode(LifecycleNode):
    """Audio in, commands and transcripts out."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        for name, default, description in PARAMETERS:
            self.declare_parameter(name, default)
        self._recognizer = None
        self._outputs = {}
        self._mute_subscription = None
        self._muted = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _param(self, name: str):
        return self.get_parameter(name).value

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from .speech import PocketSphinxRecognizer, WhisperRecognizer

        try:
            if self._param("engine") == "whisper":
                self._recognizer = WhisperRecognizer(self._param("whisper_model_path"))
            elif self._param("engine") == "pocketsphinx":
                sentences = self._param("sentences_file") or None
                self._recognizer = PocketSphinxRecognizer(sentences_file=sentences)
            else:
                raise ValueError(f"engine must be 'pocketsphinx' or 'whisper', got {self._param('engine')!r}")
        except Exception as error:  # a missing model, words without pronunciation, ...
            self.get_logger().error(f"cannot build the recogniser: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        publish = self.create_lifecycle_publisher
        self._outputs = {
            "command": publish(String, "command", every_message_qos()),
            "transcript": publish(TranscriptMsg, "transcript", every_message_qos()),
        }
        self.get_logger().info(f"configured: {self._param('engine')}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from .speech import AudioError, FileSource, MicrophoneSource

        try:
            if self._param("source") == "file":
                source = FileSource(self._param("audio_path"))
            elif self._param("source") == "microphone":
                source = MicrophoneSource()
                source.start()
            else:
                raise ValueError(f"source must be 'microphone' or 'file', got {self._param('source')!r}")
        except (AudioError, ValueError, OSError) as error:  # no microphone, unreadable file, ...
            self.get_logger().error(f"cannot open the audio source: {error}")
            return TransitionCallbackReturn.FAILURE
        self._mute_subscription = self.create_subscription(Bool, "mute", self._on_mute, every_message_qos())
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, args=(source,), name="speech", daemon=True)
        self._thread.start()
        self.get_logger().info(f"listening ({self._param('source')})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs, self._recognizer = {}, None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt()
        return TransitionCallbackReturn.SUCCESS

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self._mute_subscription is not None:
            self.destroy_subscription(self._mute_subscription)
            self._mute_subscription = None

    def _on_mute(self, msg: Bool) -> None:
        self._muted = bool(msg.data)

    def _listen(self, source) -> None:
        """The audio thread: utterances -> transcripts -> commands, until stopped or the source ends."""
        from .speech import FileSource, UtteranceSegmenter, decide

        segmenter = UtteranceSegmenter(
            aggressiveness=int(self._param("vad_aggressiveness")), max_utterance_s=float(self._param("max_utterance_s"))
        )
        if isinstance(source, FileSource):  # a replay: let the command's subscribers connect first
            deadline = time.monotonic() + FILE_WAIT_S
            while self._outputs["command"].get_subscription_count() == 0 and time.monotonic() < deadline:
                if self._stop.wait(0.05):
                    return
        started = self.get_clock().now().to_msg()
        try:
            frames = itertools.takewhile(lambda _: not self._stop.is_set(), source)
            for utterance in segmenter.segment(frames):
                self._hear(utterance, started, decide)
        except Exception as error:  # a failing device or engine must not end the node silently
            self.get_logger().error(f"listening stopped: {type(error).__name__}: {error}")
        finally:
            stop = getattr(source, "stop", None)
            if stop is not None:
                stop()

    def _hear(self, utterance, started: Time, decide) -> None:
        msg = TranscriptMsg()
        msg.utterance_start = stamp_after(started, utterance.start_s)
        msg.utterance_end = stamp_after(started, utterance.end_s)
        msg.header.stamp = msg.utterance_end
        if self._muted:
            msg.sent, msg.reason = False, "muted"
        else:
            transcript = self._recognizer.recognize(utterance.audio)
            decision = decide(transcript, float(self._param("min_confidence")))
            msg.text, msg.confidence = transcript.text, transcript.confidence
            msg.recognition_seconds = transcript.seconds
            cut = "" if utterance.reason == "silence" else utterance.reason  # max_length, end_of_stream
            msg.sent, msg.reason = decision.send, decision.reason or cut
            if decision.send:
                self._outputs["command"].publish(String(data=transcript.text))
        self._outputs["transcript"].publish(msg)
        self.get_logger().info(f"heard {msg.text!r} ({msg.confidence:.2f}): {'sent' if msg.sent else msg.reason}")


def main(args=None) -> int:
    """Run speech_node: configure and activate itself, then spin until shut down."""
    rclpy.init(args=args)
    node = SpeechNode()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.on_shutdown(None)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
