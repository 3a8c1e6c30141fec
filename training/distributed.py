"""torch.distributed helpers shared by evaluation (and training): setup, sharding, reductions.

Launch with `torchrun --nproc_per_node=N ...`; without torchrun's environment
everything degrades to a single process (rank 0 of 1).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

from lisa_model.metrics import SegmentationMeter


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (if any).

    Arguments:
        backend (str | None): "gloo" or "nccl"; None: nccl when CUDA is available, else gloo.

    Returns:
        (rank, world_size, device): device is cuda:LOCAL_RANK with CUDA, else cpu.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
    return (dist.get_rank(), dist.get_world_size(), device) if dist.is_initialized() else (0, 1, device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def shard_indices(length: int, rank: int, world_size: int) -> list[int]:
    """Indices rank, rank + W, ... of range(length): every index on exactly one rank,
    with no padding duplicates (unlike DistributedSampler), so reduced counts are exact."""
    return list(range(rank, length, world_size))


def _reduce_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo CPU ones.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_meters(meters: dict[str, SegmentationMeter]) -> dict[str, SegmentationMeter]:
    """Sum every meter over all ranks (keys must be identical on all ranks)."""
    if not is_distributed():
        return meters
    names = sorted(meters)
    state = torch.from_numpy(np.stack([meters[n].state() for n in names])).to(_reduce_device())
    dist.all_reduce(state, op=dist.ReduceOp.SUM)
    values = state.cpu().numpy()
    return {name: SegmentationMeter.from_state(values[i]) for i, name in enumerate(names)}


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum a dict of scalars over all ranks (keys must be identical on all ranks)."""
    if not is_distributed():
        return dict(values)
    names = sorted(values)
    tensor = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return dict(zip(names, tensor.cpu().tolist()))


def gather_lists(items: list) -> list:
    """Concatenate every rank's list (picklable items) on all ranks, in rank order."""
    if not is_distributed():
        return list(items)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if is_distributed():
        dist.barrier()  # no rank tears gloo down while another still talks to it
        dist.destroy_process_group()
