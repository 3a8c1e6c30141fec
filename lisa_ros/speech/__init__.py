"""Speech: audio -> utterances -> text -> commands, ROS-free (numpy; torch only inside WhisperRecognizer).

sources (`audio`) -> `vad.UtteranceSegmenter` -> `engines.Recognizer` -> `commands.decide`.
"""

from .audio import SAMPLE_RATE, AudioError, FileSource, MicrophoneSource, read_audio
from .commands import Decision, decide
from .engines import PocketSphinxRecognizer, Recognizer, Transcript, WhisperRecognizer
from .lm import build_arpa, normalise
from .vad import Utterance, UtteranceSegmenter

__all__ = [
    "SAMPLE_RATE", "AudioError", "FileSource", "MicrophoneSource", "read_audio", "Decision", "decide",
    "PocketSphinxRecognizer", "Recognizer", "Transcript", "WhisperRecognizer", "build_arpa", "normalise",
    "Utterance", "UtteranceSegmenter",
]
