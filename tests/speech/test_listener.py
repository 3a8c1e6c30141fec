"""From utterances (or other stacks' transcripts) to commands: mute, the two-utterance split,
very long speech, audio topic messages, other stacks' final results, and the say adapter."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from lisa_ros.speech import (
    SAMPLE_RATE,
    AudioError,
    Listener,
    PocketSphinxRecognizer,
    StreamSource,
    Transcript,
    UtteranceSegmenter,
    audio_from_message,
    external_reader,
)
from lisa_ros.speech.audio import frames_of
from lisa_ros.speech.listener import MUTED
from lisa_ros.speech.say import Speaker
from lisa_ros.speech.vad import END_MAX_LENGTH


class CountingRecognizer:
    """Says what it was given: how many seconds of audio, so that cuts are visible."""

    def __init__(self):
        self.calls = 0

    def recognize(self, audio):
        self.calls += 1
        return Transcript(f"{len(audio) / SAMPLE_RATE:.1f} seconds", 0.9, 0.001)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.int16)


def heard(listener: Listener, audio: np.ndarray, **segmenter):
    return [listener.hear(u) for u in UtteranceSegmenter(**segmenter).segment(frames_of(audio))]


@pytest.fixture(scope="module")
def sphinx():
    return PocketSphinxRecognizer()


def test_two_spoken_commands_are_two_commands_and_mute_sends_none(sphinx, speech):
    audio = np.concatenate([silence(0.5), speech("Which food here has the most vitamin C?", voice="en-us+f3"),
                            silence(1.0), speech("something to read"), silence(1.0)])  # fmt: skip
    listener = Listener(sphinx, min_confidence=0.0)
    results = heard(listener, audio)
    assert [r.sent for r in results] == [True, True]
    assert results[0].text == "which food here has the most vitamin c"
    assert results[0].start_s < results[0].end_s < results[1].start_s
    listener.set_muted(True)
    muted = heard(listener, audio)
    assert [(r.sent, r.reason, r.text) for r in muted] == [(False, MUTED, "")] * 2
    listener.set_muted(False)
    assert all(r.sent for r in heard(listener, audio))


@pytest.mark.parametrize("kind", ["silence", "noise"])
def test_silence_or_noise_alone_sends_nothing(kind):
    recognizer = CountingRecognizer()
    rng = np.random.default_rng(1)
    audio = silence(4.0) if kind == "silence" else rng.normal(0, 800, 4 * SAMPLE_RATE).astype(np.int16)
    assert heard(Listener(recognizer, 0.3), audio) == [] and recognizer.calls == 0


def test_a_ten_minute_utterance_is_cut_with_a_reason(speech):
    talk = speech("the fruit you peel that is long and curved and I keep talking")
    audio = np.tile(talk, int(np.ceil(600 * SAMPLE_RATE / len(talk))))[: 600 * SAMPLE_RATE]
    results = heard(Listener(CountingRecognizer(), 0.3), audio, max_utterance_s=15.0)
    assert len(results) >= 600 / 15 - 1
    assert all(r.reason == END_MAX_LENGTH and r.sent for r in results[:-1])
    assert all(r.text == "15.0 seconds" for r in results[:-1])  # each recognised piece is 15 s at most


def test_low_confidence_and_empty_are_published_with_a_reason_but_not_sent():
    listener = Listener(None, min_confidence=0.5)
    assert not listener.accept(Transcript("the mug", 0.2, 0.0)).sent
    assert listener.accept(Transcript("the mug", 0.2, 0.0)).reason.startswith("low_confidence")
    assert listener.accept(Transcript("", 0.9, 0.0)).reason == "empty"
    assert listener.accept(Transcript("the mug", 0.9, 0.0)).sent


def test_other_stacks_final_results_only():
    _, _, live = external_reader("hri_msgs/msg/LiveSpeech")
    assert live(SimpleNamespace(incremental="the mu", final="", confidence=0.4)) == []
    assert live(SimpleNamespace(incremental="", final="the mug ", confidence=0.8)) == [Transcript("the mug", 0.8, 0.0)]

    _, _, whisper_ros = external_reader("whisper_msgs/msg/Transcription")
    assert whisper_ros(SimpleNamespace(text=" the red cup", audio_time=1.2, transcription_time=0.3)) == [
        Transcript("the red cup", 1.0, 0.3)]

    _, _, ros2_whisper = external_reader("whisper_idl/msg/AudioTranscript")

    def transcript(words, probs, starts, times, active):
        stamps = [SimpleNamespace(sec=t, nanosec=0) for t in times]
        return SimpleNamespace(words=words, probs=probs, seg_start_words_id=starts, seg_start_time=stamps,
                               active_index=active)  # fmt: skip

    words = ["find", "the", "mug", "and", "the", "ba"]
    # Segment 1 (words 0-2) is final, segment 2 is still changing: only the first is sent.
    first = ros2_whisper(transcript(words, [0.9, 0.8, 0.7, 0.5, 0.5, 0.2], [0, 3], [10, 12], active=4))
    assert [(t.text, round(t.confidence, 3)) for t in first] == [("find the mug", 0.8)]
    words[-1] = "banana"
    second = ros2_whisper(transcript(words, [0.9, 0.8, 0.7, 0.6, 0.6, 0.9], [0, 3], [10, 12], active=6))
    assert [t.text for t in second] == ["and the banana"]  # the first segment is not sent again
    assert ros2_whisper(transcript(words, [0.9] * 6, [0, 3], [10, 12], active=6)) == []
    with pytest.raises(ValueError, match="transcript_type must be one of"):
        external_reader("my_msgs/msg/Speech")


def test_audio_topic_messages_of_both_flavours_become_16_khz_frames(say):
    audio, rate = soundfile.read(str(say("something to read")), dtype="int16")
    assert rate == 22050
    # ros-drivers: S16LE bytes, the format from parameters; mgonzs13: typed arrays with their own info.
    drivers = [SimpleNamespace(data=chunk.tobytes()) for chunk in np.array_split(audio, 37)]
    mgonzs13 = [SimpleNamespace(header=None, audio=SimpleNamespace(
        audio=SimpleNamespace(int16_data=chunk.tolist(), float32_data=[]),
        info=SimpleNamespace(rate=22050, channels=1))) for chunk in np.array_split(audio, 23)]  # fmt: skip
    streams = []
    for messages in (drivers, mgonzs13):
        source = StreamSource()
        for msg in messages:
            source.push(*audio_from_message(msg, rate=22050, channels=1))
        source.stop()
        streams.append(np.concatenate(list(source._frames.queue)))
    expected = len(audio) * SAMPLE_RATE / 22050
    for stream in streams:
        assert abs(len(stream) - expected) < 2 * 480  # whole 30 ms frames; the resampler's delay
    np.testing.assert_array_equal(streams[0][: len(streams[1])], streams[1][: len(streams[0])])
    with pytest.raises(AudioError, match="no samples"):
        audio_from_message(SimpleNamespace(float32_data=[], int16_data=[]), 16000, 1)
    with pytest.raises(AudioError, match="cannot be read"):
        StreamSource().push(np.zeros(10), rate=0)


def test_the_say_adapter_mutes_while_speaking(tmp_path):
    events, done = [], threading.Event()

    def set_mute(muted):
        events.append((muted, (tmp_path / "said.wav").exists()))
        if not muted:
            done.set()

    speaker = Speaker(["espeak-ng", "-w", str(tmp_path / "said.wav")], set_mute, tail_s=0.05)
    speaker.speak("The orange has the most vitamin C.")
    assert done.wait(30)
    speaker.close()
    assert events == [(True, False), (False, True)]  # muted before the audio existed, unmuted after
    assert soundfile.info(str(tmp_path / "said.wav")).duration > 1.0
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        Speaker(["no-such-tts-program"], set_mute)

