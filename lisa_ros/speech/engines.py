"""Speech-to-text engines behind one interface: `Recognizer.recognize(audio) -> Transcript`.

- `PocketSphinxRecognizer`, the embedded default: CMU PocketSphinx with the en-us acoustic
  model and CMUdict its wheel ships (no download), and a trigram language model built at
  start-up (`lisa_ros.speech.lm`) from the sentences the deployment expects: the training
  phrasings of the demo intents by default, a user text file otherwise. The dictionary is
  restricted to the corpus' words and their other inflections (lemminflect), so that the
  decoder cannot wander off the vocabulary.
  Its decoder dithers the audio and scores 16 Gaussians per codebook, not pocketsphinx's 4:
  on espeak-ng speech of unseen phrasings (bench/speech.py) the two took the word error rate
  from 0.48 to 0.32 (0.29 with 32 Gaussians, at about 1.6x the time).
- `WhisperRecognizer`: a Whisper checkpoint through `transformers`, when a model path is given.
  transformers and torch are imported in its constructor only.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .audio import SAMPLE_RATE
from .lm import build_arpa, normalise, read_sentences


@dataclass(frozen=True)
class Transcript:
    """What an engine heard: text (lower case, '' for nothing), confidence in 0..1, recognition time in seconds."""

    text: str
    confidence: float
    seconds: float


class Recognizer:
    """The engine interface."""

    def recognize(self, audio: np.ndarray) -> Transcript:
        """Arguments:
            audio (np.ndarray): one utterance, 16 kHz mono int16, shape (N,).

        Returns:
            Transcript: the text, its confidence and the recognition time.
        """
        raise NotImplementedError


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    assert audio.dtype == np.int16 and audio.ndim == 1, (
        f"audio must be 1-D int16 at 16 kHz, got {audio.dtype} {audio.shape}")
    return audio


def demo_sentences() -> list[str]:
    """The training phrasings of the demo intents (never the held-out ones): the default corpus."""
    from lisa_ros.synthetic.intents import INTENTS

    return [phrasing for intent in INTENTS.values() for phrasing in intent.train]


def demo_vocabulary() -> list[str]:
    """The demo's object names (words of the catalogue), which the phrasings may not all use."""
    from lisa_ros.synthetic.catalogue import CATEGORIES

    return sorted({word for name in CATEGORIES for word in normalise(name)})


# Demo words CMUdict lacks, spelt in its phone set.
DEMO_PRONUNCIATIONS = {"sourest": "S AW ER IH S T"}


def read_cmudict(path: str | Path) -> dict[str, list[str]]:
    """CMUdict lines 'word PH ON ES' (variants 'word(2) ...') as word -> its pronunciation lines."""
    entries: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            head, _, phones = line.strip().partition(" ")
            if phones:
                entries.setdefault(head.split("(")[0], []).append(f"{head} {phones.split('#')[0].strip()}")
    return entries


def inflected_forms(words: Iterable[str]) -> list[str]:
    """The other inflections of `words`' lemmas (lemminflect): "drive" -> "drives", "drove", "driving", ...

    People say new forms of the words a deployment expects ("the tool that drives nails" where
    the sentences had "drive a nail"); a vocabulary without them turns each into other words.
    """
    from lemminflect import getAllInflections, getAllLemmas

    words = set(words)
    lemmas = words | {lemma for w in words for found in getAllLemmas(w).values() for lemma in found}
    forms = {form for lemma in lemmas for found in getAllInflections(lemma).values() for form in found}
    return sorted((forms | lemmas) - words)


def dictionary_lines(words: Iterable[str], pronunciations: dict[str, str] | None = None,
                     dictionary: str | Path | None = None, optional: Iterable[str] = ()) -> list[str]:
    """The pronunciation lines of `words` and `optional` (variants included) for a pocketsphinx dictionary.

    Arguments:
        words (Iterable[str]): normalised words.
        optional (Iterable[str]): more words, left out when the dictionary lacks them.
        pronunciations (dict[str, str] | None): extra 'word -> phones' entries for words the
            dictionary lacks; None: `DEMO_PRONUNCIATIONS`.
        dictionary (str | Path | None): a CMUdict-format file; None: the pocketsphinx wheel's CMUdict.

    Raises:
        ValueError: words with no pronunciation (listed).
    """
    import pocketsphinx

    dictionary = dictionary or Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    entries = read_cmudict(dictionary)
    for word, phones in (DEMO_PRONUNCIATIONS if pronunciations is None else pronunciations).items():
        entries.setdefault(word.lower(), [f"{word.lower()} {phones}"])
    words = sorted(set(words) | {w for w in optional if w in entries})
    missing = [w for w in words if w not in entries]
    if missing:
        raise ValueError(f"{len(missing)} words have no pronunciation in {dictionary}: {', '.join(missing)}; "
                         "rephrase them, or give their phones in `pronunciations`")
    return [line for w in words for line in entries[w]]


class PocketSphinxRecognizer(Recognizer):
    """PocketSphinx with a language model of the expected sentences, built at construction.

    Arguments:
        sentences (Sequence[str] | None): the corpus; None: `demo_sentences()`.
        sentences_file (str | Path | None): a text file of sentences, one a line (instead of `sentences`).
        vocabulary (Iterable[str] | None): extra words the model may hear (unigram floor);
            None: `demo_vocabulary()` when the demo corpus is used, else none.
        inflections (bool): also the other inflections of every word (`inflected_forms`, at the
            unigram floor, those the dictionary has): on unseen espeak-ng phrasings with an adapted
            acoustic model, WER 0.036 against 0.059 without.
        order (int): n-gram order of the language model.
        discount (float): Kneser-Ney discount.
        language_weight (float): the weight of the language model against the acoustics, in all three
            of pocketsphinx's passes (`-lw`, `-fwdflatlw`, `-bestpathlw`; pocketsphinx's own defaults
            differ per pass, 6.5 / 8.5 / 9.5, so that `-lw` alone leaves the final pass unchanged).
        word_penalty (float): pocketsphinx `-wip`, the word insertion penalty.
        top_gaussians (int): pocketsphinx `-topn`, the Gaussians scored per codebook of the en-us
            (phonetically tied mixture) model: more are more exact and slower (4, its default, lost
            half the words of espeak-ng speech; see bench/speech.py for the numbers).
        pronunciations (dict[str, str] | None): extra 'word -> phones' entries (CMUdict's phone
            set) for words the dictionary lacks; None: `DEMO_PRONUNCIATIONS`.
        hmm (str | Path | None), dictionary (str | Path | None): acoustic model folder and
            pronunciation dictionary; None: the wheel's en-us model and CMUdict.
        workdir (str | Path | None): where the ARPA and dictionary files are written; None: a temporary folder.

    Raises:
        ValueError: corpus words with no pronunciation in the dictionary (listed).
    """

    def __init__(self, sentences: Sequence[str] | None = None, sentences_file: str | Path | None = None,
                 vocabulary: Iterable[str] | None = None, inflections: bool = True, order: int = 3,
                 discount: float = 0.5, language_weight: float = 10.0, word_penalty: float = 0.65,
                 top_gaussians: int = 16,
                 pronunciations: dict[str, str] | None = None, hmm: str | Path | None = None,
                 dictionary: str | Path | None = None, workdir: str | Path | None = None):
        import pocketsphinx

        assert sentences is None or sentences_file is None, "give sentences or sentences_file, not both"
        if sentences_file is not None:
            sentences = read_sentences(sentences_file)
        elif sentences is None:
            sentences = demo_sentences()
            vocabulary = demo_vocabulary() if vocabulary is None else vocabulary
        vocabulary = list(vocabulary or ())
        hmm = Path(hmm) if hmm is not None else Path(pocketsphinx.get_model_path()) / "en-us" / "en-us"
        if not (hmm / "mdef").is_file():
            raise FileNotFoundError(f"no acoustic model at {hmm} (a folder with mdef, means, variances, ...)")
        words = sorted({w for s in sentences for w in normalise(s)} | {w for v in vocabulary for w in normalise(v)})
        lines = dictionary_lines(words, pronunciations, dictionary, inflected_forms(words) if inflections else ())
        words = sorted({line.split()[0].split("(")[0] for line in lines})  # with the inflections found
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lisa-speech-")
            workdir = self._tmp.name
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.lm_path = workdir / "commands.arpa"
        self.dict_path = workdir / "commands.dict"
        self.lm_path.write_text(build_arpa(sentences, order=order, discount=discount, vocabulary=words))
        self.dict_path.write_text("".join(line + "\n" for line in lines))
        self.words = words
        # dither: one bit of noise on every sample. Digital silence (exact zeros, as synthesised or
        # gated audio has) gives the mel filters log(0) floors that drag the cepstral mean and
        # wreck the features of the whole utterance; the noise costs nothing on microphone audio.
        # Its generator is seeded the same for every utterance, so the results are repeatable.
        self._decoder = pocketsphinx.Decoder(hmm=str(hmm), lm=str(self.lm_path), dict=str(self.dict_path),
                                             lw=language_weight, fwdflatlw=language_weight,
                                             bestpathlw=language_weight, wip=word_penalty,
                                             topn=top_gaussians, dither=True, bestpath=True,
                                             loglevel="FATAL")

    def recognize(self, audio: np.ndarray) -> Transcript:
        audio = _check_audio(audio)
        begin = time.perf_counter()
        decoder = self._decoder
        decoder.start_utt()
        decoder.process_raw(audio.tobytes(), full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        text = " ".join(normalise(hypothesis.hypstr)) if hypothesis is not None else ""
        # The sentence's posterior probability in the lattice (bestpath), in 0..1 but shrinking with
        # length; its geometric mean per word is comparable across lengths: ~0.5-0.7 for a right
        # transcript of espeak-ng audio, ~0.25 for a wrong one.
        posterior = min(max(float(decoder.get_prob()), 1e-300), 1.0)
        confidence = posterior ** (1.0 / len(text.split())) if text else 0.0
        return Transcript(text, confidence, time.perf_counter() - begin)


class WhisperRecognizer(Recognizer):
    """A Whisper checkpoint (a folder `save_pretrained` wrote: model and processor) through transformers.

    Arguments:
        model_path (str | Path): the model folder, with the processor's files.
        device (str): torch device.
        language (str | None): spoken language (e.g. "en"); None: the model detects it.
        max_new_tokens (int): longest transcript, in tokens.

    Confidence: exp of the mean log-probability of the generated tokens.
    """

    def __init__(self, model_path: str | Path, device: str = "cpu", language: str | None = "en",
                 max_new_tokens: int = 64):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        if not Path(model_path).is_dir():
            raise FileNotFoundError(f"no Whisper model folder at {model_path}")
        self._torch = torch
        self.processor = WhisperProcessor.from_pretrained(str(model_path))
        self.model = WhisperForConditionalGeneration.from_pretrained(str(model_path)).to(device).eval()
        self.device = device
        self.language = language
        self.max_new_tokens = max_new_tokens

    def recognize(self, audio: np.ndarray) -> Transcript:
        audio = _check_audio(audio)
        begin = time.perf_counter()
        features = self.processor(audio.astype(np.float32) / 32768.0, sampling_rate=SAMPLE_RATE,
                                  return_tensors="pt").input_features.to(self.device)
        options = {"language": self.language, "task": "transcribe"} if self.language else {}
        with self._torch.inference_mode():
            out = self.model.generate(features, max_new_tokens=self.max_new_tokens, output_scores=True,
                                      return_dict_in_generate=True, **options)
        scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        text = self.processor.batch_decode(out.sequences, skip_special_tokens=True)[0]
        text = " ".join(normalise(text))
        logprobs = scores[0][self._torch.isfinite(scores[0])]
        confidence = math.exp(float(logprobs.mean())) if text and logprobs.numel() else 0.0
        return Transcript(text, confidence, time.perf_counter() - begin)
