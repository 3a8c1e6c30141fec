"""The engines: the language model builder, PocketSphinx on espeak-ng speech, Whisper on a tiny random model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lisa_ros.speech.commands import EMPTY, LOW_CONFIDENCE, decide
from lisa_ros.speech.engines import PocketSphinxRecognizer, Transcript, WhisperRecognizer
from lisa_ros.speech.lm import build_arpa, normalise


@pytest.fixture(scope="module")
def sphinx():
    return PocketSphinxRecognizer()


def read_arpa(text: str) -> dict[int, dict[tuple, tuple]]:
    grams: dict[int, dict[tuple, tuple]] = {}
    order = 0
    for line in text.splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            order = int(line[1])
            grams[order] = {}
        elif order and line and not line.startswith("\\"):
            fields = line.split("\t")
            grams[order][tuple(fields[1].split())] = tuple(map(float, [fields[0]] + fields[2:]))
    return grams


def test_the_arpa_model_is_valid_and_normalised():
    sentences = ["Which fruit is very sour?", "the fruit to make lemonade", "Which object is the tallest?"]
    text = build_arpa(sentences, vocabulary=["kiwi"])
    assert text.lstrip().startswith("\\data\\") and text.rstrip().endswith("\\end\\")
    grams = read_arpa(text)
    for n in (1, 2, 3):
        assert f"ngram {n}={len(grams[n])}" in text
    assert ("kiwi",) in grams[1] and ("which", "fruit", "is") in grams[3]
    # Every n-gram's prefix and suffix are lower-order entries (ARPA's rule).
    for n in (2, 3):
        assert all(g[:-1] in grams[n - 1] and g[1:] in grams[n - 1] for g in grams[n])
    # p(w | h) over the whole vocabulary sums to 1 for a seen context, via back-off.
    vocab = [g[0] for g in grams[1] if g != ("<s>",)]

    def p(w, h):
        if h + (w,) in grams[len(h) + 1]:
            return 10 ** grams[len(h) + 1][h + (w,)][0]
        back = grams[len(h)].get(h, (0.0, 0.0))
        return 10 ** (back[1] if len(back) > 1 else 0.0) * p(w, h[1:])

    for context in [("<s>", "which"), ("fruit",), ("the", "fruit")]:
        assert math.isclose(sum(p(w, context) for w in vocab), 1.0, abs_tol=1e-4)


def test_normalise_keeps_apostrophes():
    assert normalise("I'm going for a run; what holds my water?") == ["i'm", "going", "for", "a", "run", "what",
                                                                      "holds", "my", "water"]


def test_pocketsphinx_loads_the_built_model_and_recognises_a_training_phrasing(sphinx, speech):
    assert sphinx.lm_path.read_text().startswith("\n\\data\\")
    assert "vitamin" in sphinx.words and "scissors" in sphinx.words  # the catalogue's names too
    transcript = sphinx.recognize(speech("Which food here has the most vitamin C?", voice="en-us+f3"))
    assert transcript.text == "which food here has the most vitamin c"
    assert 0.3 < transcript.confidence <= 1.0
    assert 0.0 < transcript.seconds < 2.0
    assert decide(transcript).send


def test_speech_between_digital_silence_is_recognised(sphinx, speech):
    """espeak-ng pads with exact zeros: without dither they wreck the cepstral mean (this phrasing came
    out as 'the tool to read'), so the engine must dither."""
    audio = speech("Which object can cut a paper strip?", voice="en-us", speed=140)
    silence = np.zeros(8000, np.int16)
    assert sphinx.recognize(np.concatenate([silence, audio, silence])).text == "which object can cut a paper strip"
    assert sphinx.recognize(audio).text == sphinx.recognize(audio).text  # the dither is repeatable


def test_silence_recognises_nothing_and_is_not_sent(sphinx):
    transcript = sphinx.recognize(np.zeros(16000, np.int16))
    assert transcript.text == "" and transcript.confidence == 0.0
    assert decide(transcript).reason == EMPTY


def test_low_confidence_is_not_sent():
    decision = decide(Transcript("the sourest fruit", 0.2, 0.05), min_confidence=0.5)
    assert not decision.send and decision.reason.startswith(LOW_CONFIDENCE)


def test_a_user_sentence_file_and_missing_words(tmp_path):
    (tmp_path / "commands.txt").write_text("# my robot\nbring me the red cup\n\nput it on the shelf\n")
    recognizer = PocketSphinxRecognizer(sentences_file=tmp_path / "commands.txt", workdir=tmp_path / "lm",
                                        inflections=False)
    assert recognizer.words == sorted(set("bring me the red cup put it on shelf".split()))
    # With inflections (the default), new forms of those words are heard too, at the unigram floor.
    inflected = PocketSphinxRecognizer(sentences_file=tmp_path / "commands.txt", workdir=tmp_path / "lm1")
    assert {"brought", "bringing", "cups", "shelves", "puts"} <= set(inflected.words)
    assert "brought" not in recognizer.words and "\tbrought\n" not in recognizer.lm_path.read_text()
    assert "\tbrought\n" in inflected.lm_path.read_text()
    with pytest.raises(ValueError, match="2 words have no pronunciation .*: blorptastic, zzyzxq"):
        PocketSphinxRecognizer(sentences=["fetch the blorptastic zzyzxq"], workdir=tmp_path / "lm2")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet Whisper's tokenizer uses)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


def tiny_whisper(folder):
    """A random-weight Whisper with a byte-level tokenizer (no merges) and the default feature extractor."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    vocab = {c: i for i, c in enumerate(_bytes_to_unicode().values())}
    vocab.update({token: len(vocab) + i for i, token in enumerate(specials)})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    end = "<|endoftext|>"
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token=end,
                                 bos_token=end, eos_token=end, pad_token=end)
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    ids = {token: vocab[token] for token in specials}
    config = WhisperConfig(vocab_size=len(vocab), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_target_positions=64,
                           decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[end],
                           pad_token_id=ids[end], bos_token_id=ids[end])
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[end], pad_token_id=ids[end],
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True, lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}, max_length=64)
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(folder)
    return folder


def test_whisper_runs_end_to_end_on_a_tiny_random_model(tmp_path, speech):
    recognizer = WhisperRecognizer(tiny_whisper(tmp_path), max_new_tokens=8)
    transcript = recognizer.recognize(speech("the very sour fruit"))
    assert isinstance(transcript.text, str) and transcript.text == " ".join(normalise(transcript.text))
    assert 0.0 <= transcript.confidence <= 1.0 and transcript.seconds > 0
    with pytest.raises(FileNotFoundError, match="no Whisper model folder"):
        WhisperRecognizer(tmp_path / "missing")
