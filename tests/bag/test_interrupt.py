"""lisa-eval-bag stopped by SIGTERM or SIGINT mid-run: a readable output bag and metrics marked incomplete.

A real `lisa-eval-bag` process (the built-in demo model: nothing to train first) on a small bag
(tests.bag.test_bag_eval.write_bag) with a long script, signalled once the progress bar shows
its first answer. Before, SIGTERM left an output
bag without metadata.yaml (unreadable) and SIGINT a traceback and no metrics at all.
"""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lisa_ros.bag.typestore import typestore
from tests.bag.test_bag_eval import PARAMS, read_bag, write_bag

pytestmark = pytest.mark.timeout(300)

COMMANDS = 400  # far more than are answered between the first answer and the signal


@pytest.mark.parametrize(
    "number, storage", [(signal.SIGTERM, "sqlite3"), (signal.SIGINT, "mcap")], ids=["SIGTERM", "SIGINT"]
)
def test_signal_stops_at_a_boundary_and_writes_partial_outputs(tmp_path, number, storage):
    store = typestore()
    bag = write_bag(tmp_path / "in", store, storage, commands=())  # the output bag has the input's storage
    script = tmp_path / "script.jsonl"
    script.write_text("".join(f'{{"time": {0.01 + 1.4 * i / COMMANDS:.6f}, "command": "segment the red square"}}\n'
                              for i in range(COMMANDS)))  # fmt: skip
    output = tmp_path / "out"
    command = [str(Path(sys.executable).with_name("lisa-eval-bag")), str(bag), "-o", str(output),
               "--script", str(script)] + [f"-p{name}:={value}" for name, value in PARAMS.items()]  # fmt: skip
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        # As from a terminal: a suite started in the background (`make test &`) ignores SIGINT, and
        # lisa-eval-bag rightly keeps an ignored signal ignored.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not re.search(r"answers=\d", log.read_text()):  # the progress bar's answer count
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no answer in 120 s"
            time.sleep(0.02)
        process.send_signal(number)
        stdout, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    err = log.read_text()
    assert process.returncode == 128 + number, err
    assert f"stopped by {number.name}" in err and "Traceback" not in err

    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["complete"] is False and metrics["stopped_by"] == number.name
    answered = metrics["counts"]["commands"]
    assert 1 <= answered < COMMANDS and len(metrics["commands"]) == answered
    topics, written = read_bag(output / "bag", store)  # rosbags opens it: metadata.yaml was written
    assert written == storage
    assert len(topics["/lisa/result"]) == answered
    assert len(topics["/image"]) == metrics["counts"]["frames"] >= 1
    assert "Partial: stopped by " + number.name in (output / "report.html").read_text()
    assert f"commands {answered}," in stdout
