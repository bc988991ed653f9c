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


def normalization_constants(modalities: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (scale, offset) [M, 3, 1, 1] with normalised = uint8 value * scale - offset per modality and channel:
    scale = 1 / (255 std), offset = mean / std."""
    mean = torch.tensor([NORMALIZATION[m][0] for m in modalities]).view(-1, 3, 1, 1)
    std = torch.tensor([NORMALIZATION[m][1] for m in modalities]).view(-1, 3, 1, 1)
    return 1.0 / (255.0 * std), mean / std


def preprocess_stack(images: Sequence[np.ndarray], modalities: Sequence[str],
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images [H, W, 3] of the given modalities -> normalised float tensor [M, 3, H, W].

    One pass over the data per image: value * 1 / (255 std) - mean / std per modality and channel, read
    straight from the [H, W, 3] layout. ``out``: a float32 [M, 3, H, W] tensor to write into (a caller
    that segments frame after frame reuses one, sparing a fresh allocation per frame); returned.
    """
    for image, modality in zip(images, modalities):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{modality}: expected a uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    height, width = images[0].shape[:2]
    shape = (len(images), 3, height, width)
    if out is None:
        out = torch.empty(shape)
    elif tuple(out.shape) != shape or out.dtype != torch.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {tuple(out.shape)}")
    scale, offset = normalization_constants(modalities)
    for index, image in enumerate(images):
        if image.shape[:2] != (height, width):
            raise ValueError(f"{modalities[index]}: image {image.shape[:2]} differs from the first {(height, width)}")
        if min(image.strides) < 0:  # torch views need non-negative strides (a flipped view is copied)
            image = np.ascontiguousarray(image)
        torch.mul(torch.from_numpy(image).permute(2, 0, 1), scale[index], out=out[index])
    return out.sub_(offset)
