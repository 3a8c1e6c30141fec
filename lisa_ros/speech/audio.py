"""Audio sources: 16 kHz mono int16 frames from a file, a folder of files, or the microphone.

Every source yields `numpy.int16` arrays of `frame_samples(frame_ms)` samples, the unit the
voice activity detector (`lisa_ros.speech.vad`) reads. Files are read with `soundfile`
(libsndfile: WAV, FLAC, OGG, ...) and resampled with `soxr` (a band-limited resampler, not a
linear interpolation); the microphone goes through `sounddevice` (PortAudio), imported only
when a `MicrophoneSource` is opened, so that the rest runs where PortAudio is not installed.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Iterator

import numpy as np

SAMPLE_RATE = 16000  # Hz: what the VAD and both engines read
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class AudioError(RuntimeError):
    """Audio that cannot be read or a device that cannot be opened, with what to do about it."""


def frame_samples(frame_ms: int) -> int:
    """Samples in one frame of `frame_ms` at 16 kHz (webrtcvad reads 10, 20 or 30 ms frames)."""
    assert frame_ms in (10, 20, 30), f"frame_ms must be 10, 20 or 30, not {frame_ms}"
    return SAMPLE_RATE * frame_ms // 1000


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] (clipped) to int16."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Float audio (N,) at `rate` Hz resampled to `target` Hz with soxr (high quality)."""
    if rate == target:
        return audio
    import soxr

    return soxr.resample(audio, rate, target, quality="HQ")


def read_audio(path: str | Path) -> np.ndarray:
    """A whole audio file as 16 kHz mono int16 (channels averaged, resampled).

    Raises:
        AudioError: the file is missing, unreadable, not audio, or empty.
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"no audio file {path}")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"cannot read {path} as audio (WAV, FLAC or OGG): {error}") from error
    if audio.shape[0] == 0:
        raise AudioError(f"{path} holds no samples")
    return to_int16(resample(audio.mean(axis=1), rate))


def audio_files(path: str | Path) -> list[Path]:
    """`path` itself if it is a file, else the audio files in the folder, sorted by name."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise AudioError(f"no {'/'.join(AUDIO_SUFFIXES)} files in {path}")
        return files
    if not path.exists():
        raise AudioError(f"no audio file or folder {path}")
    return [path]


def frames_of(audio: np.ndarray, frame_ms: int = 30) -> Iterator[np.ndarray]:
    """Consecutive frames of int16 audio; the last one zero-padded."""
    size = frame_samples(frame_ms)
    for start in range(0, len(audio), size):
        frame = audio[start:start + size]
        if len(frame) < size:
            frame = np.concatenate([frame, np.zeros(size - len(frame), np.int16)])
        yield frame


class FileSource:
    """Frames from an audio file or a folder of them (sorted by name), for tests and replay.

    Arguments:
        path (str | Path): a WAV/FLAC/OGG file, or a folder of them.
        frame_ms (int): frame length, 10, 20 or 30 ms.
        gap_s (float): silence inserted after each file, so that the files of a folder are
            separate utterances for the VAD.
    """

    def __init__(self, path: str | Path, frame_ms: int = 30, gap_s: float = 1.0):
        self.files = audio_files(path)
        self.frame_ms = frame_ms
        self.gap = np.zeros(int(gap_s * SAMPLE_RATE), np.int16)

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.files:
            yield from frames_of(np.concatenate([read_audio(path), self.gap]), self.frame_ms)


class MicrophoneSource:
    """Frames from a microphone through PortAudio (`sounddevice`), recorded at 16 kHz mono int16.

    Arguments:
        device (int | str | None): a sounddevice device index or name; None: the default input.
        frame_ms (int): frame length, 10, 20 or 30 ms.

    Raises (on construction):
        AudioError: sounddevice or libportaudio is missing, or there is no such input device.
    """

    def __init__(self, device: int | str | None = None, frame_ms: int = 30):
        try:
            import sounddevice
        except (ImportError, OSError) as error:  # OSError: "PortAudio library not found"
            raise AudioError(
                f"no microphone support: {error}. Install PortAudio (apt-get install libportaudio2) "
                "and the sounddevice package (pip install sounddevice)"
            ) from error
        self._sounddevice = sounddevice
        self.device = device
        self.frame_ms = frame_ms
        try:
            sounddevice.check_input_settings(device=device, channels=1, dtype="int16", samplerate=SAMPLE_RATE)
        except Exception as error:  # PortAudioError, ValueError: no or unsuitable device
            raise AudioError(f"cannot record 16 kHz mono from input device {device!r}: {error}") from error
        self._frames: queue.Queue = queue.Queue()
        self._stream = None

    def _callback(self, data, frames, time, status):  # PortAudio's thread
        self._frames.put(np.frombuffer(bytes(data), np.int16).copy())

    def __iter__(self) -> Iterator[np.ndarray]:
        self.start()
        try:
            while self._stream is not None:
                try:
                    yield self._frames.get(timeout=0.5)
                except queue.Empty:
                    continue
        finally:
            self.stop()

    def start(self) -> None:
        """Open and start the input stream (iterating does it)."""
        if self._stream is None:
            try:
                self._stream = self._sounddevice.RawInputStream(
                    samplerate=SAMPLE_RATE, blocksize=frame_samples(self.frame_ms), device=self.device,
                    channels=1, dtype="int16", callback=self._callback,
                )
                self._stream.start()
            except Exception as error:
                self._stream = None
                raise AudioError(f"cannot open input device {self.device!r}: {error}") from error

    def stop(self) -> None:
        """Stop and close the input stream; iteration ends."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()


# audio_common_msgs/AudioData (the mgonzs13 flavour) sample arrays, by preference, with their full scale.
_SAMPLE_FIELDS = (("int16_data", 32768.0), ("float32_data", 1.0), ("int32_data", 2147483648.0),
                  ("int8_data", 128.0), ("uint8_data", None))  # fmt: skip


def audio_from_message(msg, rate: int, channels: int) -> tuple[np.ndarray, int, int]:
    """An audio_common_msgs message -> (float samples in [-1, 1], rate, channels), duck-typed.

    Two flavours exist on robots: ros-drivers' `AudioData` / `AudioDataStamped` (bytes of
    S16LE PCM in `data`; the format comes from a separate AudioInfo topic, so here from
    `rate` and `channels`) and mgonzs13's `AudioStamped` (typed sample arrays with their own
    `info.rate` / `info.channels`) or its `AudioDataStamped` (arrays, format from the arguments).

    Raises:
        AudioError: a message with no samples in a known field.
    """
    if hasattr(msg, "header") and hasattr(msg, "audio"):  # the *Stamped types
        msg = msg.audio
    if hasattr(msg, "info") and hasattr(msg, "audio"):  # mgonzs13 Audio: its own format
        rate, channels, msg = int(msg.info.rate), int(msg.info.channels), msg.audio
    if hasattr(msg, "data"):  # ros-drivers AudioData
        raw = np.frombuffer(bytes(msg.data), np.uint8)
        samples = raw[: len(raw) // 2 * 2].view("<i2").astype(np.float32) / 32768.0
    else:
        for name, scale in _SAMPLE_FIELDS:
            values = np.asarray(getattr(msg, name, ()))
            if values.size:
                if scale is None:  # unsigned 8-bit PCM is offset by 128
                    samples = (values.astype(np.float32) - 128.0) / 128.0
                else:
                    samples = values.astype(np.float32) / scale
                break
        else:
            raise AudioError("an audio message with no samples (no int16/float32/int32/int8/uint8 data)")
    return samples, rate, channels


class StreamSource:
    """Frames from audio pushed in chunks by another thread (an audio topic's callback).

    `push` mixes to mono, resamples to 16 kHz (soxr's streaming resampler, so chunk edges add
    no clicks) and queues whole frames; iterating yields them until `stop`.

    Arguments:
        frame_ms (int): frame length, 10, 20 or 30 ms.
        max_queued_s (float): audio beyond this backlog is dropped (the recogniser fell behind).
    """

    def __init__(self, frame_ms: int = 30, max_queued_s: float = 30.0):
        self.frame_ms = frame_ms
        self._frames: queue.Queue = queue.Queue(maxsize=max(1, int(max_queued_s * 1000 / frame_ms)))
        self._pending = np.zeros(0, np.int16)
        self._resampler = None
        self._rate = None
        self._stopped = False
        self.dropped_frames = 0

    def push(self, samples: np.ndarray, rate: int, channels: int = 1) -> None:
        """Queue float audio in [-1, 1] (interleaved when `channels` > 1) recorded at `rate` Hz."""
        if rate <= 0 or channels <= 0:
            raise AudioError(f"audio with rate {rate} Hz and {channels} channels cannot be read")
        samples = np.asarray(samples, np.float32)
        mono = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
        if rate != SAMPLE_RATE:
            if self._rate != rate:
                import soxr

                self._resampler, self._rate = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32"), rate
            mono = self._resampler.resample_chunk(mono)
        self._pending = np.concatenate([self._pending, to_int16(mono)])
        size = frame_samples(self.frame_ms)
        whole = len(self._pending) // size * size
        for start in range(0, whole, size):
            try:
                self._frames.put_nowait(self._pending[start:start + size])
            except queue.Full:
                self.dropped_frames += 1
        self._pending = self._pending[whole:]

    def __iter__(self) -> Iterator[np.ndarray]:
        while not self._stopped:
            try:
                yield self._frames.get(timeout=0.1)
            except queue.Empty:
                continue

    def stop(self) -> None:
        """End the iteration."""
        self._stopped = True
