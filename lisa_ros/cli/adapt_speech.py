"""`lisa-adapt-speech`: fit pocketsphinx's acoustic model to the voices a robot will hear.

Argument parsing and the printed summary; the work is lisa_ros.speech.adapt.adapt_acoustic_model.
The adaptation data is either recordings (audio files with a .txt transcript of the same name)
or sentences spoken with espeak-ng voices (the demo's training phrasings by default), or both.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from lisa_ros.cli.errors import fail


def main(argv: list[str] | None = None) -> int:
    """lisa-adapt-speech: see `lisa-adapt-speech --help`. Returns the exit code (2: a missing tool,
    unreadable or untranscribed recordings, or a failed step; one line on stderr)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.recordings and not args.espeak_voices:
        parser.error("give --recordings FOLDER or --espeak-voices VOICE (or both)")
    from lisa_ros.speech.adapt import AdaptationError, adapt_acoustic_model, recordings_from_folder, speak_sentences
    from lisa_ros.speech.audio import AudioError
    from lisa_ros.speech.engines import demo_sentences
    from lisa_ros.speech.lm import read_sentences
    from lisa_ros.speech.say import SynthesisError

    try:
        with tempfile.TemporaryDirectory(prefix="lisa-adapt-speech-") as spoken:
            recordings = [r for folder in args.recordings for r in recordings_from_folder(folder)]
            if args.espeak_voices:
                sentences = read_sentences(args.sentences) if args.sentences else demo_sentences()
                recordings += speak_sentences(sentences, args.espeak_voices, args.speeds, spoken)
            report = adapt_acoustic_model(recordings, args.output)
    except (AdaptationError, AudioError, SynthesisError, OSError, ValueError) as error:
        return fail("lisa-adapt-speech", error, args.debug)
    print(json.dumps({"model": str(report.model), "utterances": report.utterances,
                      "not_aligned": report.ignored}, indent=1))
    print(f"use it: speech_node acoustic_model:={report.model} (or lisa-eval-bag --acoustic-model)", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lisa-adapt-speech",
        description="MAP-adapt pocketsphinx's en-us acoustic model to recordings or espeak-ng voices "
                    "(needs sphinxtrain, sphinxbase-utils and pocketsphinx from apt).",
    )
    parser.add_argument("--output", required=True, help="the adapted model folder (replaced if it exists)")
    parser.add_argument("--recordings", nargs="*", default=[],
                        help="folders of audio files (WAV, FLAC, OGG), each with a .txt transcript of the same name")
    parser.add_argument("--espeak-voices", nargs="*", default=[],
                        help="also speak the sentences with these espeak-ng voices (e.g. en-us en-us+f3)")
    parser.add_argument("--speeds", nargs="+", type=int, default=[140, 160, 175],
                        help="espeak-ng words per minute, each voice at each (default 140 160 175)")
    parser.add_argument("--sentences", help="a text file of sentences to speak, one a line "
                        "(default: the demo's training phrasings; never the held-out ones)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or set LISA_DEBUG=1)")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
