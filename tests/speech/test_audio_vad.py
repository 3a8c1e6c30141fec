"""Audio sources and utterance segmentation on espeak-ng speech, silence and noise."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from lisa_ros.speech.audio import SAMPLE_RATE, AudioError, FileSource, MicrophoneSource, frames_of, read_audio
from lisa_ros.speech.vad import END_MAX_LENGTH, END_SILENCE, UtteranceSegmenter


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.int16)


def utterances(audio: np.ndarray, **kwargs):
    return list(UtteranceSegmenter(**kwargs).segment(frames_of(audio)))


def test_a_22050_hz_wav_is_read_at_16_khz(say):
    path = say("the tallest object on the table")
    raw, rate = soundfile.read(str(path), dtype="int16")
    assert rate == 22050
    audio = read_audio(path)
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert abs(len(audio) - len(raw) * SAMPLE_RATE / rate) <= 2
    # The resampled speech keeps its loudness (a band-limited resampler, not a broken scale).
    assert 0.8 < np.abs(audio).max() / np.abs(raw).max() < 1.2


def test_stereo_flac_at_48_khz_is_mixed_and_resampled(tmp_path):
    t = np.arange(48000) / 48000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(tmp_path / "tone.flac", np.stack([tone, tone], axis=1), 48000)
    audio = read_audio(tmp_path / "tone.flac")
    assert len(audio) == SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 s of audio: bins are 1 Hz


def test_bad_files_give_clear_errors(tmp_path):
    (tmp_path / "notes.wav").write_text("not audio at all")
    with pytest.raises(AudioError, match="cannot read .*notes.wav as audio"):
        read_audio(tmp_path / "notes.wav")
    with pytest.raises(AudioError, match="no audio file"):
        read_audio(tmp_path / "missing.wav")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.int16), 16000)
    with pytest.raises(AudioError, match="no samples"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "folder").mkdir()
    with pytest.raises(AudioError, match="no .* files in"):
        FileSource(tmp_path / "folder")


def test_a_folder_gives_one_utterance_per_file(say, tmp_path):
    for i, text in enumerate(["the fruit to make lemonade", "something to read"]):
        (tmp_path / f"{i}.wav").write_bytes(say(text).read_bytes())
    found = list(UtteranceSegmenter().segment(FileSource(tmp_path)))
    assert len(found) == 2 and all(u.reason == END_SILENCE for u in found)


def test_two_utterances_one_second_apart_are_two(speech):
    first, second = speech("something to read"), speech("the sourest fruit")
    audio = np.concatenate([silence(0.5), first, silence(1.0), second, silence(1.0)])
    found = utterances(audio)
    assert len(found) == 2
    assert found[0].end_s <= 0.5 + len(first) / SAMPLE_RATE + 1.0 <= found[1].start_s + 0.31
    assert found[0].start_s < found[1].start_s


@pytest.mark.parametrize("kind", ["silence", "white_noise"])
def test_silence_or_noise_alone_gives_no_utterance(kind):
    rng = np.random.default_rng(0)
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    audio = {
        "silence": silence(5.0),
        "white_noise": rng.normal(0, 1000, len(t)).clip(-32768, 32767).astype(np.int16),
    }[kind]
    assert utterances(audio) == []


def test_the_pre_roll_keeps_the_start(speech):
    audio = speech("what needs watering?")
    onset = int(np.argmax(np.abs(audio) > 500))  # the first clearly audible sample
    padded = np.concatenate([silence(1.0), audio, silence(1.0)])
    (utterance,) = utterances(padded, pre_roll_ms=300)
    assert utterance.start_s <= 1.0 + onset / SAMPLE_RATE - 0.1  # starts well before the speech
    start = int(utterance.start_s * SAMPLE_RATE)
    assert np.array_equal(utterance.audio[1 * SAMPLE_RATE + onset - start:][:1000], audio[onset:onset + 1000])


def test_a_very_long_utterance_is_cut_with_a_reason(speech):
    talk = np.concatenate([speech("the fruit you peel that is long and curved and I keep talking")] * 8)
    found = utterances(talk, max_utterance_s=5.0, end_silence_ms=900)
    assert found and found[0].reason == END_MAX_LENGTH
    assert all(u.duration_s <= 5.0 + 1e-6 for u in found)


def test_a_missing_microphone_is_a_clear_error():
    try:
        source = MicrophoneSource(device="no such microphone 1234")
    except AudioError as error:
        assert "libportaudio2" in str(error) or "no such microphone 1234" in str(error)
    else:  # pragma: no cover - a device with that name
        pytest.fail(f"opened {source}")
