"""Resume: an interrupted run continues to the same losses and weights as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers.train_runs import mini_root, small_config
from training import checkpoints as ckpt
from training.train import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOSSES = ("loss/total", "loss/ce", "loss/bce", "loss/dice")


def _final_weights(run_dir):
    return ckpt.load_state(ckpt.latest_checkpoint(run_dir))["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def _assert_same_losses(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        for key in LOSSES:
            assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-7), (x["step"], key)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return mini_root(tmp_path_factory)


@pytest.fixture(scope="module")
def uninterrupted(root, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    records = Trainer(small_config(root, run, eval={"every": 3})).fit()
    return run, records


def test_stopped_and_resumed_run_matches(root, uninterrupted, tmp_path):
    straight_dir, straight = uninterrupted
    # Grad accumulation 2, LoRA dropout on, an evaluation at step 3 (best checkpoint state).
    first = Trainer(small_config(root, tmp_path, eval={"every": 3}, train={"max_steps_this_run": 3})).fit()
    assert [r["step"] for r in first] == [1, 2, 3]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000003"
    second_trainer = Trainer(small_config(root, tmp_path, eval={"every": 3}))
    second = second_trainer.fit()
    assert [r["step"] for r in second] == [4, 5, 6]
    _assert_same_losses(first + second, straight)
    _assert_same_weights(_final_weights(tmp_path), _final_weights(straight_dir))
    assert second_trainer.best["step"] in (3, 6)
    # metrics.jsonl holds every step once.
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if "loss/total" in line]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_killed_process_resumes_from_newest_checkpoint(root, uninterrupted, tmp_path):
    """A real crash: SIGKILL the training process once a checkpoint exists, start it again."""
    straight_dir, straight = uninterrupted
    overrides = [f"data.root={root}", "data.samples_per_epoch=16", "data.sample_rates=1,1,1,3",
                 "optim.lr=3e-3", "optim.warmup_steps=2", f"train.output_dir={tmp_path}", "train.steps=6",
                 "train.batch_size=2", "train.grad_accum=2", "train.save_every=2", "train.log_every=1",
                 "train.progress=false", "train.seed=3", "eval.every=3"]
    command = [sys.executable, "-m", "training.train", *overrides]
    # The same thread count as the in-process uninterrupted run: float sums depend on it.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while ckpt.latest_checkpoint(tmp_path) is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = ckpt.step_checkpoints(tmp_path)
    assert killed_at, process.stderr.read().decode()[-2000:]
    assert killed_at[-1][0] < 6, "the run finished before it could be killed"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed at step {killed_at[-1][0]}" in done.stderr
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    _assert_same_losses([r for r in records if "loss/total" in r], straight)
    _assert_same_weights(_final_weights(tmp_path), _final_weights(straight_dir))
