"""DELIVER-layout multimodal segmentation dataset (real DELIVER and generated scenes alike).

On disk (DELIVER's layout, docs/method.md, "Data")::

    <root>/img/<condition>/<split>/<scene>/<frame>_rgb_front.png
    <root>/hha/.../<frame>_depth_front.png        # HHA-encoded depth, the "depth" input
    <root>/event/.../<frame>_event_front.png
    <root>/lidar/.../<frame>_lidar_front.png
    <root>/semantic/.../<frame>_semantic_front.png  # class id + 1 in channel 0, 0 = unlabeled

Every modality is decoded to a uint8 RGB image [H, W, 3] (4 channels -> first 3, 1 channel ->
repeated); event images of another size (DELIVER's low-resolution event case) are resized to the
RGB size by nearest neighbour, as ``Segmenter`` and the ROS node do before resizing to the network
input. Labels: raw 1..25 -> class 0..24, raw 0 and 255 -> ignore (255).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..classes import CONDITIONS, FAILURE_CASES, IGNORE_INDEX, MODALITIES, NUM_CLASSES, SPLITS
from ..dataset_meta import DatasetError, check_frame_sizes, check_listed, read_meta
from ..errors import UsageError
from .transforms import resize_nearest


#: Folder and file-name tag of each modality, relative to the RGB path (DELIVER's replacements).
MODALITY_LOCATION: dict[str, tuple[str, str]] = {
    "rgb": ("img", "_rgb"),
    "depth": ("hha", "_depth"),
    "event": ("event", "_event"),
    "lidar": ("lidar", "_lidar"),
    "semantic": ("semantic", "_semantic"),
}


class SelectionError(UsageError, ValueError):
    """An unknown split, modality, weather condition or failure case was asked for."""


def _read_8bit_png(path: str | os.PathLike, kind: str) -> np.ndarray:
    """The PNG at ``path`` as stored (uint8 [H, W] or [H, W, C], BGR(A) order); ``DatasetError`` naming the
    file and ``kind`` ("image", "label image") when it is missing, unreadable or not 8-bit."""
    image = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: missing or not a readable {kind}")
    if image.dtype != np.uint8:
        raise DatasetError(f"{path}: expected an 8-bit {kind}, got {image.dtype}")
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG as uint8 RGB [H, W, 3] (4 channels -> first 3; 1 channel -> repeated)."""
    image = _read_8bit_png(path, "image")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a DELIVER semantic PNG -> class ids uint8 [H, W] with 255 = ignore."""
    image = _read_8bit_png(path, "label image")
    raw = image if image.ndim == 2 else image[:, :, 2]  # channel 0 of RGB(A) is index 2 in BGR(A)
    invalid = (raw > NUM_CLASSES) & (raw != 255)
    if invalid.any():
        raise DatasetError(
            f"{path}: label values {sorted(np.unique(raw[invalid]).tolist())[:5]} are outside 1..{NUM_CLASSES} "
            "(class id + 1) and 0 / 255 (ignore)"
        )
    labels = raw.astype(np.int16) - 1
    labels[(raw == 0) | (raw == 255)] = IGNORE_INDEX
    return labels.astype(np.uint8)


@dataclass(frozen=True)
class Sample:
    """Paths of one frame: modality name -> file, plus the label file."""

    name: str
    condition: str
    case: str | None
    files: dict[str, Path]
    label: Path


def modality_path(rgb_path: Path, root: Path, target: str) -> Path:
    """Path of modality ``target`` (or "semantic") for the frame whose RGB file is ``rgb_path``."""
    folder, tag = MODALITY_LOCATION[target]
    relative = rgb_path.relative_to(root / "img")
    return root / folder / relative.parent / relative.name.replace("_rgb", tag)


def failure_case(path: Path) -> str | None:
    """The failure case named in ``path`` (DELIVER tags them by substring), or None."""
    text = path.as_posix()
    return next((case for case in FAILURE_CASES if case in text), None)


def scan_split(
    root: str | os.PathLike,
    split: str,
    modalities: Sequence[str] = MODALITIES,
    conditions: Sequence[str] | None = None,
    cases: Sequence[str] | None = None,
    meta: Mapping | None = None,
) -> list[Sample]:
    """List the frames of ``split`` and check them against the data set's ``meta.json`` (``meta``, read
    when None; :mod:`robustseg_core.dataset_meta`): the frames on disk must be the listed ones, every
    needed file must exist and every kept image must have the listed size.

    ``conditions`` keeps those weather folders (None: all); ``cases`` keeps frames whose path names
    one of those failure cases, where ``"none"`` means frames without a failure case (None: all).
    """
    root = Path(root)
    if split not in SPLITS:
        raise SelectionError(f"split {split!r}: expected one of {SPLITS}")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise SelectionError(f"modalities {list(modalities)}: expected a non-empty subset of {MODALITIES}")
    for name, chosen, allowed in (("condition", conditions, CONDITIONS), ("case", cases, FAILURE_CASES + ("none",))):
        bad = [c for c in chosen or () if c not in allowed]
        if bad:
            raise SelectionError(f"unknown {name} {bad}: expected some of {allowed}")
    meta = read_meta(root) if meta is None else meta
    rgb_paths = sorted((root / "img").glob(f"*/{split}/*/*_rgb_front.png"))
    check_listed(root, meta, split, rgb_paths)

    samples = []
    for rgb_path in rgb_paths:
        condition = rgb_path.relative_to(root / "img").parts[0]
        case = failure_case(rgb_path.relative_to(root))
        if conditions is not None and condition not in conditions:
            continue
        if cases is not None and (case or "none") not in cases:
            continue
        files = {m: modality_path(rgb_path, root, m) for m in modalities}
        label = modality_path(rgb_path, root, "semantic")
        for path in (*files.values(), label):
            if not path.is_file():
                raise DatasetError(f"{path}: missing file (needed by {rgb_path})")
        name = rgb_path.relative_to(root / "img").as_posix()[: -len("_rgb_front.png")]
        samples.append(Sample(name, condition, case, files, label))
    if not samples:
        raise DatasetError(
            f"{root}: split {split!r} is empty for conditions={conditions}, cases={cases}"
        )
    check_frame_sizes(meta, (((sample.condition, split, sample.label.parent.name),
                              {**sample.files, "semantic": sample.label}) for sample in samples))
    return samples


class DeliverDataset(Dataset):
    """The frames of one split, optionally filtered by condition and failure case.

    ``cache=True`` keeps every decoded frame in memory (uint8; about 5 x 3 bytes per pixel and frame),
    which removes PNG decoding from every epoch after the first.

    Without a transform an item is ``{"images": list of M uint8 arrays [H, W, 3], "label": uint8
    [H, W], "name": str}``; the transforms in :mod:`robustseg_core.data.transforms` turn that into
    normalised tensors ``images [M, 3, H, W]`` and ``label [H, W]`` (int64).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        modalities: Sequence[str] = MODALITIES,
        conditions: Sequence[str] | None = None,
        cases: Sequence[str] | None = None,
        transform: Callable[[dict], dict] | None = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.modalities = tuple(modalities)
        self.meta = read_meta(root)
        #: Class names in class-id order, as the data set's meta.json lists them.
        self.classes: tuple[str, ...] = tuple(self.meta["classes"])
        self.samples = scan_split(root, split, self.modalities, conditions, cases, self.meta)
        self.transform = transform
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> dict:
        """Decoded frame ``index`` before any transform (kept in memory after the first read when the
        data set was made with ``cache=True``; the transforms never write into these arrays)."""
        if self._cache is not None and index in self._cache:
            return dict(self._cache[index])
        item = self._decode(index)
        if self._cache is not None:
            self._cache[index] = item
        return dict(item)

    def preload(self) -> None:
        """Decode every frame into the cache now (a data set made with ``cache=True``), in this process: data
        loader workers forked from it share the decoded frames, so they need not outlive an epoch."""
        if self._cache is None:
            raise ValueError(f"{self.root} ({self.split}): preload needs a data set made with cache=True")
        for index in range(len(self)):
            self.load(index)

    def _decode(self, index: int) -> dict:
        sample = self.samples[index]
        label = read_label(sample.label)
        height, width = label.shape
        images = []
        for modality in self.modalities:
            path = sample.files[modality]
            image = read_image(path)
            if image.shape[:2] != (height, width):
                if modality != "event":
                    raise DatasetError(
                        f"{path}: size {image.shape[1]}x{image.shape[0]} does not match the label "
                        f"{sample.label} ({width}x{height})"
                    )
                image = resize_nearest(image, width, height)
            images.append(image)
        return {"images": images, "label": label, "name": sample.name}

    def __getitem__(self, index: int) -> dict:
        item = self.load(index)
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return f"DeliverDataset({str(self.root)!r}, split={self.split!r}, modalities={self.modalities}, n={len(self)})"


def collate(batch: list[dict]) -> dict:
    """Stack transformed items: images [B, M, 3, H, W], label [B, H, W], names list."""
    return {
        "images": torch.stack([item["images"] for item in batch]),
        "label": torch.stack([item["label"] for item in batch]),
        "name": [item["name"] for item in batch],
    }
