"""`speech_node`: voice commands, a thin lifecycle adapter around lisa_ros.speech.

Configure builds the recogniser (pocketsphinx with a language model from the expected
commands, or Whisper from a model folder) and the publishers; activate starts the source:
an audio file or folder, the default microphone, an `audio` topic (audio_common_msgs, when
installed), or the transcripts of another speech stack on `heard` (`transcript_type`). Each
utterance becomes a `lisa_ros/Transcript` on `transcript` and, when sent, its text a
`std_msgs/String` on `command` (the perception node's input, unchanged). While `mute`
(std_msgs/Bool) is true, e.g. while the robot speaks, nothing heard is sent (reason
"muted"), so the robot never commands itself. The node never changes its own lifecycle
state: the launch file (autostart) or a lifecycle manager does.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import threading
import time

import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import Bool, String

from ..msg import Transcript as TranscriptMsg

NODE_NAME = "speech"
# Seconds a file source waits for a subscriber of `command` before it plays.
FILE_WAIT_S = 10.0
SOURCES = ("microphone", "file", "topic", "transcripts")
AUDIO_TYPES = ("audio_common_msgs/msg/AudioData", "audio_common_msgs/msg/AudioDataStamped",
               "audio_common_msgs/msg/AudioStamped")  # fmt: skip
# name, default, description (the node's parameters, declared once)
PARAMETERS = (
    ("source", "microphone", "'microphone' (the default PortAudio device), 'file' (audio_path), 'topic' "
     "(audio_common_msgs on `audio`) or 'transcripts' (another speech stack's results on `heard`)"),
    ("audio_path", "", "a WAV/FLAC file or a folder of them, with source 'file' (replay, tests)"),
    ("audio_type", AUDIO_TYPES[0], "the `audio` topic's type with source 'topic': " + ", ".join(AUDIO_TYPES)),
    ("audio_rate", 16000, "sample rate (Hz) of `audio` messages that do not carry it (AudioData, AudioDataStamped)"),
    ("audio_channels", 1, "channels of `audio` messages that do not carry them"),
    ("transcript_type", "hri_msgs/msg/LiveSpeech", "the `heard` topic's type with source 'transcripts': "
     "hri_msgs/msg/LiveSpeech, whisper_msgs/msg/Transcription or whisper_idl/msg/AudioTranscript"),
    ("engine", "pocketsphinx", "'pocketsphinx' (embedded, no download) or 'whisper' (whisper_model_path)"),
    ("whisper_model_path", "", "a Whisper model folder (transformers), with engine 'whisper'"),
    ("sentences_file", "", "pocketsphinx: the expected commands, one per line; empty: the demo's vocabulary"),
    ("acoustic_model", "", "pocketsphinx: an acoustic model folder, e.g. one lisa-adapt-speech fitted to the "
     "robot's voices; empty: the en-us model of the pocketsphinx wheel"),
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
    """Audio (or another stack's transcripts) in, commands and transcripts out."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        for name, default, description in PARAMETERS:
            self.declare_parameter(name, default)
        self._listener = None
        self._outputs = {}
        self._inputs = []  # subscriptions made at activation
        self._mute_subscription = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started: Time | None = None

    def _param(self, name: str):
        return self.get_parameter(name).value

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from ..speech import Listener

        try:
            if self._param("source") not in SOURCES:
                raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self._param('source')!r}")
            recognizer = None if self._param("source") == "transcripts" else self._build_recognizer()
        except Exception as error:  # a missing model, words without pronunciation, ...
            self.get_logger().error(f"cannot build the recogniser: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        self._listener = Listener(recognizer, float(self._param("min_confidence")))
        publish = self.create_lifecycle_publisher
        self._outputs = {
            "command": publish(String, "command", every_message_qos()),
            "transcript": publish(TranscriptMsg, "transcript", every_message_qos()),
        }
        # Mute is followed from configure on: the robot may already be speaking when listening starts.
        self._mute_subscription = self.create_subscription(Bool, "mute", self._on_mute, every_message_qos())
        self.get_logger().info(f"configured: source {self._param('source')}, engine {self._param('engine')}")
        return TransitionCallbackReturn.SUCCESS

    def _build_recognizer(self):
        from ..speech import PocketSphinxRecognizer, WhisperRecognizer

        if self._param("engine") == "whisper":
            return WhisperRecognizer(self._param("whisper_model_path"))
        if self._param("engine") == "pocketsphinx":
            return PocketSphinxRecognizer(sentences_file=self._param("sentences_file") or None,
                                          hmm=self._param("acoustic_model") or None)
        raise ValueError(f"engine must be 'pocketsphinx' or 'whisper', got {self._param('engine')!r}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from ..speech import AudioError

        self._started = self.get_clock().now().to_msg()
        try:
            source = self._open_source()
        except (AudioError, ValueError, OSError, ImportError) as error:  # no microphone, unreadable file, ...
            self.get_logger().error(f"cannot open the {self._param('source')} source: {error}")
            return TransitionCallbackReturn.FAILURE
        activated = super().on_activate(state)  # the publishers first: the audio thread publishes at once
        if source is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._listen, args=(source,), name="speech", daemon=True)
            self._thread.start()
        self.get_logger().info(f"listening ({self._param('source')})")
        return activated

    def _open_source(self):
        """The audio source to read on the listening thread; None for other stacks' transcripts."""
        from ..speech import FileSource, MicrophoneSource, StreamSource, external_reader

        kind = self._param("source")
        if kind == "file":
            return FileSource(self._param("audio_path"))
        if kind == "microphone":
            source = MicrophoneSource()
            source.start()
            return source
        if kind == "topic":
            msg_type = self._import_type(self._param("audio_type"), AUDIO_TYPES)
            source = StreamSource()
            self._inputs.append(self.create_subscription(
                msg_type, "audio", lambda msg: self._on_audio(source, msg), qos_profile_sensor_data))
            return source
        module, name, read = external_reader(self._param("transcript_type"))
        msg_type = getattr(importlib.import_module(module), name)
        self._inputs.append(self.create_subscription(
            msg_type, "heard", lambda msg: self._on_heard(read, msg), every_message_qos()))
        return None

    @staticmethod
    def _import_type(type_name: str, allowed: tuple[str, ...]):
        if type_name not in allowed:
            raise ValueError(f"type must be one of {', '.join(allowed)}, got {type_name!r}")
        package, _, name = type_name.split("/")
        try:
            return getattr(importlib.import_module(f"{package}.msg"), name)
        except ImportError as error:
            raise ImportError(f"{type_name} is not installed ({error}); on a robot: apt install "
                              f"ros-$ROS_DISTRO-{package.replace('_', '-')}") from error

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _halt(self) -> None:
        self._stop.set()
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _release(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        if self._mute_subscription is not None:
            self.destroy_subscription(self._mute_subscription)
        self._outputs, self._listener, self._mute_subscription = {}, None, None

    def _on_mute(self, msg: Bool) -> None:
        self._listener.set_muted(bool(msg.data))

    def _on_audio(self, source, msg) -> None:
        from ..speech import AudioError, audio_from_message

        try:
            source.push(*audio_from_message(msg, int(self._param("audio_rate")), int(self._param("audio_channels"))))
        except AudioError as error:
            self.get_logger().warning(f"audio message dropped: {error}", throttle_duration_sec=5.0)

    def _on_heard(self, read, msg) -> None:
        for transcript in read(msg):
            self._publish(self._listener.accept(transcript), stamp=self.get_clock().now().to_msg())

    def _listen(self, source) -> None:
        """The audio thread: utterances -> transcripts -> commands, until stopped or the source ends."""
        from ..speech import FileSource, UtteranceSegmenter

        segmenter = UtteranceSegmenter(
            aggressiveness=int(self._param("vad_aggressiveness")), max_utterance_s=float(self._param("max_utterance_s"))
        )
        if isinstance(source, FileSource):  # a replay: let the command's subscribers connect first
            deadline = time.monotonic() + FILE_WAIT_S
            while self._outputs["command"].get_subscription_count() == 0 and time.monotonic() < deadline:
                if self._stop.wait(0.05):
                    return
        try:
            frames = itertools.takewhile(lambda _: not self._stop.is_set(), source)
            for utterance in segmenter.segment(frames):
                self._publish(self._listener.hear(utterance))
        except Exception as error:  # a failing device or engine must not end the node silently
            self.get_logger().error(f"listening stopped: {type(error).__name__}: {error}")
        finally:
            stop = getattr(source, "stop", None)
            if stop is not None:
                stop()

    def _publish(self, heard, stamp: Time | None = None) -> None:
        msg = TranscriptMsg(text=heard.text, confidence=heard.confidence, recognition_seconds=heard.recognition_seconds,
                            sent=heard.sent, reason=heard.reason)  # fmt: skip
        if heard.start_s is not None:
            msg.utterance_start = stamp_after(self._started, heard.start_s)
            msg.utterance_end = stamp_after(self._started, heard.end_s)
            stamp = msg.utterance_end
        msg.header.stamp = stamp
        if heard.sent:
            self._outputs["command"].publish(String(data=heard.text))
        self._outputs["transcript"].publish(msg)
        self.get_logger().info(f"heard {msg.text!r} ({msg.confidence:.2f}): {'sent' if msg.sent else msg.reason}")


def main(args=None) -> int:
    """Run speech_node until shut down; configure / activate come from the launch file or a lifecycle manager."""
    rclpy.init(args=args)
    node = SpeechNode()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
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
