"""Voice activity detection: a stream of frames -> utterances, with `webrtcvad`.

Why webrtcvad: it is the WebRTC project's GMM detector, a ~100 kB wheel with no model to
download and no torch (silero's VAD needs a torch or onnxruntime model file); it reads the 10,
20 or 30 ms int16 frames the sources yield, decides one frame in microseconds, and adapts to
stationary noise (fans, hum), the usual robot case. Its weakness, non-stationary noise
(music, other speakers), is bounded here by `min_speech_ms` and the recogniser's confidence
threshold (`lisa_ros.speech.commands`).

Segmentation: a ring of the last `pre_roll_ms` of frames is kept while waiting; an utterance
starts when `start_ms` of the ring is voiced, and begins with the whole ring (pre-roll), so
that the first syllable, quieter than the vowel that triggers the detector, is kept. It ends
after `end_silence_ms` of unvoiced frames (the hangover), or is cut at `max_utterance_s`
(reason "max_length"; the rest of the speech starts a new utterance), or at the end of the
stream. Utterances with less than `min_speech_ms` of voiced frames (clicks, bumps) are dropped.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .audio import SAMPLE_RATE, frame_samples

# Why an utterance ended.
END_SILENCE = "silence"
END_MAX_LENGTH = "max_length"  # cut: longer than max_utterance_s
END_STREAM = "end_of_stream"


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech: 16 kHz int16 audio, its start/end in seconds from the stream's start, and why it ended."""

    audio: np.ndarray
    start_s: float
    end_s: float
    reason: str

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


class UtteranceSegmenter:
    """Splits a stream of 16 kHz int16 frames into utterances (see the module docstring).

    Arguments:
        aggressiveness (int): webrtcvad's mode, 0 (keeps most) to 3 (drops most non-speech).
        frame_ms (int): frame length the stream uses, 10, 20 or 30 ms.
        pre_roll_ms (int): audio kept before the trigger.
        start_ms (int): voiced audio within the pre-roll window that starts an utterance.
        end_silence_ms (int): unvoiced audio that ends an utterance.
        min_speech_ms (int): utterances with less voiced audio are dropped.
        max_utterance_s (float): longer utterances are cut (reason "max_length").
    """

    def __init__(self, aggressiveness: int = 2, frame_ms: int = 30, pre_roll_ms: int = 300, start_ms: int = 90,
                 end_silence_ms: int = 600, min_speech_ms: int = 200, max_utterance_s: float = 15.0):
        import webrtcvad

        assert 0 <= aggressiveness <= 3, f"aggressiveness must be 0..3, not {aggressiveness}"
        assert start_ms <= pre_roll_ms, "start_ms must fit in the pre-roll window"
        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame_ms = frame_ms
        self.frame_size = frame_samples(frame_ms)
        self.pre_roll = max(1, pre_roll_ms // frame_ms)
        self.start_frames = max(1, start_ms // frame_ms)
        self.end_frames = max(1, end_silence_ms // frame_ms)
        self.min_speech_frames = max(1, min_speech_ms // frame_ms)
        self.max_frames = max(1, int(max_utterance_s * 1000) // frame_ms)
        self.reset()

    def reset(self) -> None:
        """Forget any utterance in progress (e.g. when muted); the stream clock keeps running."""
        self._ring: collections.deque = collections.deque(maxlen=self.pre_roll)  # (frame, voiced)
        self._frames: list[np.ndarray] = []  # the utterance in progress; empty: waiting
        self._voiced = 0
        self._silence = 0
        self._start = 0  # frame index where the utterance in progress starts
        self._clock = getattr(self, "_clock", 0)  # frames seen since the stream's start

    def feed(self, frame: np.ndarray) -> Utterance | None:
        """One frame (int16, `frame_ms` long) in; the utterance it completes, if any."""
        frame = np.asarray(frame)
        assert frame.dtype == np.int16 and frame.shape == (self.frame_size,), (
            f"frames must be int16 of {self.frame_size} samples, got {frame.dtype} {frame.shape}")
        voiced = self._vad.is_speech(frame.tobytes(), SAMPLE_RATE)
        self._clock += 1
        if not self._frames:
            self._ring.append((frame, voiced))
            if sum(v for _, v in self._ring) >= self.start_frames:
                self._frames = [f for f, _ in self._ring]
                self._voiced = sum(v for _, v in self._ring)
                self._silence = 0
                self._start = self._clock - len(self._ring)
                self._ring.clear()
            return None
        self._frames.append(frame)
        self._voiced += voiced
        self._silence = 0 if voiced else self._silence + 1
        if self._silence >= self.end_frames:
            return self._finish(END_SILENCE)
        if len(self._frames) >= self.max_frames:
            return self._finish(END_MAX_LENGTH)
        return None

    def flush(self) -> Utterance | None:
        """End of the stream: the utterance in progress, if any."""
        return self._finish(END_STREAM) if self._frames else None

    def segment(self, frames: Iterable[np.ndarray]) -> Iterator[Utterance]:
        """Every utterance of a stream of frames, flushed at its end."""
        for frame in frames:
            utterance = self.feed(frame)
            if utterance is not None:
                yield utterance
        utterance = self.flush()
        if utterance is not None:
            yield utterance

    def _finish(self, reason: str) -> Utterance | None:
        frames, voiced, start = self._frames, self._voiced, self._start
        self._frames, self._voiced, self._silence = [], 0, 0
        self._ring.clear()
        if voiced < self.min_speech_frames:
            return None
        seconds = self.frame_ms / 1000
        return Utterance(np.concatenate(frames), start * seconds, (start + len(frames)) * seconds, reason)
