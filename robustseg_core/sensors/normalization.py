"""The one place where modality images become network input values.

Every modality is a 3-channel uint8 image [H, W, 3]. All are divided by 255; RGB then gets the
ImageNet mean and std, the others stay in [0, 1] (DELIVER / RobustSeg convention, paper_spec §1.4).
"""

from __future__ import annotations

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


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 image [H, W, 3] -> float tensor [3, H, W] in [0, 1]."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def normalize(tensor: torch.Tensor, modality: str) -> torch.Tensor:
    """Normalise a [..., 3, H, W] tensor in [0, 1] for ``modality`` (returns a new tensor)."""
    mean, std = NORMALIZATION[modality]
    mean_t = torch.tensor(mean, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor - mean_t) / std_t


def preprocess(image: np.ndarray, modality: str) -> torch.Tensor:
    """uint8 modality image [H, W, 3] -> normalised network input [3, H, W]."""
    return normalize(to_tensor(image), modality)
