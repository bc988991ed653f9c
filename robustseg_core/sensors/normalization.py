"""The one place where modality images become network input values.

Every modality is a 3-channel uint8 image [H, W, 3]. All are divided by 255; RGB then gets the
ImageNet mean and std, the others stay in [0, 1] (DELIVER / RobustSeg convention, docs/method.md, "Data").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Per-modality (mean, std) applied after scaling to [0, 1], in modality order rgb, depth, event, lidar.
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "rgb": (IMAGENET_MEAN, IMAGENET_STD),
    "depth": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "event": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "lidar": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def preprocess_stack(images: Sequence[np.ndarray], modalities: Sequence[str]) -> torch.Tensor:
    """uint8 images [H, W, 3] of the given modalities -> normalised float tensor [M, 3, H, W].

    One pass over the data: value * 1 / (255 std) - mean / std per modality and channel.
    """
    for image, modality in zip(images, modalities):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{modality}: expected a uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    mean = torch.tensor([NORMALIZATION[m][0] for m in modalities]).view(-1, 3, 1, 1)
    std = torch.tensor([NORMALIZATION[m][1] for m in modalities]).view(-1, 3, 1, 1)
    stacked = torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))).float()
    return stacked.mul_(1.0 / (255.0 * std)).sub_(mean / std)
