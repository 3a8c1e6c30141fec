"""Shared pieces of the training-engine tests: miniature data and small configs."""

from tests.helpers.mini_data import make_mini_data
from training.config import load_config


def mini_root(tmp_path_factory):
    """The miniature datasets, generated once per session."""
    return str(make_mini_data(tmp_path_factory.getbasetemp() / "mini_train_data"))


def small_config(root: str, output_dir, **sections):
    """A tiny-model config on the miniature mixture: few steps, no progress bar, no eval."""
    base = {
        "data": {"kind": "mixture", "root": root, "samples_per_epoch": 16, "sample_rates": "1,1,1,3"},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"output_dir": str(output_dir), "steps": 6, "batch_size": 2, "grad_accum": 2,
                  "save_every": 2, "log_every": 1, "progress": False, "seed": 3},
        "eval": {"every": 0},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_config(None, base=base)
