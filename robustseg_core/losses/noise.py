"""Gaussian noise drawn in parallel on CPUs, reproducibly.

PyTorch's CPU generator is one sequential Mersenne Twister, so ``torch.randn`` of a large tensor uses
one core; RRM draws 2 * S*C*H*W numbers per present item and stage, millions per training step.
``standard_normal`` splits the tensor into ``NOISE_STREAMS`` contiguous pieces, each filled by its own
Mersenne Twister, on ``torch.get_num_threads()`` Python threads (``normal_`` releases the GIL). The
values depend on the caller's generator state only, not on the number of threads. The Mersenne
Twister takes 32-bit seeds, which are drawn from the caller's generator: two pieces of different
draws share a seed with probability 2**-32 per pair, so over 10**5 training steps (32 pieces each)
about a thousand pieces repeat an earlier one, applied to other features: harmless for a perturbation.
CUDA tensors are drawn by the device's own parallel generator.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch
from torch import Tensor

#: Generator streams per CPU draw (fixed, so values do not depend on the thread count).
NOISE_STREAMS = 8
_SEED_BOUND = 2**32  # torch.Generator.manual_seed keeps 32 bits for the Mersenne Twister


def standard_normal(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """N(0, 1) tensor of ``shape``; ``generator`` (on ``device``, the default one when None) is the
    only source of randomness. On CPU it advances ``generator`` by ``NOISE_STREAMS`` seed draws."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type != "cpu":
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    noise = torch.empty(tuple(shape), dtype=dtype)
    seeds = torch.randint(_SEED_BOUND, (NOISE_STREAMS,), generator=generator).tolist()
    pieces = noise.view(-1).tensor_split(NOISE_STREAMS)

    def fill(index: int) -> None:
        pieces[index].normal_(generator=torch.Generator().manual_seed(seeds[index]))

    threads = min(NOISE_STREAMS, torch.get_num_threads())
    if threads == 1:
        for index in range(NOISE_STREAMS):
            fill(index)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, range(NOISE_STREAMS)))
    return noise
