"""Hardening (issue 14): untrusted run folders never run code, a torn metrics line does not
stop a resume, every config key is type- and range-checked before anything starts, and
the CLIs answer a user's mistake with one line and exit status 2."""

import json
import random

import numpy as np
import pytest
import torch
import yaml

from tests.helpers.train_runs import mini_root, small_config
from training import checkpoints as ckpt
from training import evaluate
from training.config import ConfigError, load_config
from training.merge import main as merge_main
from training.train import Trainer
from training.train import main as train_main


class Payload:
    """Unpickling this runs `open(marker, "w")`: what a planted trainer.pt could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return mini_root(tmp_path_factory)


def _planted_run(run_dir, marker):
    """A run folder whose newest checkpoint would create `marker` when unpickled."""
    (run_dir / "checkpoints" / "step-000002").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"train": {"output_dir": str(run_dir)}}))
    torch.save({"step": 2, "model": {}, "payload": Payload(marker)}, ckpt.step_dir(run_dir, 2) / ckpt.STATE_FILE)
    return run_dir


def _one_error_line(capsys, *fragments):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "error:" in lines[0] and all(fragment in lines[0] for fragment in fragments), lines[0]


# Item 1: a planted trainer.pt is refused and runs nothing.


def test_planted_trainer_state_is_refused_by_load_and_merge(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    run = _planted_run(tmp_path / "run", marker)
    with pytest.raises(ckpt.CheckpointError, match="refused.*may be unsafe"):
        ckpt.load_state(ckpt.latest_checkpoint(run))
    with pytest.raises(SystemExit) as exited:
        merge_main(["--run", str(run), "--output", str(tmp_path / "merged"), "--checkpoint", "last"])
    assert exited.value.code == 2
    _one_error_line(capsys, "step-000002/trainer.pt", "refused")
    assert not marker.exists() and not (tmp_path / "merged").exists()


def test_resume_refuses_a_planted_trainer_state(root, tmp_path):
    marker = tmp_path / "payload-ran"
    run = _planted_run(tmp_path / "run", marker)
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        Trainer(small_config(root, run)).fit()
    assert not marker.exists()


def test_rng_state_loads_weights_only_and_restores_every_generator(tmp_path):
    torch.save({"model": {}, "rng": ckpt.rng_state()}, tmp_path / ckpt.STATE_FILE)
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    ckpt.set_rng_state(torch.load(tmp_path / ckpt.STATE_FILE, weights_only=True)["rng"])
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


# Item 6: a torn last metrics line is dropped with a warning; a corrupt middle line is an error.


def test_resume_survives_torn_metrics_lines(root, tmp_path, capsys):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 9, "loss/tot')  # an earlier run died while writing, before any checkpoint
    Trainer(small_config(root, tmp_path, train={"max_steps_this_run": 3})).fit()
    lines = metrics.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]  # the stale, torn record is gone
    capsys.readouterr()

    metrics.write_text("\n".join([lines[0], '{"step": 2, "loss', lines[2]]) + "\n")
    with pytest.raises(ckpt.CheckpointError, match=r"metrics\.jsonl:2: not a metrics record"):
        Trainer(small_config(root, tmp_path)).fit()

    metrics.write_text("\n".join(lines) + '\n{"step": 4, "loss/total": 1.2')  # killed while logging step 4
    records = Trainer(small_config(root, tmp_path)).fit()
    assert [r["step"] for r in records] == [4, 5, 6]
    assert "metrics.jsonl:4: dropped a torn last line" in capsys.readouterr().err
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


# Item 9: every key typed and range-checked before anything starts.


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=-1", "train.batch_size=-1: Input should be greater than or equal to 1"),
    ("train.steps=1.5", "train.steps=1.5: Input should be a valid integer"),
    ("train.steps=-5", "train.steps=-5: Input should be greater than or equal to 1"),
    ("train.steps=true", "train.steps=True: Input should be a valid integer"),
    ("train.save_every=0", "train.save_every=0: Input should be greater than or equal to 1"),
    ("train.stepz=5", "unknown key train.stepz (known: output_dir, steps,"),
    ("trian.steps=5", "unknown key trian (known: model, lora,"),
    ("optim.lr=abc", "optim.lr='abc': Input should be a valid number"),
    ("optim.lr=.nan", "optim.lr=nan: Input should be a finite number"),
    ("optim.betas=[0.9, 1.5]", "optim.betas.1=1.5: Input should be less than or equal to 1"),
    ("lora.r=0", "lora.r=0: Input should be greater than or equal to 1"),
    ("lora.target_modules=(", "lora.target_modules: not a regular expression"),
    ("data.kind=bogus", "data.kind='bogus': Input should be 'mixture', 'reason_seg', 'scannet' or 'demo_scenes'"),
    ("data.sample_rates=1,2", "but 2 sample rates"),
    ("dist.engine=foo", "dist.engine='foo': Input should be 'auto', 'none', 'ddp', 'fsdp' or 'deepspeed'"),
    ("dist.zero_stage=4", "dist.zero_stage=4: Input should be less than or equal to 3"),
    ("train.device=gpu", "train.device: Expected one of cpu"),
    ("train.steps", "override 'train.steps' is not section.key=value"),
    ("train.steps.x=1", "train.steps={'x': 1}: Input should be a valid integer"),
    ("train=5", "train=5: Input should be a dictionary"),
])
def test_bad_overrides_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as refused:
        load_config(None, [override])
    assert message in str(refused.value)


def test_bad_config_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  steps: 1.5\n")
    with pytest.raises(ConfigError, match=f"^{path}: train.steps=1.5: Input should be a valid integer"):
        load_config(str(path))
    path.write_text("train: {steps: [\n")
    with pytest.raises(ConfigError, match=f"^{path}:2: not valid YAML"):
        load_config(str(path))


def test_numbers_as_yaml_reads_them_still_pass():
    config = load_config(None, ["optim.lr=1e-3", "optim.betas=[0.9, 0.99]", "eval.limit=null", "lora.alpha=32"])
    assert (config.optim.lr, config.optim.betas, config.eval.limit, config.lora.alpha) == (1e-3, (0.9, 0.99), None, 32)


# Item 14: one line and exit status 2 from every training CLI; --debug / LISA_DEBUG=1 for the traceback.


def test_train_cli_bad_override_is_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("LISA_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        train_main(["train.steps=1.5"])
    assert exited.value.code == 2
    _one_error_line(capsys, "python -m training.train: error: train.steps=1.5")
    with pytest.raises(ConfigError):
        train_main(["train.steps=1.5", "--debug"])
    monkeypatch.setenv("LISA_DEBUG", "1")
    with pytest.raises(ConfigError):
        train_main(["train.steps=1.5"])


def test_merge_cli_missing_run_folder_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LISA_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        merge_main(["--run", str(tmp_path / "nothing"), "--output", str(tmp_path / "out")])
    assert exited.value.code == 2
    _one_error_line(capsys, "python -m training.merge: error:", "nothing/config.yaml: No such file or directory")


def test_evaluate_cli_bad_arguments_are_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("LISA_DEBUG", raising=False)
    for argv, fragment in [(["--model", "nope", "--demo-scenes", "1"], "--model must be one of"),
                           (["--model", "tiny"], "nothing to evaluate")]:
        with pytest.raises(SystemExit) as exited:
            evaluate.main(argv)
        assert exited.value.code == 2
        _one_error_line(capsys, "python -m training.evaluate: error:", fragment)
