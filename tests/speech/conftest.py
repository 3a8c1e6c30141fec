"""Speech fixtures: espeak-ng renderings (espeak-ng comes with make setup; a test fails without it)."""

from __future__ import annotations

import shutil

import pytest

from lisa_ros.speech.audio import read_audio
from lisa_ros.speech.say import speak_to_file


@pytest.fixture(scope="session")
def say(tmp_path_factory):
    """say(text, voice="en-us", speed=160) -> path of an espeak-ng WAV (22050 Hz mono int16)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: run make setup (scripts/setup.sh installs it)", pytrace=False)
    folder = tmp_path_factory.mktemp("espeak")
    made = {}

    def render(text: str, voice: str = "en-us", speed: int = 160):
        key = (text, voice, speed)
        if key not in made:
            path = folder / f"{len(made):03d}.wav"
            made[key] = speak_to_file(text, path, voice, speed)
        return made[key]

    return render


@pytest.fixture(scope="session")
def speech(say):
    """speech(text) -> 16 kHz int16 audio of an espeak-ng rendering."""
    return lambda text, **kwargs: read_audio(say(text, **kwargs))
