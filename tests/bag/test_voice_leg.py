"""The evaluation's voice leg: a script's commands spoken with espeak-ng, heard by the speech
node's path, and what was heard answered; the summary compares with typed commands."""

import json

import jiwer
import pytest

from lisa_ros.bag.runner import evaluate
from lisa_ros.bag.voice import word_error_rate
from lisa_ros.cli.eval_bag import main
from lisa_ros.speech import normalise
from tests.bag.test_bag_eval import decoded, read_bag, write_bag

pytestmark = pytest.mark.timeout(300)

SPOKEN = ("Which food here has the most vitamin C?", "something to read", "the sourest fruit")


@pytest.fixture(scope="module")
def store():
    from lisa_ros.bag.typestore import typestore

    return typestore()


@pytest.fixture(scope="module")
def params():
    """The built-in demo model (no model_path): the plumbing is under test, not the answers."""
    return {"max_new_tokens": 8, "keep_conversation": False, "device": "cpu"}


SQUARE = [[8, 8], [23, 8], [23, 23], [8, 23]]  # a truth polygon, so that there is a gIoU to compare


def script(path, commands=SPOKEN):
    lines = [{"time": 0.25 + 0.4 * i, "command": c, "polygon": SQUARE} for i, c in enumerate(commands)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_the_heard_commands_are_answered_and_scored(tmp_path, store, params):
    bag = write_bag(tmp_path / "in", store, "mcap", commands=())
    evaluation = evaluate(bag, tmp_path / "out", params, script=script(tmp_path / "s.jsonl"), progress=False,
                          report=False, voices=("en-us", "en-us+f3"))  # fmt: skip
    voice = evaluation.metrics["voice"]
    heard = [c["heard"] for c in voice["commands"]]
    assert [c["typed"] for c in voice["commands"]] == list(SPOKEN)
    assert [c["voice"] for c in voice["commands"]] == ["en-us", "en-us+f3", "en-us"]
    assert heard[0] == "which food here has the most vitamin c"  # a training phrasing, heard exactly
    topics, _ = read_bag(tmp_path / "out" / "bag", store)
    assert [r.command for _, r in decoded(topics, "/lisa/result", store)] == heard  # what was heard is answered
    references = [" ".join(normalise(text)) for text in SPOKEN]
    assert voice["wer"] == pytest.approx(jiwer.wer(references, heard))
    assert voice["wer_by_voice"]["en-us+f3"] == pytest.approx(word_error_rate([SPOKEN[1]], [heard[1]]))


def test_the_summary_puts_voice_next_to_typed(tmp_path, store, params, capsys):
    bag = write_bag(tmp_path / "in", store, "mcap", commands=())
    model = ["-p", "max_new_tokens:=8", "-p", "keep_conversation:=false", "--no-progress"]
    commands = script(tmp_path / "s.jsonl", SPOKEN[:1])
    assert main([str(bag), "--script", str(commands), "-o", str(tmp_path / "typed"), *model]) == 0
    assert main([str(bag), "--script", str(commands), "-o", str(tmp_path / "voice"), "--voice", "en-us", *model,
                 "--typed-metrics", str(tmp_path / "typed" / "metrics.json")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "voice: WER 0.000 (en-us 0.000), 100 % heard exactly, 0 not sent" in out
    assert "difference +0.0000" in out  # heard exactly: the same answer as typed

    assert main([str(bag), "-o", str(tmp_path / "o3"), "--voice", "en-us", *model]) == 2
    assert "give --script" in capsys.readouterr().err
