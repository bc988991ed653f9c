"""One process or DDP under ``torchrun``: nccl on GPUs, gloo on CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sized

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..models.checkpoint import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: rank, world size and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1), else one process.

    ``device``: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    requested = resolve_device(device)
    use_cuda = requested.type == "cuda"
    if use_cuda:
        index = local_rank if world_size > 1 or requested.index is None else requested.index
        torch.cuda.set_device(index)
        compute_device = torch.device("cuda", index)
    else:
        compute_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, compute_device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: each sample evaluated exactly once, no padding."""

    def __init__(self, data: Sized, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, len(data), world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (identity without a process group)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value
