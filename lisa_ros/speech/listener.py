"""What the speech node does with each utterance, ROS-free: muted, recognised, sent or not.

`Listener.hear` turns one `Utterance` into a `Heard` record (the content of a
`lisa_ros/Transcript` message) and says whether its text goes out as a command;
`Listener.accept` does the same for a transcript another speech stack recognised. Mute state
lives here, so that both paths (own audio, other stacks' transcripts) obey it: while the
robot speaks nothing it hears becomes a command.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .commands import decide
from .engines import Recognizer, Transcript
from .vad import Utterance

MUTED = "muted"


@dataclass(frozen=True)
class Heard:
    """One utterance's outcome. Times are seconds from the start of listening (own audio) or
    None (another stack's transcript, which carries its own stamp)."""

    text: str
    confidence: float
    recognition_seconds: float
    sent: bool
    reason: str  # why not sent, or why the utterance ended early ("max_length", "end_of_stream")
    start_s: float | None = None
    end_s: float | None = None


class Listener:
    """Utterances or external transcripts -> `Heard`, gated by mute and `min_confidence`.

    Arguments:
        recognizer (Recognizer | None): turns utterance audio into text; None when only other
            stacks' transcripts come in.
        min_confidence (float): transcripts below it are not sent (decide()).
    """

    def __init__(self, recognizer: Recognizer | None, min_confidence: float):
        self.recognizer = recognizer
        self.min_confidence = min_confidence
        self._muted = threading.Event()

    @property
    def muted(self) -> bool:
        return self._muted.is_set()

    def set_muted(self, muted: bool) -> None:
        """While muted (e.g. the robot is speaking) nothing heard is sent; it is not even recognised."""
        if muted:
            self._muted.set()
        else:
            self._muted.clear()

    def hear(self, utterance: Utterance) -> Heard:
        """Recognise one utterance of our own audio (unless muted) and decide whether it is a command."""
        times = {"start_s": utterance.start_s, "end_s": utterance.end_s}
        if self.muted:
            return Heard("", 0.0, 0.0, False, MUTED, **times)
        assert self.recognizer is not None, "hear() needs a recognizer"
        transcript = self.recognizer.recognize(utterance.audio)
        cut = "" if utterance.reason == "silence" else utterance.reason
        return self._judge(transcript, cut, **times)

    def accept(self, transcript: Transcript) -> Heard:
        """A final transcript from another speech stack: the same mute and confidence gates."""
        if self.muted:
            return Heard(transcript.text, transcript.confidence, transcript.seconds, False, MUTED)
        return self._judge(transcript, "")

    def _judge(self, transcript: Transcript, cut: str, **times) -> Heard:
        decision = decide(transcript, self.min_confidence)
        return Heard(transcript.text, transcript.confidence, transcript.seconds, decision.send,
                     decision.reason or cut, **times)  # fmt: skip
