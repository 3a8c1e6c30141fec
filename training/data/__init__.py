"""Datasets yielding `Sample`s, the paper's templates, and the batch collate function.

Every dataset is map-style (`__len__`, `__getitem__(index) -> Sample`) with
`set_epoch(epoch)`; per-item randomness comes from `item_rng(seed, epoch, index)` so
runs are reproducible and resumable.
"""

from .sample import Sample, item_rng

__all__ = ["Sample", "item_rng"]
