"""Segmenter: serving gives the same network input and output as the evaluation data path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustseg_core.data import DeliverDataset, EvalTransform, read_image, resize_nearest
from robustseg_core.inference import Segmenter
from robustseg_core.models import build_segmentor
from robustseg_core.models.checkpoint import checkpoint_meta, save_checkpoint
from robustseg_core.sim.drive import DriveConfig
from robustseg_core.sim.writer import SceneJob, write_dataset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    meta = checkpoint_meta({"data": {"eval_size": 64}})
    save_checkpoint(path, {"model": model.state_dict(), "architecture": model.architecture, "meta": meta})
    return path


def test_same_input_and_output_as_the_dataset_path(mini_dataset, checkpoint):
    dataset = DeliverDataset(mini_dataset, "val")
    item = dataset.load(0)
    expected = EvalTransform(64)(item)
    segmenter = Segmenter(checkpoint, device="cpu")
    images = dict(zip(segmenter.modalities, item["images"]))
    tensor, present = segmenter.prepare(images, *item["label"].shape)
    assert torch.equal(tensor[0], expected["images"]) and present.all()
    result = segmenter.predict(images)
    with torch.inference_mode():
        logits = segmenter.backend.run(expected["images"][None], present)
    assert np.array_equal(result.labels, logits.argmax(1)[0].numpy().astype(np.uint8))
    assert result.labels.shape == item["label"].shape and result.labels.dtype == np.uint8
    assert result.confidence.dtype == np.float32 and 0.0 < result.confidence.min() <= result.confidence.max() <= 1.0
    assert set(result.timings_ms) == {"preprocess", "infer", "postprocess"}


def test_missing_modalities_are_dropped_and_reported(checkpoint):
    segmenter = Segmenter(checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    lidar = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    with_event = segmenter.predict({"rgb": rgb, "lidar": lidar, "event": None})
    assert with_event.present == (True, False, False, True)
    assert with_event.labels.shape == (48, 80)
    changed_absent = segmenter.predict({"rgb": rgb, "lidar": lidar})
    assert np.array_equal(with_event.labels, changed_absent.labels)
    with pytest.raises(ValueError, match="no modality present"):
        segmenter.predict({"rgb": None}, output_size=(48, 80))
    with pytest.raises(ValueError, match="no modality present"):
        segmenter.predict({"rgb": None, "event": None})
    half_size_events = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    assert segmenter.predict({"event": half_size_events, "lidar": lidar}).labels.shape == (48, 80), \
        "without RGB, the output has the largest input's size"


def test_the_convention_defaults_to_the_one_the_model_was_trained_with(checkpoint, tmp_path):
    assert Segmenter(checkpoint, device="cpu").convention == "drop"
    state = torch.load(checkpoint, weights_only=True)
    state["meta"]["config"]["student"] = {"convention": "zero"}
    zero_trained = tmp_path / "zero.pt"
    save_checkpoint(zero_trained, state)
    assert Segmenter(zero_trained, device="cpu").convention == "zero"
    assert Segmenter(zero_trained, device="cpu", convention="auto").convention == "zero"
    assert Segmenter(zero_trained, device="cpu", convention="drop").convention == "drop"


def test_zero_fill_convention_and_bad_arguments(checkpoint):
    segmenter = Segmenter(checkpoint, device="cpu", convention="zero")
    tensor, present = segmenter.prepare({"depth": np.full((32, 32, 3), 7, np.uint8)}, 32, 32)
    assert present.all() and tensor[0, 0].abs().sum() == 0 and tensor[0, 1].abs().sum() > 0
    with pytest.raises(ValueError, match="convention 'half'"):
        Segmenter(checkpoint, convention="half")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            Segmenter(checkpoint, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (fp16 inference path)")
def test_cuda_fp16_matches_cpu(checkpoint):
    rng = np.random.default_rng(1)
    images = {m: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for m in ("rgb", "depth", "event", "lidar")}
    cpu = Segmenter(checkpoint, device="cpu").predict(images)
    gpu = Segmenter(checkpoint, device="cuda").predict(images)
    assert (cpu.labels == gpu.labels).mean() > 0.98


def test_labels_and_confidence_match_softmax():
    from robustseg_core.inference import labels_and_confidence

    logits = torch.randn(2, 25, 12, 16, generator=torch.Generator().manual_seed(0)) * 3
    labels, confidence = labels_and_confidence(logits, (12, 16))
    expected_confidence, expected_labels = logits.softmax(1).max(1)
    assert torch.equal(labels, expected_labels.to(torch.uint8))
    assert torch.allclose(confidence, expected_confidence, atol=1e-6)
    upsampled, _ = labels_and_confidence(logits, (24, 32))
    assert upsampled.shape == (2, 24, 32)


def test_unknown_keys_and_dense_images_of_another_size_are_refused(checkpoint):
    segmenter = Segmenter(checkpoint, device="cpu")
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"unknown image keys \['hha'\]: expected modality names, the model's inputs "
                                         r"being rgb, depth, event, lidar"):
        segmenter.predict({"rgb": rgb, "hha": rgb})
    with pytest.raises(ValueError, match=r"^depth image is 40x24 px but the frame 80x48 px"):
        segmenter.predict({"rgb": rgb, "depth": rgb[::2, ::2]})
    with pytest.raises(ValueError, match=r"^rgb image is 80x48 px but the frame 160x96 px"):
        segmenter.prepare({"rgb": rgb}, 96, 160)
    low_res_events = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    assert segmenter.predict({"rgb": rgb, "event": low_res_events}).labels.shape == (48, 80)
    bigger_events = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
    assert segmenter.predict({"lidar": rgb, "event": bigger_events}).labels.shape == (48, 80), \
        "without RGB, the depth or LiDAR image sets the size"


def test_low_resolution_events_at_an_odd_size_reach_the_network_as_from_the_dataset(checkpoint, tmp_path):
    """33 px frames, 16 px events as the sensor gives them: the same network input as the data set path, which
    brings them to the frame's size first (one nearest step straight to the network size picks other pixels)."""
    job = SceneJob("val", "SIM_0000_eventlowres", 5, "sun", "eventlowres", 1)
    write_dataset(str(tmp_path), [job], DriveConfig(width=33, height=33), seed=0)
    dataset = DeliverDataset(tmp_path, "val")
    expected = EvalTransform(64)(dataset.load(0))["images"]
    segmenter = Segmenter(checkpoint, device="cpu")
    images = {modality: read_image(dataset.samples[0].files[modality]) for modality in segmenter.modalities}
    assert images["event"].shape == (16, 16, 3) and images["rgb"].shape == (33, 33, 3)
    tensor, _ = segmenter.prepare(images, 33, 33)
    assert torch.equal(tensor[0], expected)
    straight = resize_nearest(images["event"], 64, 64)
    assert not np.array_equal(straight, resize_nearest(resize_nearest(images["event"], 33, 33), 64, 64)), \
        "an odd size, where the two ways differ"
