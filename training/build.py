"""What a training run is built from its TrainConfig: the model with the LoRA recipe, the
training set of `data.kind` and the tasks evaluated during training."""

from __future__ import annotations

import os

import torch

from .config import TrainConfig
from .lora import apply_lora


def build_model(config: TrainConfig, device: torch.device):
    """The LISA model with LoRA applied and the recipe's parameters trainable.

    Returns (model, tokenizer, tuner): `tuner` is peft's LoraModel around `model`
    (for merging). Trainable parameters are fp32 (master weights); with
    `model.frozen_dtype: bf16` the frozen ones are stored in bf16.
    """
    section = config.model
    from lisa_model import lisa_model_registry

    if section.source in lisa_model_registry:
        model, tokenizer = lisa_model_registry[section.source](seed=section.seed)
    else:
        from lisa_model import load_lisa

        model, tokenizer = load_lisa(section.source, vision_tower=section.vision_tower, precision="fp32")
    model = model.float()
    tuner = apply_lora(model, config.lora)
    if section.frozen_dtype:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[section.frozen_dtype]
        for param in model.parameters():
            if not param.requires_grad:
                param.data = param.data.to(dtype)
    set_gradient_checkpointing(model, section.gradient_checkpointing)
    return model.to(device), tokenizer, tuner


def set_gradient_checkpointing(model, enabled: bool) -> None:
    """Recompute the LLM's decoder layers in backward (activation checkpointing) or not.

    Non-reentrant checkpointing: it needs no input that requires grad (with LoRA the
    layers' inputs may not) and works with DDP. Applies in train mode only.
    """
    if enabled:
        model.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.language_model.activation_checkpointing_disable()


def reason_seg_root(config: TrainConfig) -> str:
    return config.data.reason_seg_root or os.path.join(config.data.root, "reason_seg", "ReasonSeg")


def build_train_dataset(config: TrainConfig, use_im_start_end: bool):
    """The training set of `data.kind`: the paper's mixture, ReasonSeg train, or its ScanNet portion."""
    from .data.reason_seg import ReasonSegDataset

    data = config.data
    seed = config.train.seed
    if data.kind == "demo_scenes":
        from .data.demo_scenes import DemoScenesDataset

        # Every frame stays in memory (about 0.6 MB each): rendering one costs more than a training step.
        frames = data.demo_scenes * data.demo_frames
        dataset = DemoScenesDataset("train", num_scenes=data.demo_scenes, frames_per_scene=data.demo_frames,
                                    use_im_start_end=use_im_start_end, seed=seed, cache_frames=frames)
        dataset.render_all(progress=config.train.progress)
        return dataset
    if data.kind in ("reason_seg", "scannet"):
        portion = "scannet" if data.kind == "scannet" else "all"
        return ReasonSegDataset(reason_seg_root(config), "train", portion=portion,
                                explanatory_ratio=data.explanatory_ratio, use_im_start_end=use_im_start_end, seed=seed)
    from .data.mixture import build_mixture

    reason = None
    if "reason_seg" in data.dataset:
        reason = ReasonSegDataset(reason_seg_root(config), "train", explanatory_ratio=data.explanatory_ratio,
                                  use_im_start_end=use_im_start_end, seed=seed)
    samples = data.samples_per_epoch or 500 * config.train.batch_size * config.train.grad_accum
    return build_mixture(data.root, data.dataset, data.sample_rates, data.sem_seg_data, data.refer_seg_data,
                         reason_seg=reason, samples_per_epoch=samples, use_im_start_end=use_im_start_end, seed=seed)


def build_eval_tasks(config: TrainConfig, use_im_start_end: bool) -> list:
    """The tasks evaluated during training; the first one's overall gIoU picks the best checkpoint."""
    from .data.reason_seg import ReasonSegDataset
    from .evaluate import REASON_SEG_GROUPS, EvalTask, reason_seg_groups

    if config.data.kind == "demo_scenes":
        from .evaluate import demo_scene_tasks

        # Unseen scenes asked with held-out phrasings: they select the best checkpoint.
        return demo_scene_tasks(config.eval.split, config.eval.demo_scenes, use_im_start_end,
                                config.data.demo_frames, config.train.seed, config.eval.limit, phrasings=("heldout",))

    portion = config.eval.portion or ("scannet" if config.data.kind == "scannet" else "all")
    dataset = ReasonSegDataset(reason_seg_root(config), config.eval.split, portion=portion, train=False,
                               use_im_start_end=use_im_start_end)
    name = f"reason_seg/{config.eval.split}"
    return [EvalTask(name, dataset, REASON_SEG_GROUPS, reason_seg_groups, config.eval.limit)]
