"""Wall-clock stage timing that waits for queued GPU work before reading the clock."""

import time
from contextlib import contextmanager

import torch


@contextmanager
def timed(timings: dict[str, float], stage: str, device: torch.device):
    """Add the seconds spent in the block to `timings[stage]`."""
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
