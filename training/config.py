"""Training configuration: YAML files of nested sections plus `section.key=value` overrides.

    python -m training.train --config training/configs/mini_cpu.yaml train.steps=50 optim.lr=1e-3

Every key has a default here (one source of defaults); a YAML file or an override that
names an unknown key is an error, so typos do not pass silently. Override values are
parsed as YAML scalars (`1e-3`, `true`, `null`, `[0.9, 0.95]`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

import yaml

from .lora import LoraSettings


@dataclass
class ModelSection:
    # "tiny" / "tiny_llava15" / "demo" (lisa_model registry) or a released checkpoint folder / hub id
    source: str = "tiny"
    vision_tower: str | None = None  # CLIP for a checkpoint (default: its config.json)
    seed: int = 0  # weights of a built-in tiny model
    frozen_dtype: str | None = None  # "bf16": store frozen weights in bf16 (saves memory on GPU)
    gradient_checkpointing: bool = False


@dataclass
class DataSection:
    # "mixture" (the paper's 4 kinds), "reason_seg" (ReasonSeg train), "scannet" (its ScanNet
    # portion) or "demo_scenes" (the synthetic scenes of lisa_ros.synthetic.scenes, generated on the fly)
    kind: str = "mixture"
    root: str = "dataset"  # the reference's dataset/ folder
    reason_seg_root: str | None = None  # default {root}/reason_seg/ReasonSeg
    dataset: str = "sem_seg||refer_seg||vqa||reason_seg"
    sample_rates: str = "9,3,3,1"
    sem_seg_data: str = "ade20k||cocostuff||pascal_part||paco_lvis"
    refer_seg_data: str = "refclef||refcoco||refcoco+||refcocog"
    samples_per_epoch: int | None = None  # mixture: samples per epoch (default: steps' worth for one epoch)
    explanatory_ratio: float | None = 0.1
    num_workers: int = 0
    demo_scenes: int = 400  # demo_scenes: scenes of the train split
    demo_frames: int = 8  # demo_scenes: frames per scene


@dataclass
class OptimSection:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_grad_norm: float = 1.0


@dataclass
class TrainSection:
    output_dir: str = "outputs/runs/default"
    steps: int = 5000  # optimizer steps in total (reference: 10 epochs x 500)
    batch_size: int = 2  # images per device per micro-batch
    grad_accum: int = 10
    seed: int = 42
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16", "fp32"
    device: str | None = None  # default: cuda:LOCAL_RANK when available, else cpu
    log_every: int = 10
    save_every: int = 500
    keep_last: int = 2
    progress: bool = True
    resume: bool = True  # continue from the newest checkpoint in output_dir
    max_steps_this_run: int | None = None  # stop (after saving) once this many steps ran in this process


@dataclass
class EvalSection:
    every: int = 500  # optimizer steps between evaluations (0: never)
    split: str = "val"
    portion: str | None = None  # default: the data portion ("scannet" for kind scannet, else "all")
    limit: int | None = None
    batch_size: int = 1
    at_start: bool = False  # evaluate the starting model too (step 0)
    demo_scenes: int = 16  # demo_scenes: scenes of the eval split


@dataclass
class DistSection:
    engine: str = "auto"  # "auto" (ddp under torchrun, else none), "none", "ddp", "fsdp", "deepspeed"
    backend: str | None = None  # gloo / nccl (default: nccl with CUDA)
    find_unused_parameters: bool = False
    zero_stage: int = 2  # deepspeed


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    dist: DistSection = field(default_factory=DistSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(value, hint, where: str):
    """YAML reads `3e-4` (no dot) as a string: convert strings for numeric fields."""
    if not isinstance(value, str):
        return float(value) if hint is float and isinstance(value, int) and not isinstance(value, bool) else value
    args = typing.get_args(hint) or (hint,)
    for kind in (int, float):
        if kind in args:
            try:
                return kind(value)
            except ValueError:
                if kind is float or float not in args:
                    raise ValueError(f"{where} must be a number, got {value!r}") from None
    return value


def _build(cls, values: dict, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown config keys in {where or 'top level'}: {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"{where}{name} must be a mapping")
            kwargs[name] = _build(type(default), value, f"{where}{name}.")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _coerce(value, hints[name], where + name)
    return cls(**kwargs)


def apply_override(values: dict, override: str) -> None:
    """Set `a.b=value` in a nested dict (value parsed as YAML)."""
    if "=" not in override:
        raise ValueError(f"override {override!r} is not key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | None = None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    """Defaults <- YAML file (if any) <- `base` dict <- dotted overrides."""
    values: dict = {}
    if path:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    for section, entries in (base or {}).items():
        values.setdefault(section, {}).update(entries)
    for override in overrides:
        apply_override(values, override)
    return _build(TrainConfig, values, "")


def config_from_dict(values: dict) -> TrainConfig:
    return _build(TrainConfig, values, "")
