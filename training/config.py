"""Training configuration: YAML files of nested sections plus `section.key=value` overrides.

    python -m training.train --config training/configs/mini_cpu.yaml train.steps=50 optim.lr=1e-3

Every key has a default here (one source of defaults) and a type and range, which
pydantic checks (training.schema) before anything is built: an unknown key, a value
of the wrong type (`train.steps=1.5`) or out of range (`train.batch_size=-1`) is a
ConfigError naming the key. Override values are parsed as YAML scalars (`1e-3`,
`true`, `null`, `[0.9, 0.95]`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from .lora import LoraSettings
from .schema import SECTION, Count, NonNegative, NonNegativeReal, Probability, Real


class ConfigError(ValueError):
    """A config file, key or override that cannot be used; the message names it and the problem."""


@dataclass(config=SECTION)
class ModelSection:
    # "tiny" / "tiny_llava15" / "demo" (lisa_model registry) or a released checkpoint folder / hub id
    source: str = "tiny"
    vision_tower: str | None = None  # CLIP for a checkpoint (default: its config.json)
    seed: NonNegative = 0  # weights of a built-in tiny model
    frozen_dtype: Literal["bf16", "fp16", "fp32"] | None = None  # "bf16": frozen weights in bf16 (saves GPU memory)
    gradient_checkpointing: bool = False


@dataclass(config=SECTION)
class DataSection:
    # "mixture" (the paper's 4 kinds), "reason_seg" (ReasonSeg train), "scannet" (its ScanNet
    # portion) or "demo_scenes" (the synthetic scenes of lisa_ros.synthetic.scenes, generated on the fly)
    kind: Literal["mixture", "reason_seg", "scannet", "demo_scenes"] = "mixture"
    root: str = "dataset"  # the reference's dataset/ folder
    reason_seg_root: str | None = None  # default {root}/reason_seg/ReasonSeg
    dataset: str = "sem_seg||refer_seg||vqa||reason_seg"
    sample_rates: str = "9,3,3,1"
    sem_seg_data: str = "ade20k||cocostuff||pascal_part||paco_lvis"
    refer_seg_data: str = "refclef||refcoco||refcoco+||refcocog"
    samples_per_epoch: Count | None = None  # mixture: samples per epoch (default: steps' worth for one epoch)
    explanatory_ratio: Probability | None = 0.1
    num_workers: NonNegative = 0
    demo_scenes: Count = 400  # demo_scenes: scenes of the train split
    demo_frames: Count = 8  # demo_scenes: frames per scene

    @model_validator(mode="after")
    def _rates_match_kinds(self):
        if self.kind == "mixture":
            from .data.mixture import parse_rates

            where = f"sample_rates {self.sample_rates!r} for dataset {self.dataset!r}"
            try:
                rates = parse_rates(self.dataset, self.sample_rates)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            if any(rate < 0 for rate in rates.values()) or sum(rates.values()) <= 0:
                raise ValueError(f"{where}: rates must be >= 0 with a positive sum")
        return self


@dataclass(config=SECTION)
class OptimSection:
    lr: NonNegativeReal = 3e-4
    betas: tuple[Probability, Probability] = (0.9, 0.95)
    weight_decay: NonNegativeReal = 0.0
    warmup_steps: NonNegative = 100
    max_grad_norm: Annotated[Real, Field(gt=0)] = 1.0  # 0 would zero every gradient


@dataclass(config=SECTION)
class TrainSection:
    output_dir: str = "outputs/runs/default"
    steps: Count = 5000  # optimizer steps in total (reference: 10 epochs x 500)
    batch_size: Count = 2  # images per device per micro-batch
    grad_accum: Count = 10
    seed: NonNegative = 42
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU
    device: str | None = None  # default: cuda:LOCAL_RANK when available, else cpu
    log_every: Count = 10
    save_every: Count = 500
    keep_last: NonNegative = 2  # step checkpoints kept (0: all)
    progress: bool = True
    resume: bool = True  # continue from the newest checkpoint in output_dir
    max_steps_this_run: Count | None = None  # stop (after saving) once this many steps ran in this process

    @field_validator("output_dir")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a folder")
        return value

    @field_validator("device")
    @classmethod
    def _a_device(cls, value: str | None) -> str | None:
        if value is not None:
            import torch

            try:
                torch.device(value)
            except RuntimeError as error:  # pydantic reports ValueErrors with the key
                raise ValueError(str(error)) from None
        return value


@dataclass(config=SECTION)
class EvalSection:
    every: NonNegative = 500  # optimizer steps between evaluations (0: never)
    split: str = "val"
    portion: Literal["all", "scannet", "openimages"] | None = None  # default: "scannet" for kind scannet, else "all"
    limit: Count | None = None
    batch_size: Count = 1
    at_start: bool = False  # evaluate the starting model too (step 0)
    demo_scenes: Count = 16  # demo_scenes: scenes of the eval split


@dataclass(config=SECTION)
class DistSection:
    engine: Literal["auto", "none", "ddp", "fsdp", "deepspeed"] = "auto"  # "auto": ddp under torchrun, else none
    backend: Literal["gloo", "nccl"] | None = None  # default: nccl with CUDA, else gloo
    find_unused_parameters: bool = False
    zero_stage: Annotated[NonNegative, Field(le=3)] = 2  # deepspeed ZeRO stage


@dataclass(config=SECTION)
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


_SCHEMA = TypeAdapter(TrainConfig)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _known_keys(location: tuple) -> list[str]:
    """The keys of the section that `location` (a pydantic error location) points into."""
    section = TrainConfig
    for part in location[:-1]:
        section = typing.get_type_hints(section)[part]
    return [f.name for f in dataclasses.fields(section)]


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "the config"
    if error["type"] == "unexpected_keyword_argument":
        return f"unknown key {key} (known: {', '.join(_known_keys(error['loc']))})"
    if error["type"] == "value_error":  # our own validators: the message says it all
        return f"{key}: {error['msg'].removeprefix('Value error, ')}"
    return f"{key}={_short(error['input'])}: {error['msg']}"


def _validate(values, where: str = "") -> TrainConfig:
    try:
        return _SCHEMA.validate_python(values)
    except ValidationError as error:
        problems = "; ".join(_describe(e) for e in error.errors())
        raise ConfigError(f"{where}: {problems}" if where else problems) from None


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file (empty for an empty file); ConfigError names the file otherwise."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got a {type(values).__name__}")
    return values


def apply_override(values: dict, override: str) -> None:
    """Set `a.b=value` in a nested dict (value parsed as YAML)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not section.key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {override!r}: the key is empty or has an empty part")
    node = values
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[: depth + 1])} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override {override!r}: the value is not valid YAML") from None


def load_config(path: str | None = None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    """Defaults <- YAML file (if any) <- `base` dict <- dotted overrides, checked against the schema.

    The file is checked on its own first, so an error names the file when the file is at fault.
    """
    values: dict = {}
    if path:
        values = read_yaml(path)
        _validate(values, str(path))
    for section, entries in (base or {}).items():
        values.setdefault(section, {}).update(entries)
    for override in overrides:
        apply_override(values, override)
    return _validate(values)


def config_from_dict(values: dict, where: str = "") -> TrainConfig:
    """A TrainConfig from nested dicts (a run's config.yaml); `where` names their source in errors."""
    return _validate(values, where)
