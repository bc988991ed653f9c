"""Online hard example mining cross-entropy (docs/method.md, "Stage 1: the teacher")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..classes import IGNORE_INDEX


class OhemCrossEntropy(nn.Module):
    """Mean cross-entropy over the hard pixels of a batch.

    Hard pixels are those whose loss exceeds ``-ln(thresh_prob)``; if fewer than
    ``valid_pixels // min_kept_divisor`` qualify, the top ones by loss are kept instead.
    Logits [B, K, H, W], labels [B, H, W] int64 with ``ignore_index`` for unlabeled pixels.
    """

    def __init__(self, thresh_prob: float = 0.7, min_kept_divisor: int = 16, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not 0.0 < thresh_prob < 1.0:
            raise ValueError(f"thresh_prob must be in (0, 1), got {thresh_prob}")
        self.threshold = -math.log(thresh_prob)
        self.min_kept_divisor = min_kept_divisor
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pixel_loss = F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index, reduction="none").flatten()
        min_kept = int((labels != self.ignore_index).sum()) // self.min_kept_divisor
        hard = pixel_loss[pixel_loss > self.threshold]
        if hard.numel() < min_kept:
            hard = pixel_loss.topk(min_kept).values
        if hard.numel() == 0:
            return pixel_loss.sum() * 0.0
        return hard.mean()
