"""Transcripts from the speech stacks robots already run, as `Transcript`s: final results only.

The speech node subscribes to one of these message types when its package is installed
(`transcript_type` parameter) and sends what they heard through the same gates as its own
recogniser (mute, confidence). Messages are read by field name (duck typing), so this module
needs none of the packages:

  hri_msgs/msg/LiveSpeech            ROS4HRI: `final` holds a finished utterance (`incremental`
                                     partial ones are ignored), `confidence` 0..1.
  whisper_msgs/msg/Transcription     whisper_ros: `text` of one finished utterance and
                                     `transcription_time`; it gives no confidence, so 1.0.
  whisper_idl/msg/AudioTranscript    ros2_whisper: a running transcript of `words` with per-word
                                     `probs`, cut into segments (`seg_start_words_id`,
                                     `seg_start_time`); words before `active_index` are final.
                                     Each segment is sent once, when all its words are final,
                                     with the mean word probability as its confidence.
"""

from __future__ import annotations

from typing import Callable

from .engines import Transcript

# Stamps as (sec, nanosec) tuples: comparable, and the same for rclpy and rosbags messages.
Stamp = tuple[int, int]


def live_speech(msg) -> list[Transcript]:
    """hri_msgs/LiveSpeech: the final text, if this message carries one."""
    text = msg.final.strip()
    return [Transcript(text, float(msg.confidence), 0.0)] if text else []


def whisper_ros_transcription(msg) -> list[Transcript]:
    """whisper_msgs/Transcription: every message is one finished utterance."""
    text = msg.text.strip()
    return [Transcript(text, 1.0, float(msg.transcription_time))] if text else []


class FinalSegments:
    """whisper_idl/AudioTranscript -> the segments that became final since the last message."""

    def __init__(self):
        self._last_sent: Stamp | None = None

    def __call__(self, msg) -> list[Transcript]:
        words, probs, starts = list(msg.words), list(msg.probs), list(msg.seg_start_words_id)
        ends = starts[1:] + [len(words)]
        transcripts = []
        for first, end, time in zip(starts, ends, msg.seg_start_time):
            stamp = (int(time.sec), int(time.nanosec))
            final = end <= msg.active_index
            if not final or (self._last_sent is not None and stamp <= self._last_sent):
                continue
            self._last_sent = stamp
            text = " ".join(word.strip() for word in words[first:end] if word.strip())
            if text:
                confidence = sum(probs[first:end]) / max(1, end - first)
                transcripts.append(Transcript(text, float(confidence), 0.0))
        return transcripts


# type name -> (Python module, class name, a factory of the message -> transcripts function)
EXTERNAL_TYPES: dict[str, tuple[str, str, Callable[[], Callable[[object], list[Transcript]]]]] = {
    "hri_msgs/msg/LiveSpeech": ("hri_msgs.msg", "LiveSpeech", lambda: live_speech),
    "whisper_msgs/msg/Transcription": ("whisper_msgs.msg", "Transcription", lambda: whisper_ros_transcription),
    "whisper_idl/msg/AudioTranscript": ("whisper_idl.msg", "AudioTranscript", FinalSegments),
}


def external_reader(type_name: str) -> tuple[str, str, Callable[[object], list[Transcript]]]:
    """(module, class, message -> final transcripts) for a supported type name.

    Raises:
        ValueError: the type is not one of EXTERNAL_TYPES (listed).
    """
    if type_name not in EXTERNAL_TYPES:
        raise ValueError(f"transcript_type must be one of {', '.join(EXTERNAL_TYPES)}; got {type_name!r}")
    module, name, factory = EXTERNAL_TYPES[type_name]
    return module, name, factory()
