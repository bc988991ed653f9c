"""Numerical checks that the simulated modalities complement each other.

* ``separability``: how well one modality's pixel values (and their local means) tell two classes
  apart within a scene, as the balanced accuracy of a linear discriminant trained on one frame and
  tested on another frame of the same drive (0.5 = chance, 1.0 = perfect);
* ``event_rates``: events per pixel on moving actors versus the static world;
* ``class_contrast`` / ``class_separation``: how different the classes look in RGB, in absolute
  terms (washed out by fog) and relative to the within-class spread (buried by night noise);
* ``probe_miou``: mIoU of a linear probe on multi-scale pixel features of a modality subset.

These are cheap proxies for what a network can learn from each modality alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from robustseg_core.classes import CLASS_ID, MODALITIES, NUM_CLASSES
from robustseg_core.data.transforms import resize_nearest
from robustseg_core.sim.drive import Drive, DriveConfig, Frame, encode_frame


@dataclass
class Sample:
    """One rendered frame with the network's four modality images at camera resolution."""

    seed: int
    frame: Frame
    images: dict[str, np.ndarray]   # rgb, depth (HHA), event, lidar: uint8 [H, W, 3]
    scene_flags: dict[str, object]


def render_samples(seeds, config: DriveConfig, frames: tuple[int, ...] = (2, 6)) -> list[Sample]:
    """Render ``frames`` of a drive per seed and encode them like the data set does."""
    samples = []
    for seed in seeds:
        drive = Drive(int(seed), config)
        style = drive.scene.style
        flags = {"sidewalk_like_road": style.sidewalk_like_road, "poles_like_walls": style.poles_like_walls,
                 "fence_like_wall": style.fence_like_wall, "curb_height": style.curb_height}
        for index in frames:
            frame = drive.frame(index)
            encoded = encode_frame(frame)
            height, width = frame.labels.shape
            event = encoded["event"]
            event = resize_nearest(event, width, height)
            images = {"rgb": encoded["rgb"], "depth": encoded["hha"], "event": event, "lidar": encoded["lidar"]}
            samples.append(Sample(int(seed), frame, images, flags))
    return samples


def pixel_features(image: np.ndarray, window: int = 5) -> np.ndarray:
    """Per-pixel features [H * W, 6]: the three channels and their ``window`` x ``window`` local means."""
    values = image.astype(np.float32) / 255.0
    local = cv2.blur(values, (window, window))
    return np.concatenate((values, local), axis=2).reshape(-1, 6)


def _class_features(sample: Sample, class_id: int, modality: str) -> np.ndarray:
    features = pixel_features(sample.images[modality])
    selected = sample.frame.labels.reshape(-1) == class_id
    if modality == "lidar":
        selected &= sample.images["lidar"].reshape(-1, 3).any(axis=1)
    return features[selected]


def _balanced_accuracy(train: list[np.ndarray], test: list[np.ndarray]) -> float:
    mean_a, mean_b = train[0].mean(axis=0), train[1].mean(axis=0)
    pooled = (np.cov(train[0], rowvar=False) + np.cov(train[1], rowvar=False)) / 2
    pooled += np.eye(pooled.shape[0]) * (1e-5 + 1e-3 * np.trace(pooled) / pooled.shape[0])
    direction = np.linalg.solve(pooled, mean_a - mean_b)
    threshold = (mean_a + mean_b) @ direction / 2
    return float((np.mean(test[0] @ direction > threshold) + np.mean(test[1] @ direction <= threshold)) / 2)


def separability(samples: list[Sample], class_a: str, class_b: str, modality: str,
                 min_pixels: int = 15) -> tuple[float, int]:
    """How well one modality alone tells two classes apart within a scene.

    For every scene (seed) with two frames in which both classes have at least ``min_pixels``
    pixels (for LiDAR: pixels with a return), a linear discriminant on ``pixel_features`` is
    trained on one frame and tested on the other. Returns the mean balanced accuracy over those
    scenes (0.5 = chance, 1 = perfect; NaN if none) and the number of scenes used.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    ids = (CLASS_ID[class_a], CLASS_ID[class_b])
    by_scene: dict[int, list[Sample]] = {}
    for sample in samples:
        by_scene.setdefault(sample.seed, []).append(sample)
    scores = []
    for scene_samples in by_scene.values():
        if len(scene_samples) < 2:
            continue
        train = [_class_features(scene_samples[0], i, modality) for i in ids]
        test = [_class_features(scene_samples[1], i, modality) for i in ids]
        if min(len(x) for x in train + test) < min_pixels:
            continue
        scores.append(_balanced_accuracy(train, test))
    return (float(np.mean(scores)) if scores else float("nan")), len(scores)


def event_rates(samples: list[Sample]) -> tuple[float, float]:
    """Mean events per pixel on moving actors and on static surfaces (sky excluded), over all samples."""
    moving_events = moving_pixels = static_events = static_pixels = 0
    for sample in samples:
        frame = sample.frame
        width, height = frame.event_size
        counts = np.bincount(frame.events["y"].astype(np.int64) * width + frame.events["x"],
                             minlength=width * height).reshape(height, width).astype(np.float32)
        counts = resize_nearest(counts, *frame.labels.shape[::-1])
        static = ~frame.moving & (frame.depth > 0)
        moving_events += counts[frame.moving].sum()
        moving_pixels += frame.moving.sum()
        static_events += counts[static].sum()
        static_pixels += static.sum()
    return float(moving_events / max(moving_pixels, 1)), float(static_events / max(static_pixels, 1))


def _class_luma_stats(image: np.ndarray, labels: np.ndarray, min_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    ids, counts = np.unique(labels, return_counts=True)
    kept = [i for i, n in zip(ids, counts) if n >= min_pixels]
    return (np.array([luma[labels == i].mean() for i in kept]), np.array([luma[labels == i].std() for i in kept]))


def class_contrast(image: np.ndarray, labels: np.ndarray, min_pixels: int = 20) -> float:
    """Spread (std) of the classes' mean luma (0..1) in an RGB image: low when fog or glare wash
    the scene out."""
    means, _ = _class_luma_stats(image, labels, min_pixels)
    return float(np.std(means)) if len(means) > 1 else 0.0


def class_separation(image: np.ndarray, labels: np.ndarray, min_pixels: int = 20) -> float:
    """Spread of the classes' mean luma over the mean within-class spread (a signal-to-noise
    ratio): low when darkness and sensor noise bury the differences between classes."""
    means, spreads = _class_luma_stats(image, labels, min_pixels)
    return float(np.std(means) / (spreads.mean() + 1e-3)) if len(means) > 1 else 0.0


def probe_features(sample: Sample, modalities: tuple[str, ...], windows: tuple[int, ...] = (1, 5, 17, 49)
                   ) -> np.ndarray:
    """Per-pixel features [H * W, F] for a linear probe: every channel of the chosen modalities
    averaged over several window sizes, plus the pixel's normalised row (a position prior shared by
    every modality subset)."""
    height, width = sample.frame.labels.shape
    columns = [np.repeat(np.linspace(0.0, 1.0, height, dtype=np.float32), width)[:, None]]
    for modality in modalities:
        values = sample.images[modality].astype(np.float32) / 255.0
        for window in windows:
            blurred = values if window == 1 else cv2.blur(values, (window, window))
            columns.append(blurred.reshape(-1, 3))
    return np.concatenate(columns, axis=1)


def probe_miou(train: list[Sample], test: list[Sample], modalities: tuple[str, ...], steps: int = 300,
               pixels_per_sample: int = 2000, seed: int = 0) -> tuple[float, np.ndarray]:
    """mIoU of a class-balanced softmax-regression probe on ``probe_features`` of ``modalities``,
    trained (Adam) on pixels sampled from ``train`` and evaluated on every pixel of ``test``.

    Returns the mIoU over the classes present in the test labels and the per-class IoU [25] (NaN
    for absent classes). A weak but quick proxy for what a modality subset carries on its own.
    """
    rng = np.random.default_rng(seed)
    inputs, targets = [], []
    for sample in train:
        features = probe_features(sample, modalities)
        labels = sample.frame.labels.reshape(-1)
        pick = rng.choice(len(labels), min(pixels_per_sample, len(labels)), replace=False)
        inputs.append(features[pick])
        targets.append(labels[pick])
    x = np.concatenate(inputs)
    y = np.concatenate(targets).astype(np.int64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
    x = (x - mean) / std
    weights = np.zeros((x.shape[1], NUM_CLASSES), np.float32)
    bias = np.zeros(NUM_CLASSES, np.float32)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    frequency = onehot.mean(axis=0)
    balance = np.where(frequency > 0, 1.0 / np.sqrt(np.maximum(frequency, 1e-6)), 0.0)[y][:, None]
    balance /= balance.mean()
    moments = [np.zeros_like(weights), np.zeros_like(weights), np.zeros_like(bias), np.zeros_like(bias)]
    for step in range(1, steps + 1):
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        error = (probabilities - onehot) * balance / len(x)
        for index, (parameter, gradient) in enumerate(((weights, x.T @ error), (bias, error.sum(axis=0)))):
            first, second = moments[2 * index], moments[2 * index + 1]
            first *= 0.9
            first += 0.1 * gradient
            second *= 0.999
            second += 0.001 * gradient**2
            parameter -= 0.05 * (first / (1 - 0.9**step)) / (np.sqrt(second / (1 - 0.999**step)) + 1e-8)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for sample in test:
        predicted = np.argmax(((probe_features(sample, modalities) - mean) / std) @ weights + bias, axis=1)
        truth = sample.frame.labels.reshape(-1).astype(np.int64)
        confusion += np.bincount(truth * NUM_CLASSES + predicted, minlength=NUM_CLASSES**2).reshape(
            NUM_CLASSES, NUM_CLASSES)
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    present = confusion.sum(axis=1) > 0
    iou = np.where(present, intersection / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), iou
