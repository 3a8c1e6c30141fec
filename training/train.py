"""LISA fine-tuning: `python -m training.train --config training/configs/<name>.yaml key=value ...`.

The paper's recipe (§4.2 and the reference's train_ds.py): LoRA on the LLM's q/v
projections plus fully trained embeddings, lm_head, SAM mask decoder and [SEG] head
(training.lora); loss 1.0 CE + 2.0 BCE + 0.5 Dice (lisa_model.losses); AdamW
(3e-4, betas 0.9/0.95, weight decay 0); linear warm-up over 100 steps, then linear
decay to 0; gradient clipping 1.0; gradient accumulation; bf16 autocast on CUDA.

A run folder (`train.output_dir`) holds the resolved config, metrics.jsonl (and
TensorBoard events when tensorboard is installed), step checkpoints with everything
needed to continue bit-for-bit (training.checkpoints) and the best checkpoint by val
gIoU. Starting a run in a folder that has checkpoints resumes from the newest. The
model, training set and evaluation tasks are built by training.build; the resumable
batch order is training.sampler's.

Engines (`dist.engine`): "none" (one process), "ddp" (`torchrun --nproc_per_node=N`,
gloo on CPU, nccl on GPUs), "fsdp" (torch's fully_shard under torchrun: parameters,
gradients and optimizer state sharded over the ranks, for models that do not fit one
device; training.fsdp) and "deepspeed" (ZeRO stage `dist.zero_stage`, under torchrun
or the deepspeed launcher). "auto" picks ddp under torchrun.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml

from lisa_model.losses import LossWeights

from . import checkpoints as ckpt
from . import cli, fsdp
from . import distributed as dist_utils
from .build import build_eval_tasks, build_model, build_train_dataset
from .config import TrainConfig, load_config
from .data.collate import collate_fn, to_device
from .lora import load_trainable_state_dict, trainable_state_dict
from .sampler import ResumableSampler, micro_batches

# The reference's loss weights, passed explicitly: its model class has no defaults,
# which is why fine-tuning a released checkpoint crashes there.
LOSS_WEIGHTS = LossWeights(ce=1.0, bce=2.0, dice=0.5)
LOSS_NAMES = ("total", "ce", "bce", "dice")
PROG = "python -m training.train"


# Optimisation.


def linear_warmup_decay(optimizer, warmup_steps: int, total_steps: int):
    """LambdaLR: lr * (s + 1) / (warmup + 1) for the first `warmup_steps` steps s, then
    linearly from lr to 0 at `total_steps` (the reference's DeepSpeed WarmupDecayLR,
    linear warm-up; starting at lr / (warmup + 1) instead of 0 so step 0 is not wasted)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """One training run: builds everything from a TrainConfig, then `fit()`."""

    def __init__(self, config: TrainConfig):
        self.config = config
        train = config.train
        self.rank, self.world_size, device = dist_utils.init_distributed(config.dist.backend)
        self.device = torch.device(train.device) if train.device else device
        engine = config.dist.engine
        self.engine = ("ddp" if self.world_size > 1 else "none") if engine == "auto" else engine
        precision = train.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp32": None}[precision]
        self.run_dir = Path(train.output_dir)

        torch.manual_seed(train.seed)  # the same LoRA initialisation on every rank
        self.model, self.tokenizer, self.tuner = build_model(config, self.device)
        if self.engine == "fsdp":
            fsdp.shard_model(self.model)  # before the optimizer, which must see the sharded parameters
        use_im_start_end = self.model.config.mm_use_im_start_end
        self.dataset = build_train_dataset(config, use_im_start_end)
        evaluating = config.eval.every or config.eval.at_start
        self.eval_tasks = build_eval_tasks(config, use_im_start_end) if evaluating else []
        self.sampler = ResumableSampler(len(self.dataset), train.batch_size, self.rank, self.world_size, train.seed)

        params = [p for p in self.model.parameters() if p.requires_grad]
        optim = config.optim
        self.optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas),
                                           weight_decay=optim.weight_decay)
        self.scheduler = linear_warmup_decay(self.optimizer, optim.warmup_steps, train.steps)
        self.wrapped = self._wrap()
        self.step = 0
        self.best = {"giou": -math.inf, "step": None}
        self.writer = None

    # Engines.

    def _wrap(self):
        """The module the loop calls: DDP or DeepSpeed around the model; FSDP shards it in place."""
        if self.engine == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(self.model, device_ids=ids,
                                           find_unused_parameters=self.config.dist.find_unused_parameters)
        if self.engine == "deepspeed":
            import deepspeed

            train = self.config.train
            ds_config = {
                "train_micro_batch_size_per_gpu": train.batch_size,
                "gradient_accumulation_steps": train.grad_accum,
                "gradient_clipping": self.config.optim.max_grad_norm,
                "zero_optimization": {"stage": self.config.dist.zero_stage, "contiguous_gradients": True,
                                      "overlap_comm": self.device.type == "cuda"},
                "bf16": {"enabled": self.autocast_dtype is torch.bfloat16},
                "steps_per_print": 10**9,
                # Our torch AdamW (the reference's optimiser settings) rather than DeepSpeed's fused one.
                "zero_allow_untested_optimizer": True,
            }
            engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=ds_config)
            return engine
        return self.model

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # State.

    def trainable_state(self) -> dict:
        """The trainable parameters, whole (on rank 0 at least). A collective under FSDP: every rank calls it."""
        return fsdp.trainable_state_dict(self.model) if self.engine == "fsdp" else trainable_state_dict(self.model)

    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "model": self.trainable_state(),
            "sampler": self.sampler.state_dict(),
            # Every rank's generators (dropout draws differ across ranks), gathered to rank 0.
            "rng": dist_utils.gather_lists([ckpt.rng_state()]),
            "best": dict(self.best),
            "world_size": self.world_size,
        }
        if self.engine == "fsdp":
            state["optimizer"] = fsdp.optimizer_state_dict(self.model, self.optimizer)
        elif self.engine != "deepspeed":  # DeepSpeed keeps its (partitioned) optimizer in its own checkpoint
            state["optimizer"] = self.optimizer.state_dict()
        if self.engine != "deepspeed":
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def save(self) -> None:
        path = ckpt.step_dir(self.run_dir, self.step)
        if self.engine == "deepspeed":
            self.wrapped.save_checkpoint(str(path.with_name(path.name + ".ds")), tag="state")
        state = self.state_dict()  # a collective (RNG gathering): every rank calls it
        if self.rank == 0:
            ckpt.save_state(path, state)
            ckpt.prune(self.run_dir, self.config.train.keep_last)
        dist_utils.barrier()

    def resume(self, path: Path) -> None:
        state = ckpt.load_state(path, keys=("step", "model", "sampler", "rng", "best", "world_size"))
        if state["world_size"] != self.world_size:
            raise ckpt.CheckpointError(f"{path} was written by {state['world_size']} ranks; "
                                       f"this run has {self.world_size}")
        if self.engine == "fsdp":
            fsdp.load_trainable_state_dict(self.model, state["model"])
            fsdp.load_optimizer_state_dict(self.model, self.optimizer, state["optimizer"])
        elif self.engine == "deepspeed":
            load_trainable_state_dict(self.model, state["model"])
            self.wrapped.load_checkpoint(str(path.with_name(path.name + ".ds")), tag="state")
        else:
            load_trainable_state_dict(self.model, state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        if self.engine != "deepspeed":
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.sampler.load_state_dict(state["sampler"])
        self.best = state["best"]
        ckpt.set_rng_state(state["rng"][self.rank])

    def _reset_metrics(self) -> None:
        """Keep the metrics records up to the starting step (none when starting from scratch):
        the later ones were written by an interrupted or earlier process and are redone."""
        path = self.run_dir / "metrics.jsonl"
        if path.is_file():
            kept = [record for record in ckpt.read_metrics(path) if record["step"] <= self.step] if self.step else []
            temporary = path.with_name(path.name + ".tmp")  # a crash now must not lose the records
            temporary.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")
            temporary.replace(path)

    # Logging and evaluation.

    def log(self, record: dict) -> None:
        if self.rank != 0:
            return
        ckpt.append_jsonl(self.run_dir / "metrics.jsonl", record)
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def evaluate(self) -> dict:
        """Val gIoU/cIoU with training.evaluate's protocol, over all ranks; keeps the best checkpoint."""
        from .evaluate import run as run_evaluation

        self.model.eval()
        with self._autocast():
            results = run_evaluation(self.model, self.tokenizer, self.eval_tasks, self.rank, self.world_size,
                                     self.device, self.config.eval.batch_size, lockstep=self.engine == "fsdp")
        self.model.train()
        metrics = results["metrics"][self.eval_tasks[0].name]["overall"]
        record = {"step": self.step, "val/giou": metrics["giou"], "val/ciou": metrics["ciou"]}
        self.log(record)
        if metrics["giou"] > self.best["giou"]:  # the same decision on every rank (all-reduced metrics)
            self.best = {"giou": metrics["giou"], "ciou": metrics["ciou"], "step": self.step}
            weights = self.trainable_state()
            if self.rank == 0:
                ckpt.save_state(self.run_dir / "best", {"step": self.step, "model": weights,
                                                        "metrics": results["metrics"]})
                (self.run_dir / "best" / "best.json").write_text(yaml.safe_dump(self.best))
        return record

    # The loop.

    def train_step(self, batches) -> dict:
        """One optimizer step over `grad_accum` micro-batches; returns rank-averaged losses."""
        accum = self.config.train.grad_accum
        sums = torch.zeros(len(LOSS_NAMES), dtype=torch.float64)
        grad_norm = None
        for micro in range(accum):
            batch = to_device(next(batches), self.device)
            last = micro == accum - 1
            # DDP and FSDP: reduce gradients only on the last micro-batch.
            sync = self.wrapped.no_sync() if self.engine == "ddp" and not last else nullcontext()
            if self.engine == "fsdp":
                self.model.set_requires_gradient_sync(last)
            with sync:
                with self._autocast():
                    loss = self.wrapped(**batch, loss_weights=LOSS_WEIGHTS).loss
                if self.engine == "deepspeed":
                    self.wrapped.backward(loss.total)  # DeepSpeed scales by accumulation itself
                    self.wrapped.step()
                else:
                    (loss.total / accum).backward()
            sums += torch.tensor([getattr(loss, name).item() for name in LOSS_NAMES], dtype=torch.float64)
        if self.engine == "deepspeed":
            grad_norm = self.wrapped.get_global_grad_norm()
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
            grad_norm = fsdp.full_norm(torch.nn.utils.clip_grad_norm_(params, self.config.optim.max_grad_norm)).item()
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        sums = dist_utils.all_reduce_sums({name: float(v) for name, v in zip(LOSS_NAMES, sums)})
        self.step += 1
        record = {"step": self.step, **{f"loss/{name}": sums[name] / (accum * self.world_size) for name in LOSS_NAMES}}
        record["lr"] = self.scheduler.get_last_lr()[0]
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        return record

    def fit(self) -> list[dict]:
        """Train to `train.steps` (or `max_steps_this_run` more); returns this process's step records."""
        train = self.config.train
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        latest = ckpt.latest_checkpoint(self.run_dir) if train.resume else None
        if latest is not None:
            self.resume(latest)
        if self.rank == 0:
            self._reset_metrics()
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step or None)
            except ImportError:
                self.writer = None
            print(f"[train] {self.engine} x{self.world_size} on {self.device}; "
                  f"{sum(p.numel() for p in self.model.parameters() if p.requires_grad):,} trainable parameters; "
                  f"{'resumed at step ' + str(self.step) if latest else 'from scratch'} -> {self.run_dir}",
                  file=sys.stderr)
        if self.step == 0 and self.config.eval.at_start and self.eval_tasks:
            self.evaluate()
        self.wrapped.train()
        collate = collate_fn(self.tokenizer, self.model.config)
        batches = micro_batches(self.dataset, self.sampler, collate, self.config.data.num_workers)
        bar = None
        if train.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=train.steps, initial=self.step, desc="train", file=sys.stderr, dynamic_ncols=True)
        records, started = [], 0
        while self.step < train.steps and (train.max_steps_this_run is None or started < train.max_steps_this_run):
            begin = time.perf_counter()
            record = self.train_step(batches)
            record["seconds"] = time.perf_counter() - begin
            records.append(record)
            started += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss/total']:.4f}")
            if self.step % train.log_every == 0 or self.step == train.steps:
                self.log(record)
            evaluate_now = self.eval_tasks and self.config.eval.every and (
                self.step % self.config.eval.every == 0 or self.step == train.steps)
            if evaluate_now:
                self.evaluate()
            stopping = self.step == train.steps or started == train.max_steps_this_run
            if self.step % train.save_every == 0 or stopping:
                self.save()
        if bar is not None:
            bar.close()
        if self.writer is not None:
            self.writer.close()
        return records


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config (training/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=100")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # deepspeed launcher
    cli.add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    with cli.user_errors(PROG, args.debug):
        config = load_config(args.config, args.overrides)
        trainer = Trainer(config)
        try:
            records = trainer.fit()
            if trainer.rank == 0 and trainer.best["step"] is not None:
                print(f"[train] best val gIoU {trainer.best['giou']:.4f} at step {trainer.best['step']}",
                      file=sys.stderr)
            return records
        finally:
            dist_utils.cleanup()


if __name__ == "__main__":
    main()
