"""Random modality dropout for student training (docs/method.md, "Modality dropout").

Per sample: draw the number of kept modalities k from {1..M} (uniform by default), then a
uniformly random subset of k modalities. Any modality can be dropped, RGB included, and at least
one is always kept. Unlike the released code, which draws one subset per forward call, every sample
of the batch gets its own draw. What happens to the dropped modalities (left out of the fusion, or
zero-filled and encoded) is decided by ``apply_missing_convention``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..models.segmentor import apply_missing_convention


def sample_modality_dropout(
    batch_size: int,
    num_modalities: int = 4,
    generator: torch.Generator | None = None,
    k_probabilities: Sequence[float] | Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw which modalities each sample keeps.

    Args:
        batch_size: number of samples B (>= 1).
        num_modalities: number of modalities M (>= 1).
        generator: random source; the draw happens on its device (CPU when None).
        k_probabilities: M weights for k = 1..M kept modalities (non-negative, positive sum;
            normalised here). None = uniform, as in the paper.
        device: device of the returned mask (the generator's device when None).

    Returns:
        keep: bool [B, M], True where the modality is kept; every row has k >= 1 True entries.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_modalities < 1:
        raise ValueError(f"num_modalities must be >= 1, got {num_modalities}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    probabilities = validated_k_probabilities(k_probabilities, num_modalities).to(draw_device)
    kept_counts = torch.multinomial(probabilities, batch_size, replacement=True, generator=generator) + 1
    scores = torch.rand(batch_size, num_modalities, generator=generator, device=draw_device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    keep = ranks < kept_counts[:, None]
    return keep if device is None else keep.to(device)


def apply_modality_dropout(
    images: Tensor,
    convention: str = "drop",
    generator: torch.Generator | None = None,
    k_probabilities: Sequence[float] | Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw a per-sample dropout for ``images`` [B, M, 3, H, W] and apply a missing-modality convention.

    Returns ``(student_images, student_present, keep)``: the model inputs and presence mask from
    ``apply_missing_convention`` ("drop": images unchanged, present = keep; "zero": dropped
    modalities zero-filled, present all True), and the drawn mask ``keep`` [B, M] bool of the
    modalities that were really observed.
    """
    if images.ndim != 5:
        raise ValueError(f"images must be a tensor [B, M, 3, H, W], got shape {tuple(images.shape)}")
    batch, num_modalities = images.shape[:2]
    keep = sample_modality_dropout(
        batch, num_modalities, generator=generator, k_probabilities=k_probabilities, device=images.device
    )
    student_images, student_present = apply_missing_convention(images, keep, convention)
    return student_images, student_present, keep


def validated_k_probabilities(k_probabilities: Sequence[float] | Tensor | None, num_modalities: int) -> Tensor:
    """Probabilities [M] of keeping k = 1..M modalities, float64 on the CPU, summing to 1."""
    if k_probabilities is None:
        return torch.full((num_modalities,), 1.0 / num_modalities, dtype=torch.float64)
    weights = torch.as_tensor(k_probabilities, dtype=torch.float64).detach().cpu()
    if weights.ndim != 1 or weights.numel() != num_modalities:
        raise ValueError(
            f"k_probabilities must hold one weight for each k = 1..{num_modalities}, "
            f"got shape {tuple(weights.shape)}"
        )
    if not bool(torch.isfinite(weights).all()):
        raise ValueError(f"k_probabilities must be finite, got {weights.tolist()}")
    if bool((weights < 0).any()):
        raise ValueError(f"k_probabilities must be non-negative, got {weights.tolist()}")
    total = float(weights.sum())
    if not total > 0.0:
        raise ValueError(f"k_probabilities must have a positive sum, got {weights.tolist()}")
    return weights / total
