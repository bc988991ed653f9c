"""Joint train and eval transforms for multimodal frames (all modalities and the label together).

Input: ``{"images": list of M uint8 [H, W, 3] in the dataset's modality order, "label": uint8
[H, W], "name"}``; output: ``images`` float [M, 3, h, w] normalised per modality
(:mod:`robustseg_core.sensors.normalization`) and ``label`` int64 [h, w].

Train (docs/method.md, "Data"): RGB-only colour jitter (p 0.2), horizontal flip (p 0.5), RGB-only 3x3
Gaussian blur (p 0.2), then a random resized crop whose rescale base is the crop size (ratio in
[0.5, 2]), padding images with 0 and the label with 255. Eval: short side to ``size``, both sides
rounded up to a multiple of 32. Dense modalities are resized bilinearly; sparse ones (event, LiDAR)
by nearest neighbour so that their empty pixels stay empty; labels by nearest neighbour. Nearest
neighbour is pixel-centre aligned (``INTER_NEAREST_EXACT``), as the bilinear resize of the dense images is.
"""

from __future__ import annotations

import random
from typing import Sequence

import cv2
import numpy as np
import torch

from ..classes import IGNORE_INDEX, MODALITIES
from ..sensors.normalization import preprocess_stack

SPARSE_MODALITIES = frozenset({"event", "lidar"})


def resize_nearest(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` ([H, W] or [H, W, C]) at ``width`` x ``height`` px by nearest neighbour, pixel-centre aligned
    (each output pixel takes the source pixel under its centre); itself when it already has that size. The one
    resize of class ids, sparse modalities (empty pixels stay empty) and metric depth, for the data set, the
    generator's analysis, the node and the bag scoring alike."""
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def resize_modality(image: np.ndarray, modality: str, width: int, height: int) -> np.ndarray:
    """Resize a uint8 modality image [H, W, 3] to (height, width) with that modality's interpolation."""
    if modality in SPARSE_MODALITIES:
        return resize_nearest(image, width, height)
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def eval_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to ``short_side``, both rounded up to x32."""
    unit = min(height, width) * 32  # in integers: ceil(side * short_side / min / 32) * 32 with no rounding error
    return -(-height * short_side // unit) * 32, -(-width * short_side // unit) * 32


def _jitter_colour(rgb: np.ndarray) -> np.ndarray:
    """Brightness, contrast and saturation factors each drawn from U(0.5, 1.5)."""
    image = rgb.astype(np.float32)
    image *= random.uniform(0.5, 1.5)
    gray = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    contrast = random.uniform(0.5, 1.5)
    image = contrast * image + (1.0 - contrast) * gray.mean()
    gray = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    saturation = random.uniform(0.5, 1.5)
    image = saturation * image + (1.0 - saturation) * gray[:, :, None]
    return np.clip(image, 0, 255).astype(np.uint8)


class TrainTransform:
    """Random joint augmentation to a square ``crop_size`` crop."""

    def __init__(
        self,
        crop_size: int,
        modalities: Sequence[str] = MODALITIES,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_p: float = 0.5,
        jitter_p: float = 0.2,
        blur_p: float = 0.2,
    ) -> None:
        self.crop_size = crop_size
        self.modalities = tuple(modalities)
        self.scale_range = scale_range
        self.flip_p, self.jitter_p, self.blur_p = flip_p, jitter_p, blur_p

    def __call__(self, item: dict) -> dict:
        images = list(item["images"])
        label = item["label"]
        rgb_index = self.modalities.index("rgb") if "rgb" in self.modalities else None
        if rgb_index is not None and random.random() < self.jitter_p:
            images[rgb_index] = _jitter_colour(images[rgb_index])
        if random.random() < self.flip_p:
            images = [image[:, ::-1] for image in images]
            label = label[:, ::-1]
        if rgb_index is not None and random.random() < self.blur_p:
            images[rgb_index] = cv2.GaussianBlur(images[rgb_index], (3, 3), random.uniform(0.1, 2.0))

        crop = self.crop_size
        height, width = label.shape
        ratio = random.uniform(*self.scale_range)
        scale = min(4 * crop * ratio / max(height, width), crop * ratio / min(height, width))
        new_h, new_w = max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))
        images = [resize_modality(np.ascontiguousarray(im), m, new_w, new_h) for im, m in zip(images, self.modalities)]
        label = resize_nearest(label, new_w, new_h)

        pad_h, pad_w = max(crop - new_h, 0), max(crop - new_w, 0)
        if pad_h or pad_w:
            images = [np.pad(im, ((0, pad_h), (0, pad_w), (0, 0))) for im in images]
            label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        top = random.randint(0, label.shape[0] - crop)
        left = random.randint(0, label.shape[1] - crop)
        images = [im[top : top + crop, left : left + crop] for im in images]
        label = label[top : top + crop, left : left + crop]
        return {
            "images": preprocess_stack(images, self.modalities),
            "label": torch.from_numpy(np.ascontiguousarray(label)).long(),
            "name": item["name"],
        }


class EvalTransform:
    """Deterministic resize (short side to ``size``, sides to multiples of 32) and normalisation."""

    def __init__(self, size: int, modalities: Sequence[str] = MODALITIES) -> None:
        self.size = size
        self.modalities = tuple(modalities)

    def __call__(self, item: dict) -> dict:
        height, width = eval_size(*item["label"].shape, self.size)
        images = [resize_modality(im, m, width, height) for im, m in zip(item["images"], self.modalities)]
        label = resize_nearest(item["label"], width, height)
        return {
            "images": preprocess_stack(images, self.modalities),
            "label": torch.from_numpy(label).long(),
            "name": item["name"],
        }
