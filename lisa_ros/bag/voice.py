"""The voice leg of an evaluation: a script's commands spoken with espeak-ng and heard by the
speech node's own path (file source -> voice activity detection -> recogniser -> mute and
confidence gates), so that the same bag can be evaluated with what a robot would have heard.

`speak_commands` renders each command once per voice, in turn (command i in voice i mod n),
and returns what was heard; `voice_metrics` gives the word error rate (jiwer, over
`lisa_ros.speech.normalise`d words) overall and per voice, the sentences heard exactly, the
ones not sent, and recognition time. The runner answers the heard text in place of the typed one.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .errors import EvalError


@dataclass(frozen=True)
class SpokenCommand:
    typed: str
    heard: str  # the text sent as the command ('' when nothing was sent)
    sent: bool
    reason: str  # why not sent; "split into N utterances" when the VAD cut it
    voice: str
    confidence: float
    recognition_seconds: float


def speak_commands(commands: Sequence[str], voices: Sequence[str], speed: int = 160,
                   min_confidence: float = 0.3, progress: bool = True,
                   acoustic_model: str | Path | None = None) -> list[SpokenCommand]:  # fmt: skip
    """Each command spoken by espeak-ng (voices in turn, `speed` words per minute) and recognised
    by the embedded engine with its default language model, through the speech node's path.
    `acoustic_model`: the recogniser's acoustic model folder (None: the wheel's en-us).

    Raises:
        EvalError: espeak-ng is missing, or a voice is unknown to it.
    """
    from tqdm import tqdm

    from lisa_ros.speech import FileSource, Listener, PocketSphinxRecognizer, UtteranceSegmenter
    from lisa_ros.speech.say import SynthesisError, speak_to_file

    listener = Listener(PocketSphinxRecognizer(hmm=acoustic_model), min_confidence)
    spoken = []
    with tempfile.TemporaryDirectory(prefix="lisa-voice-") as folder:
        for index, command in enumerate(tqdm(commands, desc="voice leg", unit="command", file=sys.stderr,
                                             disable=not progress)):  # fmt: skip
            voice = voices[index % len(voices)]
            try:
                wav = speak_to_file(command, Path(folder) / f"{index}.wav", voice, speed)
            except SynthesisError as error:
                raise EvalError(f"the voice leg: {error}") from error
            heard = [listener.hear(u) for u in UtteranceSegmenter().segment(FileSource(wav))]
            sent = [h for h in heard if h.sent]
            reason = "; ".join(h.reason for h in heard if h.reason) or ("nothing heard" if not heard else "")
            if len(heard) > 1:
                reason = f"split into {len(heard)} utterances" + (f"; {reason}" if reason else "")
            spoken.append(SpokenCommand(
                typed=command,
                heard=" ".join(h.text for h in sent),
                sent=bool(sent),
                reason=reason,
                voice=voice,
                confidence=min((h.confidence for h in heard), default=0.0),
                recognition_seconds=sum(h.recognition_seconds for h in heard),
            ))  # fmt: skip
    return spoken


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word edits / reference words over all pairs, on normalised words (lower case, no punctuation)."""
    import jiwer

    from lisa_ros.speech import normalise

    references = [" ".join(normalise(text)) for text in references]
    hypotheses = [" ".join(normalise(text)) for text in hypotheses]
    return float(jiwer.wer(references, hypotheses))


def voice_metrics(spoken: Sequence[SpokenCommand]) -> dict:
    """WER overall and per voice, exact sentences, commands not sent, recognition time, every pair."""
    if not spoken:
        return {"count": 0}
    by_voice = {}
    for voice in dict.fromkeys(item.voice for item in spoken):
        mine = [item for item in spoken if item.voice == voice]
        by_voice[voice] = word_error_rate([i.typed for i in mine], [i.heard for i in mine])
    times = [item.recognition_seconds for item in spoken]
    return {
        "count": len(spoken),
        "wer": word_error_rate([i.typed for i in spoken], [i.heard for i in spoken]),
        "wer_by_voice": by_voice,
        "exact": sum(word_error_rate([i.typed], [i.heard]) == 0 for i in spoken) / len(spoken),
        "not_sent": sum(not item.sent for item in spoken),
        "recognition_s": {"median": statistics.median(times), "max": max(times)},
        "commands": [asdict(item) for item in spoken],
    }
