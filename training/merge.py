"""Merge a run's LoRA weights into the base model and save it in the released layout.

    python -m training.merge --run outputs/runs/mini_cpu --output outputs/lisa-merged [--checkpoint best|last|step-N]

The base model comes from the run's config.yaml (`model.source`: the released
checkpoint it was fine-tuned from, or the built-in tiny model), the trained
parameters from the chosen checkpoint; peft's merge_and_unload folds
`B @ A * alpha / r` into each q/v projection, and lisa_model.save_lisa writes the
plain model (CLIP excluded, released key names), loadable with lisa_model.load_lisa
and the reference's tooling.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import checkpoints as ckpt
from . import cli
from .config import config_from_dict, read_yaml
from .lora import load_trainable_state_dict, merge_lora

PROG = "python -m training.merge"


def load_run_model(run_dir: str | Path, which: str = "best"):
    """The run's model with LoRA and the trained weights of checkpoint `which` (on CPU, fp32).

    Returns (model, tokenizer, tuner, config).
    """
    from .train import build_model

    run_dir = Path(run_dir)
    config = config_from_dict(read_yaml(run_dir / "config.yaml"), where=str(run_dir / "config.yaml"))
    state = ckpt.load_state(ckpt.resolve(run_dir, which))  # before building the model: a bad file fails fast
    config.model.frozen_dtype = None  # merge in fp32
    config.model.gradient_checkpointing = False
    model, tokenizer, tuner = build_model(config, torch.device("cpu"))
    load_trainable_state_dict(model, state["model"])
    return model.eval(), tokenizer, tuner, config


def merge_run(run_dir: str | Path, output: str | Path, which: str = "best", dtype: str | None = None,
              vision_tower: str | None = None) -> Path:
    """Merge checkpoint `which` of `run_dir` and save_lisa it to `output`; returns the folder.

    Arguments:
        dtype (str | None): "bf16"/"fp16" casts the merged model (the released 7B files
            hold the LLM in bf16); None keeps fp32.
        vision_tower (str | None): CLIP folder or hub id written to config.json; default:
            the run's `model.vision_tower`, else where the model's CLIP came from.
    """
    from lisa_model import save_lisa

    model, tokenizer, tuner, config = load_run_model(run_dir, which)
    merged = merge_lora(tuner)
    if dtype:
        merged = merged.to({"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype])
    tower = vision_tower or config.model.vision_tower or getattr(merged.vision_tower.config, "_name_or_path", "")
    if not tower:
        # A built-in model's CLIP has no source folder: save it inside the checkpoint
        # (load_lisa resolves a relative vision_tower against the checkpoint folder).
        merged.vision_tower.save_pretrained(Path(output) / "vision_tower")
        tower = "vision_tower"
    return save_lisa(merged, tokenizer, output, vision_tower=tower)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run folder (train.output_dir)")
    parser.add_argument("--output", required=True, help="folder for the merged checkpoint")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, step-N or a checkpoint folder")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="cast the merged model (default: fp32)")
    parser.add_argument("--vision-tower", help="CLIP folder or hub id to record in config.json")
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    with cli.user_errors(PROG, args.debug):
        path = merge_run(args.run, args.output, args.checkpoint, args.dtype, args.vision_tower)
    print(f"[merge] wrote {path}")
    return path


if __name__ == "__main__":
    main()
