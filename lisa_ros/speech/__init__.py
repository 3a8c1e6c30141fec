"""Speech: audio -> utterances -> text -> commands, ROS-free (numpy; torch only inside WhisperRecognizer).

sources (`audio`) -> `vad.UtteranceSegmenter` -> `engines.Recognizer` -> `listener.Listener`
(mute, `commands.decide`); other speech stacks' transcripts (`external`) -> `Listener` too.
"""

from .audio import SAMPLE_RATE, AudioError, FileSource, MicrophoneSource, StreamSource, audio_from_message, read_audio
from .commands import Decision, decide
from .engines import PocketSphinxRecognizer, Recognizer, Transcript, WhisperRecognizer
from .external import EXTERNAL_TYPES, external_reader
from .listener import Heard, Listener
from .lm import build_arpa, normalise
from .vad import Utterance, UtteranceSegmenter

__all__ = [
    "SAMPLE_RATE", "AudioError", "FileSource", "MicrophoneSource", "StreamSource", "audio_from_message", "read_audio",
    "EXTERNAL_TYPES", "external_reader", "Heard", "Listener", "Decision", "decide",
    "PocketSphinxRecognizer", "Recognizer", "Transcript", "WhisperRecognizer", "build_arpa", "normalise",
    "Utterance", "UtteranceSegmenter",
]
