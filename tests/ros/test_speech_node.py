"""speech_node end to end: espeak-ng audio files -> speech_node (file source) -> `command` -> lisa_node's result.

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


def test_spoken_commands_reach_the_perception_node(tmp_path):
    from lisa_ros.synthetic.scenes import make_scene

    audio = tmp_path / "audio"
    audio.mkdir()
    for index, text in enumerate(SPOKEN):
        wav = str(audio / f"{index}.wav")
        subprocess.run(["espeak-ng", "-v", "en-us+f3", "-s", "160", "-w", wav, text], check=True)
    home = tmp_path / "ros_home"
    home.mkdir()
    lisa = start_node(home, NAMESPACE, "max_image_age:=0.0", "keep_conversation:=false", "tracking:=false")
    speech = None
    with ros_env.spinning_client(home, lambda context: Listener(context)) as client:
        try:
            wait_until(client.ready, lisa, STARTUP_TIMEOUT, "ready")
            view = make_scene(0, "test", 0, frames=2).render(0)
            client.publish_image(view.rgb)
            speech = start_speech_node(home, "source:=file", f"audio_path:={audio}", "min_confidence:=0.0")
            deadline = time.monotonic() + TIMEOUT
            while client.count("transcript") < len(SPOKEN) and time.monotonic() < deadline:
                if not speech.alive():
                    pytest.fail(f"speech_node exited:\n{speech.log()}")
                time.sleep(0.1)
            transcripts = client.take("transcript")
            assert len(transcripts) == len(SPOKEN), speech.log()
            assert transcripts[0].text == "which food here has the most vitamin c", speech.log()
            assert all(t.sent and 0 <= t.confidence <= 1 and t.recognition_seconds > 0 for t in transcripts)
            assert transcripts[0].utterance_start.sec * 10**9 + transcripts[0].utterance_start.nanosec < (
                transcripts[0].utterance_end.sec * 10**9 + transcripts[0].utterance_end.nanosec
            )
            deadline = time.monotonic() + TIMEOUT
            while client.count("result") < len(SPOKEN) and time.monotonic() < deadline:
                time.sleep(0.1)
            results = client.take("result")
            assert [r.command for r in results] == [t.text for t in transcripts]
            assert all(r.status == r.STATUS_OK for r in results), [r.error_message for r in results]
        finally:
            if speech is not None:
                speech.stop()
            lisa.stop()


class Listener:
    def __init__(self, context):
        from rclpy.node import Node
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

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
        self.Image = Image

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
