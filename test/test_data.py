"""The DELIVER loader and joint transforms on a data set written by the scene generator."""

from __future__ import annotations

import json
import random
import shutil

import cv2
import numpy as np
import pytest
import torch

from robustseg_core.classes import IGNORE_INDEX, NUM_CLASSES
from robustseg_core.data import DatasetError, DeliverDataset, EvalTransform, TrainTransform, read_label, scan_split
from robustseg_core.dataset_meta import PARTIAL_FOLDER, index_dataset, read_meta


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


def test_folders_without_a_finished_meta_json_are_refused(mini_dataset, tmp_path):
    with pytest.raises(DatasetError, match="no such data set folder"):
        scan_split(tmp_path / "nowhere", "train")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(mini_dataset, unfinished)
    (unfinished / PARTIAL_FOLDER).mkdir()
    with pytest.raises(DatasetError, match="unfinished generate_dataset run .* run the same generate_dataset command"):
        DeliverDataset(unfinished, "train")
    (unfinished / PARTIAL_FOLDER).rmdir()
    (unfinished / "meta.json").unlink()
    with pytest.raises(DatasetError, match=f"no meta.json.*generate_dataset --index {unfinished}"):
        DeliverDataset(unfinished, "train")


def test_an_index_makes_a_folder_from_elsewhere_loadable(mini_dataset, tmp_path):
    foreign = tmp_path / "deliver"
    shutil.copytree(mini_dataset, foreign)
    (foreign / "meta.json").unlink()
    meta = index_dataset(foreign)
    assert (meta["width"], meta["height"]) == (64, 64)
    assert [len(meta["splits"][split]) for split in ("train", "val", "test")] == [3, 2, 1]
    assert len(DeliverDataset(foreign, "train")) == len(DeliverDataset(mini_dataset, "train")) == 6
    with pytest.raises(DatasetError, match="already has meta.json"):
        index_dataset(foreign)
    empty = tmp_path / "empty"
    (empty / "img").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no img/<condition>/<split>/<scene>/"):
        index_dataset(empty)


def test_frames_on_disk_must_be_the_listed_ones(mini_dataset, tmp_path):
    root = tmp_path / "mixed"
    shutil.copytree(mini_dataset, root)
    listed = sorted((root / "img").glob("*/train/*/*_rgb_front.png"))
    extra = listed[0].with_name("000007_rgb_front.png")  # a frame of another run
    shutil.copy(listed[0], extra)
    with pytest.raises(DatasetError, match=f"{extra}: not listed in .*meta.json"):
        DeliverDataset(root, "train")
    extra.unlink()
    listed[-1].unlink()
    with pytest.raises(DatasetError, match=f"{listed[-1]}: missing; meta.json lists 6 train frames"):
        DeliverDataset(root, "train")


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
    png = victim.read_bytes()
    victim.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=f"{victim.name}: not a PNG image"):  # found when the split is listed
        DeliverDataset(root, "train", modalities=["depth"])
    victim.write_bytes(png[:40])  # the header survives, the pixels do not: found when the frame is read
    dataset = DeliverDataset(root, "train", modalities=["depth"])
    with pytest.raises(DatasetError, match=f"{victim.name}: missing or not a readable image"):
        dataset[frame_index(dataset, "depth", victim)]


def test_an_image_of_another_size_is_named_before_training(mini_dataset, tmp_path):
    root, victim = tamper(mini_dataset, tmp_path, "lidar")
    cv2.imwrite(str(victim), np.zeros((32, 48, 3), np.uint8))  # say, a 48 px run's file mixed into a 64 px set
    with pytest.raises(DatasetError, match=rf"{victim.name}: 48x32 px, but the data set's meta.json says 64x64"):
        DeliverDataset(root, "train", modalities=["lidar"])


def test_low_resolution_events_are_resized_to_rgb(mini_dataset, tmp_path):
    root, victim = tamper(mini_dataset, tmp_path, "event")
    small = np.zeros((32, 32, 3), np.uint8)
    small[0, 0] = 200
    cv2.imwrite(str(victim), small)
    meta = json.loads((root / "meta.json").read_text())
    scene = next(s for s in meta["splits"]["train"] if s["scene"] == victim.parent.name)
    scene["event_size"] = [32, 32]  # as meta.json records an eventlowres scene
    (root / "meta.json").write_text(json.dumps(meta))
    dataset = DeliverDataset(root, "train", modalities=["event"])
    event = dataset[frame_index(dataset, "event", victim)]["images"][0]
    assert event.shape == (64, 64, 3) and (event[:2, :2] == 200).all() and event[2:, 2:].max() == 0


def test_a_scene_name_under_two_conditions_keeps_each_records_event_size(mini_dataset, tmp_path):
    """Real DELIVER may reuse a scene name under other conditions: each record's event size is its own."""
    root = tmp_path / "deliver"
    shutil.copytree(mini_dataset, root)
    (root / "meta.json").unlink()
    first, second = sorted((root / "img").glob("*/train/*"))[:2]  # conditions in sorted order, e.g. cloud, fog
    assert first.parent.parent.name < second.parent.parent.name
    for folder in ("img", "hha", "event", "lidar", "semantic"):
        old = root / folder / second.parent.parent.name / "train" / second.name
        old.rename(old.with_name(first.name))
    for path in (root / "event" / first.parent.parent.name / "train" / first.name).glob("*.png"):
        cv2.imwrite(str(path), np.zeros((32, 32, 3), np.uint8))  # low-resolution events in the first only
    meta = index_dataset(root)
    sizes = {(s["condition"], s["scene"]): s["event_size"] for s in meta["splits"]["train"]}
    assert sizes[(first.parent.parent.name, first.name)] == [32, 32]
    assert sizes[(second.parent.parent.name, first.name)] == [64, 64]
    assert len(DeliverDataset(root, "train", modalities=["event"])) == 6
    victim = sorted((root / "event" / second.parent.parent.name / "train" / first.name).glob("*.png"))[0]
    cv2.imwrite(str(victim), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DatasetError, match=rf"{victim.name}: 32x32 px, but the data set's meta.json says 64x64$"):
        DeliverDataset(root, "train", modalities=["event"])


@pytest.mark.parametrize("edit, problem", [
    (lambda meta: meta["splits"]["train"][1].pop("frames"), "split 'train', scene '{scene}': field \"frames\" missing"),
    (lambda meta: meta["splits"]["train"][1].pop("condition"),
     "split 'train', scene '{scene}': field \"condition\" missing"),
    (lambda meta: meta["splits"]["train"][1].update(frames="2"),
     "split 'train', scene '{scene}': field \"frames\" '2', expected a count >= 0"),
    (lambda meta: meta.update(splits=list(meta["splits"].values())), "\"splits\" is a JSON array, expected an object"),
    (lambda meta: meta["splits"].update(val={}), "split 'val' is a JSON object, expected a list of scene records"),
    (lambda meta: meta.pop("classes"), "not a data set record \\(no classes\\)"),
    (lambda meta: meta.update(classes="road"), "\"classes\" is 'road', expected the class names in class-id order"),
    (lambda meta: meta["splits"]["train"][1].update(event_size=[32]),
     "split 'train', scene '{scene}': field \"event_size\" is \\[32\\], expected \\[width, height\\]"),
])
def test_a_hand_edited_meta_json_is_refused_naming_the_scene_and_field(mini_dataset, tmp_path, edit, problem):
    meta = json.loads((mini_dataset / "meta.json").read_text())
    scene = meta["splits"]["train"][1]["scene"]
    edit(meta)
    root = tmp_path / "edited"
    root.mkdir()
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=f"^{root / 'meta.json'}: " + problem.format(scene=scene)):
        read_meta(root)


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


@pytest.mark.parametrize("height, width, short_side, expected", [
    (600, 800, 672, (672, 896)),  # 600 * (672 / 600) is 672.0000000000001 in floats: rounded up to 704 before
    (375, 1242, 448, (448, 1504)),
    (25, 50, 448, (448, 896)),
    (128, 128, 256, (256, 256)),
    (1080, 1920, 512, (512, 928)),
])
def test_eval_size_scales_the_short_side_exactly_and_rounds_up_to_32(height, width, short_side, expected):
    from robustseg_core.data.transforms import eval_size
    assert eval_size(height, width, short_side) == expected


def test_labels_are_resized_pixel_centre_aligned_like_the_images():
    from robustseg_core.data.transforms import resize_nearest
    label = np.arange(9, dtype=np.uint8).reshape(3, 3)
    assert resize_nearest(label, 1, 1).item() == 4, "the centre pixel, not the top-left one"
    assert (resize_nearest(label, 6, 6)[::2, ::2] == label).all()
