"""Acoustic model adaptation: the en-us model fitted to the voices a robot will hear.

PocketSphinx's en-us model was trained on human read speech. A voice far from it (a synthetic
voice such as espeak-ng, an accent, a robot's far-field microphone) loses words even when the
language model knows the sentence: on espeak-ng, unseen phrasings over the demo's vocabulary
came out at 0.31 word error rate (bench/speech.py). A few minutes of transcribed speech in that
voice fix most of it, and the phrasings need not be the ones later spoken: they only have to
cover the phones.

The procedure is CMUSphinx's documented MAP adaptation, run with sphinxtrain's own tools
(Debian packages `sphinxtrain`, `sphinxbase-utils` for sphinx_fe, `pocketsphinx` for
pocketsphinx_mdef_convert):

1. features of every recording with the model's own `feat.params` (sphinx_fe);
2. Baum-Welch statistics over the transcripts (bw);
3. MAP re-estimation of the means, variances, mixture weights and transitions (map_adapt);
4. the 8-bit mixture weights pocketsphinx reads (mk_s2sendump).

One step is ours: the pocketsphinx wheel ships its mixture weights only as that 8-bit
`sendump`, while bw and map_adapt read the float `mixture_weights` file, and no tool writes one
back from a sendump. `sendump_to_mixture_weights` does (numpy; the s3 file format with its
checksum, checked against the wheel's own `means`).
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .audio import SAMPLE_RATE, audio_files, read_audio
from .lm import normalise
from .say import speak_to_file

# Where the sphinxtrain programs are: Debian puts them off PATH, a source build in libexec.
SPHINXTRAIN_DIRS = (Path("/usr/lib/sphinxtrain"), Path("/usr/local/libexec/sphinxtrain"),
                    Path("/usr/libexec/sphinxtrain"))
TOOL_PACKAGES = {"sphinx_fe": "sphinxbase-utils", "pocketsphinx_mdef_convert": "pocketsphinx",
                 "bw": "sphinxtrain", "map_adapt": "sphinxtrain", "mk_s2sendump": "sphinxtrain"}
S3_BYTE_ORDER_MAGIC = 0x11223344
# pocketsphinx stores a mixture weight w as round(-log_1.0001(w) / 2**10), clipped to 0..255.
SENDUMP_LOG_STEP = 1024 * math.log(1.0001)


class AdaptationError(RuntimeError):
    """A tool that is missing or failed, or recordings that cannot be used, with what to do."""


@dataclass(frozen=True)
class Recording:
    """One utterance for adaptation: its audio file and what was said."""

    audio: Path
    text: str


@dataclass(frozen=True)
class AdaptationReport:
    model: Path  # the adapted model folder (pass as `hmm` / the `acoustic_model` parameter)
    utterances: int  # recordings given
    ignored: list[str]  # those Baum-Welch could not align to their transcript (left out)


def tool(name: str) -> str:
    """The path of a sphinxtrain / sphinxbase program.

    Raises:
        AdaptationError: not installed, naming the Debian package that has it.
    """
    found = shutil.which(name) or next((str(d / name) for d in SPHINXTRAIN_DIRS if (d / name).is_file()), None)
    if found is None:
        raise AdaptationError(f"{name} not found: adaptation needs sphinxtrain's tools "
                              f"(apt-get install {TOOL_PACKAGES[name]}; make setup installs them)")
    return found


def s3_checksum(words: np.ndarray, checksum: int = 0) -> int:
    """The s3 files' running checksum over 32-bit words (rotate left by 20, add)."""
    for word in words.tolist():
        checksum = (((checksum << 20) | (checksum >> 12)) + word) & 0xFFFFFFFF
    return checksum


def read_sendump(path: str | Path) -> np.ndarray:
    """pocketsphinx's 8-bit mixture weights, shape (features, densities, senones), uint8 (-log scaled)."""
    data = Path(path).read_bytes()
    offset = 0

    def int32() -> int:
        nonlocal offset
        value = struct.unpack_from("<i", data, offset)[0]
        offset += 4
        return value

    header = {}
    length = int32()  # the title, then "key value" strings until an empty one
    while length:
        key, _, value = data[offset:offset + length].rstrip(b"\0").decode("ascii", "replace").partition(" ")
        header[key] = value
        offset += length
        length = int32()
    if int(header.get("cluster_count", "0")) != 0:
        raise AdaptationError(f"{path}: clustered mixture weights are not supported")
    densities, senones = int32(), int32()
    features = int(header.get("feature_count", "1"))
    if len(data) - offset != features * densities * senones:
        raise AdaptationError(f"{path}: {len(data) - offset} bytes of weights, expected "
                              f"{features}x{densities}x{senones}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(features, densities, senones)


def sendump_to_mixture_weights(sendump: str | Path, output: str | Path) -> None:
    """Write a sendump's weights as an s3 `mixture_weights` file (float32, senones x features x densities)."""
    scaled = read_sendump(sendump)
    weights = np.exp(-scaled.astype(np.float64) * SENDUMP_LOG_STEP).transpose(2, 0, 1)
    weights = (weights / weights.sum(axis=-1, keepdims=True)).astype("<f4")
    body = np.concatenate([np.array([*weights.shape, weights.size], "<u4"), weights.reshape(-1).view("<u4")])
    with open(output, "wb") as file:
        file.write(b"s3\nversion 1.0\nchksum0 yes\nendhdr\n")
        file.write(struct.pack("<I", S3_BYTE_ORDER_MAGIC))
        file.write(body.tobytes())
        file.write(struct.pack("<I", s3_checksum(body)))


def read_feat_params(path: str | Path) -> dict[str, str]:
    """A model's feat.params ('-name value' lines) as {name: value}."""
    params = {}
    for line in Path(path).read_text().splitlines():
        name, _, value = line.strip().partition(" ")
        if name.startswith("-"):
            params[name] = value.strip()
    return params


def recordings_from_folder(folder: str | Path) -> list[Recording]:
    """Each audio file (WAV, FLAC, OGG) of `folder` with the transcript in the .txt file of the same name.

    Raises:
        AudioError: no audio files there.
        AdaptationError: an audio file without its transcript.
    """
    files = audio_files(folder)
    missing = [f.name for f in files if not f.with_suffix(".txt").is_file()]
    if missing:
        raise AdaptationError(f"no transcript (.txt of the same name) for {', '.join(missing)} in {folder}")
    return [Recording(f, f.with_suffix(".txt").read_text().strip()) for f in files]


def speak_sentences(sentences: Sequence[str], voices: Sequence[str], speeds: Sequence[int],
                    folder: str | Path) -> list[Recording]:
    """Every sentence spoken with espeak-ng in every voice and speed (words per minute), as WAVs in `folder`.

    Raises:
        SynthesisError: espeak-ng is missing or cannot speak in a voice.
    """
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s, i, text) for v in voices for s in speeds for i, text in enumerate(sentences)]
    return [Recording(speak_to_file(text, folder / f"{voice.replace('+', '_')}-{speed}-{index:04d}.wav", voice, speed),
                      text)
            for voice, speed, index, text in tqdm(jobs, desc="espeak-ng", unit="utterance", file=sys.stderr)]


def _run(args: Sequence[str], log: Path) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise AdaptationError(f"{Path(args[0]).name} failed (exit {done.returncode}; log {log}):\n{tail}")
    return done.stdout + done.stderr


def adapt_acoustic_model(recordings: Iterable[Recording], output: str | Path, base: str | Path | None = None,
                         pronunciations: dict[str, str] | None = None) -> AdaptationReport:
    """MAP-adapt an acoustic model to `recordings`, writing the adapted model folder `output`.

    Arguments:
        recordings (Iterable[Recording]): transcribed utterances of the voices to fit (any rate; mono is used).
        output (str | Path): the new model folder (replaced if it exists); its `logs/` keep the tools' output.
        base (str | Path | None): the model to adapt; None: the pocketsphinx wheel's en-us model.
        pronunciations (dict[str, str] | None): extra 'word -> phones' for words CMUdict lacks;
            None: the demo's (see `engines.DEMO_PRONUNCIATIONS`).

    Returns:
        AdaptationReport: the model folder, and the utterances that could not be aligned.

    Raises:
        AdaptationError: a tool is missing or fails, no recordings, or a word has no pronunciation.
    """
    import pocketsphinx
    import soundfile

    from .engines import dictionary_lines

    recordings = list(recordings)
    if not recordings:
        raise AdaptationError("no recordings to adapt to")
    tools = {name: tool(name) for name in TOOL_PACKAGES}
    model_root = Path(pocketsphinx.get_model_path()) / "en-us"
    base = Path(base) if base is not None else model_root / "en-us"
    output = Path(output)
    if output.exists():
        shutil.rmtree(output)
    logs = output / "logs"
    logs.mkdir(parents=True)
    params = read_feat_params(base / "feat.params")
    tied = {"ptm": ".ptm.", "semi": ".semi.", "cont": ".cont."}[params.get("-model", "cont")]
    with tempfile.TemporaryDirectory(prefix="lisa-adapt-") as work:
        work = Path(work)
        (work / "wav").mkdir()
        ids, transcripts = [], []
        for index, recording in enumerate(recordings):
            words = normalise(recording.text)
            if not words:
                raise AdaptationError(f"empty transcript for {recording.audio}")
            name = f"utt{index:05d}"
            soundfile.write(work / "wav" / f"{name}.wav", read_audio(recording.audio), SAMPLE_RATE, subtype="PCM_16")
            ids.append(name)
            transcripts.append(f"<s> {' '.join(words)} </s> ({name})")
        (work / "fileids").write_text("\n".join(ids) + "\n")
        (work / "transcription").write_text("\n".join(transcripts) + "\n")
        words = sorted({w for t in recordings for w in normalise(t.text)})
        (work / "dict").write_text("".join(line + "\n" for line in dictionary_lines(words, pronunciations)))
        weights = base / "mixture_weights"
        if not weights.is_file():
            weights = work / "mixture_weights"
            sendump_to_mixture_weights(base / "sendump", weights)
        mdef = work / "mdef.txt"
        _run([tools["pocketsphinx_mdef_convert"], "-text", base / "mdef", mdef], logs / "mdef_convert.log")
        _run([tools["sphinx_fe"], "-argfile", base / "feat.params", "-samprate", SAMPLE_RATE, "-c", work / "fileids",
              "-di", work / "wav", "-do", work / "wav", "-ei", "wav", "-eo", "mfc", "-mswav", "yes",
              "-dither", "yes", "-seed", 1], logs / "sphinx_fe.log")
        (work / "acc").mkdir()
        feature = [arg for name in ("-feat", "-svspec", "-cmn", "-agc", "-varnorm") if name in params
                   for arg in (name, params[name])]
        bw_log = _run([tools["bw"], "-hmmdir", base, "-moddeffn", mdef, "-ts2cbfn", tied, "-mixwfn", weights,
                       "-dictfn", work / "dict", "-fdictfn", base / "noisedict", "-ctlfn", work / "fileids",
                       "-lsnfn", work / "transcription", "-cepdir", work / "wav", "-accumdir", work / "acc",
                       *feature], logs / "bw.log")
        ignored = [line.split()[-2] for line in bw_log.splitlines() if line.rstrip().endswith(" ignored")]
        ignored = [recordings[int(name[3:])].audio.name for name in ignored if name.startswith("utt")]
        if len(ignored) == len(recordings):
            raise AdaptationError(f"no recording could be aligned to its transcript (log {logs / 'bw.log'})")
        _run([tools["map_adapt"], "-moddeffn", mdef, "-ts2cbfn", tied, "-meanfn", base / "means",
              "-varfn", base / "variances", "-mixwfn", weights, "-tmatfn", base / "transition_matrices",
              "-accumdir", work / "acc", "-mapmeanfn", output / "means", "-mapvarfn", output / "variances",
              "-mapmixwfn", work / "adapted_mixture_weights", "-maptmatfn", output / "transition_matrices"],
             logs / "map_adapt.log")
        _run([tools["mk_s2sendump"], "-pocketsphinx", "yes", "-moddeffn", mdef,
              "-mixwfn", work / "adapted_mixture_weights", "-sendumpfn", output / "sendump"], logs / "mk_s2sendump.log")
    for name in ("mdef", "feat.params", "noisedict"):
        shutil.copy(base / name, output / name)
    return AdaptationReport(output, len(recordings), ignored)
