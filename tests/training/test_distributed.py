"""Distributed training under torchrun (gloo, 2 CPU processes): DDP and DeepSpeed ZeRO-2 keep
parameters in sync, FSDP trains to DDP's weights, all log all-reduced losses and resume to the
uninterrupted result; sharding."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers.train_runs import mini_root
from training.sampler import ResumableSampler

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs under torchrun: an uninterrupted run, and a run stopped after 2 steps and resumed
# (new Trainer, same processes); then every rank's weights are compared with rank 0's.
SCRIPT = """
import faulthandler, json, sys
faulthandler.dump_traceback_later(100, exit=True)  # a hung worker ends itself (workers have their own sessions)
import torch
import torch.distributed as dist
from tests.helpers.train_runs import small_config
from training.train import Trainer

def config(run, **train):
    return small_config({root!r}, run, train={{"steps": 4, "grad_accum": 2, "batch_size": 1, **train}},
                        dist={{"engine": {engine!r}, "backend": "gloo"}}, eval={{"every": 4}})

straight = Trainer(config({out!r} + "/straight"))
losses = [r["loss/total"] for r in straight.fit()]
first = Trainer(config({out!r} + "/resumed", max_steps_this_run=2))
resumed = [r["loss/total"] for r in first.fit()]
second = Trainer(config({out!r} + "/resumed"))
resumed += [r["loss/total"] for r in second.fit()]

def flat(trainer):
    # Whole on rank 0; under FSDP the other ranks get nothing (their parameters are shards).
    state = trainer.trainable_state()
    return torch.cat([state[name].flatten() for name in sorted(state)]) if state else torch.zeros(0)

def max_diff(a, b):
    return float((a - b).abs().max()) if a.numel() else 0.0

mine = flat(straight)
sync_diff = 0.0  # FSDP holds one sharded copy: nothing can drift apart
if straight.engine != "fsdp":
    rank0 = mine.clone()
    dist.broadcast(rank0, 0)
    sync_diff = max_diff(mine, rank0)
if straight.rank == 0:
    torch.save(mine, {out!r} + "/weights.pt")
report = dict(rank=straight.rank, world=straight.world_size, engine=straight.engine, losses=losses,
              resumed_losses=resumed, sync_diff=sync_diff, resume_diff=max_diff(flat(second), mine))
with open({out!r} + f"/rank{{straight.rank}}.json", "w") as handle:
    json.dump(report, handle)
dist.barrier()
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(engine, root, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=root, out=str(tmp_path), engine=engine))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={_free_port()}", str(script)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]


def _check(reports, engine, tmp_path):
    for report in reports:
        assert report["world"] == 2 and report["engine"] == engine
        assert report["sync_diff"] == 0.0  # identical weights on both ranks
        assert report["resume_diff"] < 1e-6  # stopped + resumed == uninterrupted, on every rank
        assert report["resumed_losses"] == pytest.approx(report["losses"], rel=1e-6)
    # Logged losses are all-reduced: the same on every rank.
    assert reports[0]["losses"] == pytest.approx(reports[1]["losses"], rel=1e-12)
    assert (tmp_path / "straight" / "checkpoints" / "step-000004" / "trainer.pt").is_file()
    assert (tmp_path / "straight" / "best" / "trainer.pt").is_file()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return _torchrun("ddp", mini_root(tmp_path_factory), out), out


def test_ddp_two_processes_stay_in_sync_and_resume(ddp_run):
    reports, out = ddp_run
    _check(reports, "ddp", out)


def test_fsdp_trains_like_ddp_and_resumes(ddp_run, tmp_path_factory, tmp_path):
    import torch

    reports = _torchrun("fsdp", mini_root(tmp_path_factory), tmp_path)
    _check(reports, "fsdp", tmp_path)
    # Sharded parameters, gradients and optimizer state do the same arithmetic as DDP.
    ddp_reports, ddp_out = ddp_run
    assert reports[0]["losses"] == pytest.approx(ddp_reports[0]["losses"], rel=1e-5)
    fsdp_weights, ddp_weights = torch.load(tmp_path / "weights.pt"), torch.load(ddp_out / "weights.pt")
    assert fsdp_weights.shape == ddp_weights.shape and fsdp_weights.numel() > 100_000
    assert torch.allclose(fsdp_weights, ddp_weights, atol=1e-5)


def test_deepspeed_zero2_on_cpu(tmp_path_factory, tmp_path):
    _check(_torchrun("deepspeed", mini_root(tmp_path_factory), tmp_path), "deepspeed", tmp_path)
    assert (tmp_path / "straight" / "checkpoints" / "step-000004.ds").is_dir()


def test_sampler_shards_disjointly_and_resumes():
    shards = [ResumableSampler(21, 2, rank, 2, seed=5) for rank in range(2)]
    first = [sum(s.epoch_batches(), []) for s in shards]
    assert not set(first[0]) & set(first[1]) and len(first[0]) == len(first[1]) == 10
    sampler = shards[0]
    full = sampler.epoch_batches()
    sampler.advance(), sampler.advance()
    resumed = ResumableSampler(21, 2, 0, 2, seed=5)
    resumed.load_state_dict(sampler.state_dict())
    assert resumed.epoch_batches() == full[2:]
    for _ in range(3):
        sampler.advance()
    assert sampler.state_dict() == {"epoch": 1, "batch": 0}
    assert sampler.epoch_batches() != full  # a new shuffle each epoch
