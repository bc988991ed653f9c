"""Wall time of the parts of training steps, for profiling (``bench/bench_training.py``)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch


def no_timer(name: str) -> nullcontext:
    """Stand-in for ``StepTimer.part`` when nothing is timed."""
    return nullcontext()


class StepTimer:
    """Seconds spent in each named part, summed over ``steps`` steps.

    On CUDA each part synchronises the device at its start and end so that asynchronous kernels are
    charged to the part that launched them (which slows training down: use it to profile only).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)
        self.steps = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start

    def per_step(self) -> dict[str, float]:
        """Mean seconds per step of each part."""
        return {name: total / max(self.steps, 1) for name, total in self.seconds.items()}
