"""The DELIVER loader and joint transforms on a data set written by the scene generator."""

from __future__ import annotations

import random
import shutil

import cv2
import numpy as np
import pytest
import torch

from robustseg_core.classes import IGNORE_INDEX, NUM_CLASSES
from robustseg_core.data import DatasetError, DeliverDataset, EvalTransform, TrainTransform, read_label, scan_split


def test_loads_every_modality_and_label(mini_dataset):
    dataset = DeliverDataset(mini_dataset, "train")
    assert len(dataset) == 6
    item = dataset[0]
    assert len(item["images"]) == 4 and all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in item["images"])
    labels = item["label"]
    assert labels.shape == (64, 64)
    assert set(np.unique(labels)) <= set(range(NUM_CLASSES)) | {IGNORE_INDEX}


def test_label_decoding_follows_deliver(tmp_path):
    raw = np.zeros((2, 3, 4), np.uint8)
    raw[..., 0] = [[0, 1, 25], [255, 7, 2]]  # channel 0 of RGBA holds id + 1
    cv2.imwrite(str(tmp_path / "l.png"), cv2.cvtColor(raw, cv2.COLOR_RGBA2BGRA))
    assert read_label(tmp_path / "l.png").tolist() == [[255, 0, 24], [255, 6, 1]]


def test_condition_and_case_filters(mini_dataset):
    every = scan_split(mini_dataset, "train")
    conditions = sorted({s.condition for s in every})
    only = scan_split(mini_dataset, "train", conditions=[conditions[0]])
    assert 0 < len(only) < len(every) and all(s.condition == conditions[0] for s in only)
    clean = scan_split(mini_dataset, "train", cases=["none"])
    assert clean and all(s.case is None for s in clean)
    failure = next(s.case for s in scan_split(mini_dataset, "val") + every if s.case is not None)
    split = "train" if any(s.case == failure for s in every) else "val"
    chosen = scan_split(mini_dataset, split, cases=[failure])
    assert chosen and all(s.case == failure and failure in s.name for s in chosen)
    with pytest.raises(ValueError, match="unknown condition"):
        scan_split(mini_dataset, "train", conditions=["snow"])


def test_out_of_range_label_values_are_named(tmp_path):
    raw = np.zeros((2, 2, 4), np.uint8)
    raw[0, 0, 0] = 40
    cv2.imwrite(str(tmp_path / "bad.png"), cv2.cvtColor(raw, cv2.COLOR_RGBA2BGRA))
    with pytest.raises(DatasetError, match=r"bad.png: label values \[40\] are outside 1..25"):
        read_label(tmp_path / "bad.png")


def test_empty_split_and_missing_root_are_errors(mini_dataset, tmp_path):
    empty = tmp_path / "empty"
    (empty / "img").mkdir(parents=True)
    with pytest.raises(DatasetError, match="split 'train' is empty"):
        scan_split(empty, "train")
    with pytest.raises(DatasetError, match="no img/ folder"):
        scan_split(tmp_path / "nowhere", "train")


def tamper(mini_dataset, tmp_path, modality):
    """A copy of the data set and the path of its first train file of ``modality``."""
    folder, tag = {"depth": ("hha", "depth"), "event": ("event", "event"), "lidar": ("lidar", "lidar")}[modality]
    root = tmp_path / f"copy_{modality}"
    shutil.copytree(mini_dataset, root)
    victim = sorted((root / folder).glob(f"*/train/*/*_{tag}_front.png"))[0]
    return root, victim


def frame_index(dataset, modality, path):
    return next(i for i, s in enumerate(dataset.samples) if s.files[modality] == path)


def test_missing_file_is_named(mini_dataset, tmp_path):
    root, victim = tamper(mini_dataset, tmp_path, "lidar")
    victim.unlink()
    with pytest.raises(DatasetError, match=f"{victim.name}: missing file"):
        DeliverDataset(root, "train")


def test_unreadable_file_is_named(mini_dataset, tmp_path):
    root, victim = tamper(mini_dataset, tmp_path, "depth")
    victim.write_bytes(b"not a png")
    dataset = DeliverDataset(root, "train", modalities=["depth"])
    with pytest.raises(DatasetError, match=f"{victim.name}: missing or not a readable image"):
        dataset[frame_index(dataset, "depth", victim)]


def test_mismatched_modality_size_is_an_error(mini_dataset, tmp_path):
    root, victim = tamper(mini_dataset, tmp_path, "lidar")
    cv2.imwrite(str(victim), np.zeros((32, 48, 3), np.uint8))
    dataset = DeliverDataset(root, "train", modalities=["lidar"])
    with pytest.raises(DatasetError, match=r"size 48x32 does not match the label"):
        dataset[frame_index(dataset, "lidar", victim)]


def test_low_resolution_events_are_resized_to_rgb(mini_dataset, tmp_path):
    root, victim = tamper(mini_dataset, tmp_path, "event")
    small = np.zeros((32, 32, 3), np.uint8)
    small[0, 0] = 200
    cv2.imwrite(str(victim), small)
    dataset = DeliverDataset(root, "train", modalities=["event"])
    event = dataset[frame_index(dataset, "event", victim)]["images"][0]
    assert event.shape == (64, 64, 3) and (event[:2, :2] == 200).all() and event[2:, 2:].max() == 0


def test_train_transform_crops_and_flips_jointly(mini_dataset):
    dataset = DeliverDataset(mini_dataset, "train")
    item = dataset.load(0)
    random.seed(0)
    out = TrainTransform(48)(item)
    assert out["images"].shape == (4, 3, 48, 48) and out["images"].dtype == torch.float32
    assert out["label"].shape == (48, 48) and out["label"].dtype == torch.int64
    # flip only: label and every modality mirrored together, nothing else changed
    transform = TrainTransform(64, scale_range=(1.0, 1.0), flip_p=1.0, jitter_p=0.0, blur_p=0.0)
    flipped = transform(item)
    assert torch.equal(flipped["label"], torch.from_numpy(item["label"][:, ::-1].copy()).long())
    plain = TrainTransform(64, scale_range=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, blur_p=0.0)(item)
    assert torch.equal(flipped["images"], plain["images"].flip(-1))


def test_eval_transform_rounds_to_multiples_of_32(mini_dataset):
    item = DeliverDataset(mini_dataset, "val").load(0)
    out = EvalTransform(80)(item)
    assert out["images"].shape[-2:] == (96, 96) and out["label"].shape == (96, 96)
    assert out["images"][0].mean() < 1.5 and out["images"][1].min() >= 0  # RGB standardised, others in [0, 1]
