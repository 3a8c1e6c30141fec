"""Acoustic model adaptation: the s3 formats against the wheel's model, sphinxtrain's round trip, and an
adapted model that hears an espeak-ng voice better on sentences it was not adapted with."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pocketsphinx
import pytest

from lisa_ros.bag.voice import word_error_rate
from lisa_ros.cli.adapt_speech import main as adapt_main
from lisa_ros.speech import adapt
from lisa_ros.speech.adapt import (
    AdaptationError,
    Recording,
    adapt_acoustic_model,
    read_sendump,
    recordings_from_folder,
    s3_checksum,
    sendump_to_mixture_weights,
    speak_sentences,
)
from lisa_ros.speech.audio import read_audio
from lisa_ros.speech.engines import PocketSphinxRecognizer
from lisa_ros.synthetic.intents import INTENTS

EN_US = Path(pocketsphinx.get_model_path()) / "en-us" / "en-us"


def test_the_s3_checksum_is_the_one_the_wheels_model_carries():
    data = (EN_US / "means").read_bytes()
    words = np.frombuffer(data, "<u4", offset=data.index(b"endhdr\n") + 7)
    assert words[0] == adapt.S3_BYTE_ORDER_MAGIC
    assert s3_checksum(words[1:-1]) == words[-1]
    assert s3_checksum(words[1:-2]) != words[-1]


def test_sendump_to_mixture_weights_round_trips_through_sphinxtrain(tmp_path):
    weights = tmp_path / "mixture_weights"
    sendump_to_mixture_weights(EN_US / "sendump", weights)
    mdef = tmp_path / "mdef.txt"
    subprocess.run([adapt.tool("pocketsphinx_mdef_convert"), "-text", EN_US / "mdef", mdef], check=True,
                   capture_output=True)
    subprocess.run([adapt.tool("mk_s2sendump"), "-pocketsphinx", "yes", "-moddeffn", mdef, "-mixwfn", weights,
                    "-sendumpfn", tmp_path / "sendump"], check=True, capture_output=True)
    original, again = read_sendump(EN_US / "sendump"), read_sendump(tmp_path / "sendump")
    assert original.shape == again.shape == (3, 128, 5126)
    # Equal, except that mk_s2sendump floors the weights (its largest value) where the wheel's are smaller.
    floor = again.max()
    assert np.all((original == again) | ((again == floor) & (original > floor)))
    assert np.mean(original == again) > 0.8


def test_a_missing_tool_names_its_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(adapt, "SPHINXTRAIN_DIRS", ())
    with pytest.raises(AdaptationError, match="apt-get install sphinxtrain"):
        adapt.tool("bw")


def test_recordings_need_their_transcripts(tmp_path, say):
    shutil.copy(say("the tallest object"), tmp_path / "a.wav")
    with pytest.raises(AdaptationError, match="no transcript .* a.wav"):
        recordings_from_folder(tmp_path)
    (tmp_path / "a.txt").write_text("the tallest object\n")
    assert recordings_from_folder(tmp_path) == [Recording(tmp_path / "a.wav", "the tallest object")]
    with pytest.raises(AdaptationError, match="empty transcript"):
        adapt_acoustic_model([Recording(tmp_path / "a.wav", " ?! ")], tmp_path / "model")
    with pytest.raises(AdaptationError, match="no recordings"):
        adapt_acoustic_model([], tmp_path / "model")


def test_the_cli_needs_adaptation_data(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        adapt_main(["--output", "x"])
    assert exit_.value.code == 2 and "--recordings" in capsys.readouterr().err
    # Bad data is one line and exit 2, not a traceback.
    (tmp_path / "empty").mkdir()
    assert adapt_main(["--recordings", str(tmp_path / "empty"), "--output", str(tmp_path / "m")]) == 2
    assert "no .wav/.flac/.ogg files" in capsys.readouterr().err
    assert adapt_main(["--espeak-voices", "xx", "--output", str(tmp_path / "m")]) == 2
    assert "could not speak with voice 'xx'" in capsys.readouterr().err


def test_an_adapted_model_hears_the_voice_better_on_unseen_sentences(tmp_path, capsys):
    voice, speed = "en-us+f3", 160
    train = [p for intent in INTENTS.values() for p in intent.train]
    recognizer = PocketSphinxRecognizer()
    unseen = [p for intent in INTENTS.values() for p in intent.heldout
              if all(w in recognizer.words for w in p.lower().strip("?.").split())][:12]
    # Adaptation data as a user would bring it: a folder of recordings with transcripts.
    folder = tmp_path / "recordings"
    for recording in speak_sentences(train, [voice], [speed], folder):
        recording.audio.with_suffix(".txt").write_text(recording.text + "\n")
    assert adapt_main(["--recordings", str(folder), "--output", str(tmp_path / "model")]) == 0
    assert '"utterances": 70' in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {"mdef", "means", "variances", "sendump",
                                                                "transition_matrices", "feat.params", "noisedict"}
    adapted = PocketSphinxRecognizer(hmm=tmp_path / "model")
    tests = speak_sentences(unseen, [voice], [speed], tmp_path / "unseen")
    before = word_error_rate(unseen, [recognizer.recognize(read_audio(r.audio)).text for r in tests])
    after = word_error_rate(unseen, [adapted.recognize(read_audio(r.audio)).text for r in tests])
    assert after < before / 2, (before, after)


def test_a_missing_acoustic_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no acoustic model"):
        PocketSphinxRecognizer(hmm=tmp_path)
