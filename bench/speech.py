"""Word error rate and recognition time of the embedded recogniser on unseen phrasings.

    python -m bench.speech
    python -m bench.speech --voices en-us en-us+f3 --speeds 140 175 --language-weight 10 --top-gaussians 32
    lisa-adapt-speech --espeak-voices en-us en-us+f3 --output outputs/bench/speech_model
    python -m bench.speech --acoustic-model outputs/bench/speech_model

Every held-out phrasing of the demo intents (`INTENTS[k].heldout`, never in the language
model) is rendered with espeak-ng in each voice and speed, and recognised by
`PocketSphinxRecognizer` with its default language model (the training phrasings and the
catalogue's object names), and the wheel's en-us acoustic model or `--acoustic-model` (one
lisa-adapt-speech fitted to espeak-ng voices with the training phrasings only). Printed per
voice/speed: WER (jiwer's word edits / reference words, after `normalise`), sentence accuracy,
median recognition time per utterance; plus the pairs that were wrong. Targets (issue 15):
WER <= 5 %, <= 0.2 s per utterance on this CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

from tqdm import tqdm

from lisa_ros.bag.voice import word_error_rate
from lisa_ros.speech import PocketSphinxRecognizer, normalise, read_audio
from lisa_ros.speech.say import speak_to_file
from lisa_ros.synthetic.intents import INTENTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voices", nargs="+", default=["en-us", "en-us+f3"], help="espeak-ng voices")
    parser.add_argument("--speeds", nargs="+", type=int, default=[140, 175], help="espeak-ng words per minute")
    parser.add_argument("--language-weight", type=float, default=None, help="pocketsphinx -lw (default: the engine's)")
    parser.add_argument("--word-penalty", type=float, default=None, help="pocketsphinx -wip (default: the engine's)")
    parser.add_argument("--discount", type=float, default=None, help="Kneser-Ney discount (default: the engine's)")
    parser.add_argument("--top-gaussians", type=int, default=None, help="pocketsphinx -topn (default: the engine's)")
    parser.add_argument("--acoustic-model", type=Path, help="acoustic model folder (default: the wheel's en-us)")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench/speech.json"), help="JSON path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = {name: value for name, value in [("language_weight", args.language_weight),
                                                ("word_penalty", args.word_penalty),
                                                ("discount", args.discount),
                                                ("top_gaussians", args.top_gaussians)] if value is not None}
    recognizer = PocketSphinxRecognizer(hmm=args.acoustic_model, **options)
    phrasings = [p for intent in INTENTS.values() for p in intent.heldout]
    rows, wrong = [], []
    with tempfile.TemporaryDirectory() as folder:
        for voice, speed in tqdm([(v, s) for v in args.voices for s in args.speeds], desc="voices", unit="voice"):
            heard, times = [], []
            for i, phrasing in enumerate(phrasings):
                path = Path(folder) / f"{voice}-{speed}-{i}.wav"
                transcript = recognizer.recognize(read_audio(speak_to_file(phrasing, path, voice, speed)))
                heard.append(transcript.text)
                times.append(transcript.seconds)
                if word_error_rate([phrasing], [transcript.text]):
                    wrong.append({"voice": voice, "speed": speed, "reference": " ".join(normalise(phrasing)),
                                  "heard": transcript.text, "confidence": round(transcript.confidence, 3)})
            exact = sum(word_error_rate([p], [h]) == 0 for p, h in zip(phrasings, heard))
            rows.append({"voice": voice, "speed": speed, "utterances": len(phrasings),
                         "wer": word_error_rate(phrasings, heard), "sentence_accuracy": exact / len(phrasings),
                         "median_seconds": statistics.median(times), "heard": heard})
    # Every voice/speed speaks the same phrasings: the overall rate is the mean of theirs.
    overall = statistics.mean(r["wer"] for r in rows)
    print(f"{'voice':<12} {'speed':>5} {'WER':>7} {'exact':>7} {'median s':>9}")
    for r in rows:
        print(f"{r['voice']:<12} {r['speed']:>5} {r['wer']:>7.3f} {r['sentence_accuracy']:>7.2f} "
              f"{r['median_seconds']:>9.3f}")
    print(f"overall WER {overall:.3f} (target <= 0.05); out-of-vocabulary words in the held-out phrasings: "
          f"{sorted({w for p in phrasings for w in normalise(p)} - set(recognizer.words))}")
    for w in wrong:
        print(f"  {w['voice']}/{w['speed']}: '{w['reference']}' -> '{w['heard']}' ({w['confidence']})")
    result = {"engine": "pocketsphinx", "options": options, "acoustic_model": str(args.acoustic_model or "en-us"),
              "rows": rows, "overall_wer": overall, "wrong": wrong,
              "machine": platform.processor() or platform.machine()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
