"""A map-style dataset base whose items draw their randomness from a given generator.

`__getitem__(index)` is `get(index, item_rng(seed, epoch, index))`, so an item is a
pure function of (seed, epoch, index). `get(index, rng)` is public so that the
mixture (mixture.py) can draw the same image several times in one epoch with a
different generator each time (fresh classes, templates) instead of repeating it.
"""

from __future__ import annotations

import random

from .sample import Sample, item_rng


class ItemDataset:
    """Base of the datasets in this package; subclasses implement `__len__` and `get`."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, index: int, rng: random.Random) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {len(self)}")
        return self.get(index, item_rng(self.seed, self.epoch, index))
