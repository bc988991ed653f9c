"""Confusion-matrix segmentation metrics accumulated over a whole split.

Two mIoU conventions are reported side by side:

* ``miou`` (DELIVER's, ``semseg/metrics.py``): a class absent from both prediction and label has
  IoU 0 and the mean runs over all K classes;
* ``miou_present``: the mean over the classes that occur in the label or the prediction
  (union > 0), i.e. a NaN-skipping mean.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..classes import IGNORE_INDEX


class ConfusionMatrix:
    """K x K counts, rows = label class, columns = predicted class (int64, on ``device``)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch: ``prediction`` and ``label`` are class-id tensors of the same shape."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} differ in shape")
        valid = label != self.ignore_index
        if valid.any() and (label[valid].max() >= self.num_classes or prediction[valid].max() >= self.num_classes):
            raise ValueError(f"class ids must be below {self.num_classes} (or {self.ignore_index} in the label)")
        index = label[valid].long() * self.num_classes + prediction[valid].long()
        counts = torch.bincount(index, minlength=self.num_classes**2)
        self.matrix += counts.view(self.num_classes, self.num_classes).to(self.matrix.device)

    def all_reduce(self) -> None:
        """Sum the counts over all processes of an initialised process group."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def iou(self) -> torch.Tensor:
        """Per-class IoU [K] as float64, NaN where the class is absent from label and prediction."""
        matrix = self.matrix.double()
        true_positive = matrix.diag()
        union = matrix.sum(0) + matrix.sum(1) - true_positive
        return torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))

    def summary(self) -> dict:
        """``miou`` and ``miou_present`` in percent, pixel accuracy, and per-class IoU (None = absent)."""
        iou = self.iou()
        present = ~torch.isnan(iou)
        total = self.matrix.sum().item()
        return {
            "miou": float(torch.nan_to_num(iou, nan=0.0).mean() * 100),
            "miou_present": float(iou[present].mean() * 100) if present.any() else 0.0,
            "pixel_accuracy": float(self.matrix.diag().sum().item() / total * 100) if total else 0.0,
            "per_class_iou": [None if torch.isnan(v) else float(v * 100) for v in iou],
        }
