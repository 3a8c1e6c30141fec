"""The order of the training batches: shuffled per epoch, split over ranks, resumable at any micro-batch."""

from __future__ import annotations

import torch


class ResumableSampler:
    """Micro-batches of dataset indices for one rank, resumable at any micro-batch.

    Epoch e shuffles with a generator seeded by (seed, e) only, so the order is known
    again after a restart; rank r takes every W-th index of the shuffle (the tail that
    does not split evenly is dropped, so all ranks run the same number of steps).
    State: {"epoch", "batch"}, the next micro-batch to hand out.
    """

    def __init__(self, length: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.length, self.batch_size, self.rank, self.world_size, self.seed = length, batch_size, rank, world_size, seed
        self.batches_per_epoch = (length // world_size) // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"{length} samples cannot fill a batch of {batch_size} on each of {world_size} ranks")
        self.epoch, self.batch = 0, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def epoch_batches(self) -> list[list[int]]:
        """The remaining micro-batches of the current epoch."""
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        mine = order[self.rank : (self.length // self.world_size) * self.world_size : self.world_size]
        batches = [mine[i * self.batch_size : (i + 1) * self.batch_size] for i in range(self.batches_per_epoch)]
        return batches[self.batch :]

    def advance(self) -> None:
        self.batch += 1
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0


def micro_batches(dataset, sampler: ResumableSampler, collate, num_workers: int):
    """Endless stream of collated micro-batches in the sampler's order, from its current position.

    `sampler.advance()` runs before each batch is handed out, so the sampler's state
    always names the next batch (what a checkpoint must record).
    """
    from torch.utils.data import DataLoader

    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(sampler.epoch)
        # A private generator: the loader must not draw from the global torch RNG, or a
        # resumed run (which creates one loader more) would see other dropout masks.
        loader = DataLoader(dataset, batch_sampler=sampler.epoch_batches(), collate_fn=collate,
                            num_workers=num_workers, generator=torch.Generator().manual_seed(sampler.epoch))
        for batch in loader:
            # Advance before handing the batch out: a checkpoint taken after this step
            # must point at the next batch.
            sampler.advance()
            yield batch
