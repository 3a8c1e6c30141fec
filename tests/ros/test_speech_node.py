"""speech_node end to end: espeak-ng audio files -> speech_node (file source) -> `command` -> lisa_node's result;
muted, the same audio sends nothing. The test is the speech node's lifecycle manager.

Both nodes run in their own processes in one namespace, over DDS on loopback; the
perception node answers on a held-out demo scene image with the built-in demo model.
The phrasings spoken are training phrasings (the language model is built from them); what
was heard goes to the perception node as the command, whatever it is.
"""

import array
import subprocess
import threading
import time

import pytest

from lisa_ros.speech.say import speak_to_file
from tests.helpers import ros_env
from tests.helpers.ros_env import STARTUP_TIMEOUT, TIMEOUT, NodeProcess, start_node, wait_until

NAMESPACE = "/lisa_voice"
# The first is recognised exactly (tests/speech checks it too); the second need not be: the
# embedded engine's word error rate on espeak-ng voices is far from perfect (bench.speech).
SPOKEN = ("Which food here has the most vitamin C?", "something to cut paper with")

pytestmark = pytest.mark.timeout(300)

_MISSING = ros_env.missing()
if _MISSING:
    pytest.fail(_MISSING, pytrace=False)


def start_speech_node(ros_home, *parameters: str) -> NodeProcess:
    log_path = ros_home / "speech_node.log"
    command = [str(ros_env.INSTALL / "lib" / "lisa_ros" / "speech_node"), "--ros-args", "-r", f"__ns:={NAMESPACE}"]
    for parameter in parameters:
        command += ["-p", parameter]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env=ros_env.ros_environment(ros_home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return NodeProcess(process, log_path)


def test_spoken_commands_reach_the_perception_node_unless_muted(tmp_path):
    from lisa_ros.synthetic.scenes import make_scene

    audio = tmp_path / "audio"
    audio.mkdir()
    for index, text in enumerate(SPOKEN):
        speak_to_file(text, audio / f"{index}.wav", "en-us+f3", 160)
    home = tmp_path / "ros_home"
    home.mkdir()
    lisa = start_node(home, NAMESPACE, "max_image_age:=0.0", "keep_conversation:=false", "tracking:=false")
    speech = None
    with ros_env.spinning_client(home, lambda context: Listener(context)) as client:
        from lifecycle_msgs.msg import Transition

        try:
            wait_until(client.ready, lisa, STARTUP_TIMEOUT, "ready")
            view = make_scene(0, "test", 0, frames=2).render(0)
            client.publish_image(view.rgb)
            speech = start_speech_node(home, "source:=file", f"audio_path:={audio}", "min_confidence:=0.0")
            # The node waits for its lifecycle manager (here the test) to configure and activate it.
            wait_until(lambda: client.speech_state() == "unconfigured", speech, STARTUP_TIMEOUT, "speech node up")
            assert client.change_speech_state(Transition.TRANSITION_CONFIGURE), speech.log()
            wait_until(client.mute_connected, speech, TIMEOUT, "mute subscription")

            # Muted (the robot is speaking): everything heard is reported, nothing is sent.
            client.publish_mute(True)
            assert client.change_speech_state(Transition.TRANSITION_ACTIVATE), speech.log()
            muted = client.wait_for("transcript", len(SPOKEN), speech)
            assert [(t.sent, t.reason) for t in muted] == [(False, "muted")] * len(SPOKEN), speech.log()
            assert client.change_speech_state(Transition.TRANSITION_DEACTIVATE), speech.log()

            # Unmuted: the same audio, replayed on the next activation, becomes commands.
            client.publish_mute(False)
            assert client.change_speech_state(Transition.TRANSITION_ACTIVATE), speech.log()
            transcripts = client.wait_for("transcript", 2 * len(SPOKEN), speech)[len(SPOKEN):]
            assert transcripts[0].text == "which food here has the most vitamin c", speech.log()
            assert all(t.sent and 0 <= t.confidence <= 1 and t.recognition_seconds > 0 for t in transcripts)
            assert transcripts[0].utterance_start.sec * 10**9 + transcripts[0].utterance_start.nanosec < (
                transcripts[0].utterance_end.sec * 10**9 + transcripts[0].utterance_end.nanosec
            )
            results = client.wait_for("result", len(SPOKEN), lisa)
            assert [r.command for r in results] == [t.text for t in transcripts]
            assert all(r.status == r.STATUS_OK for r in results), [r.error_message for r in results]
        finally:
            if speech is not None:
                speech.stop()
            lisa.stop()


class Listener:
    def __init__(self, context):
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.node import Node
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool

        from lisa_ros.msg import SegmentationResult, Transcript

        self.node = Node("voice_test_client", context=context)
        self.lock, self.buckets = threading.Lock(), {"transcript": [], "result": []}
        every = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)

        def collect(name):
            def callback(msg):
                with self.lock:
                    self.buckets[name].append(msg)

            return callback

        self.node.create_subscription(Transcript, f"{NAMESPACE}/transcript", collect("transcript"), every)
        self.node.create_subscription(SegmentationResult, f"{NAMESPACE}/result", collect("result"), every)
        self.image_pub = self.node.create_publisher(Image, f"{NAMESPACE}/image", every)
        self.mute_pub = self.node.create_publisher(Bool, f"{NAMESPACE}/mute", every)
        self.change_state = self.node.create_client(ChangeState, f"{NAMESPACE}/speech/change_state")
        self.get_state = self.node.create_client(GetState, f"{NAMESPACE}/speech/get_state")
        self.Image, self.Bool, self.ChangeState, self.GetState = Image, Bool, ChangeState, GetState

    def _call(self, client, request):
        if not client.wait_for_service(timeout_sec=1.0):
            return None
        future = client.call_async(request)
        deadline = time.monotonic() + TIMEOUT
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        return future.result() if future.done() else None

    def speech_state(self) -> str | None:
        response = self._call(self.get_state, self.GetState.Request())
        return response.current_state.label if response else None

    def change_speech_state(self, transition_id: int) -> bool:
        request = self.ChangeState.Request()
        request.transition.id = transition_id
        response = self._call(self.change_state, request)
        return bool(response and response.success)

    def mute_connected(self) -> bool:
        return self.mute_pub.get_subscription_count() > 0

    def publish_mute(self, muted: bool) -> None:
        self.mute_pub.publish(self.Bool(data=muted))
        time.sleep(0.2)  # reliable, and the speech node reads mute before its audio thread starts

    def wait_for(self, name: str, count: int, node: NodeProcess) -> list:
        deadline = time.monotonic() + TIMEOUT
        while self.count(name) < count and time.monotonic() < deadline:
            if not node.alive():
                pytest.fail(f"a node exited:\n{node.log()}")
            time.sleep(0.1)
        messages = self.take(name)
        assert len(messages) == count, node.log()
        return messages

    def ready(self) -> bool:
        return self.image_pub.get_subscription_count() > 0

    def publish_image(self, rgb):
        height, width = rgb.shape[:2]
        msg = self.Image(height=height, width=width, encoding="rgb8", step=width * 3)
        msg.data = array.array("B", rgb.tobytes())
        msg.header.frame_id = "camera"
        msg.header.stamp = self.node.get_clock().now().to_msg()
        for _ in range(3):
            self.image_pub.publish(msg)
            time.sleep(0.05)

    def count(self, name) -> int:
        with self.lock:
            return len(self.buckets[name])

    def take(self, name) -> list:
        with self.lock:
            return list(self.buckets[name])


def test_a_missing_microphone_is_a_clear_error_and_the_node_stays_up(tmp_path):
    """No input device here: activation fails with what to do, and the node can be told again."""
    home = tmp_path / "ros_home"
    home.mkdir()
    speech = start_speech_node(home, "source:=microphone")
    with ros_env.spinning_client(home, lambda context: Listener(context)) as client:
        from lifecycle_msgs.msg import Transition

        try:
            wait_until(lambda: client.speech_state() == "unconfigured", speech, STARTUP_TIMEOUT, "speech node up")
            assert client.change_speech_state(Transition.TRANSITION_CONFIGURE), speech.log()
            assert not client.change_speech_state(Transition.TRANSITION_ACTIVATE)
            assert speech.alive() and client.speech_state() == "inactive", speech.log()
            assert "cannot open the microphone source" in speech.log() and "input device" in speech.log()
        finally:
            speech.stop()
