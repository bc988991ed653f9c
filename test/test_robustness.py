"""EMM / RMM / NM protocols: weights, perturbations and repeatability."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from robustseg_core.data import DeliverDataset, EvalTransform, collate
from robustseg_core.evaluation import COMBINATIONS
from robustseg_core.evaluation.anymodal import evaluate_combinations
from robustseg_core.evaluation.robustness import (
    evaluate_robustness, expected_miou, noisy_modalities, random_element_mask, robustness_markdown,
)
from robustseg_core.models import build_segmentor


def test_expectation_weights_by_hand():
    # only RDEL (0 missing) and R (3 missing): weights (1-p)^4 and p^3 (1-p)
    p = 0.2
    value = expected_miou({"RDEL": 60.0, "R": 20.0}, p)
    w_full, w_r = 0.8**4, 0.2**3 * 0.8
    assert value == pytest.approx((60 * w_full + 20 * w_r) / (w_full + w_r))
    assert expected_miou({name: 10.0 for name in COMBINATIONS}, 0.05) == pytest.approx(10.0)


def test_random_element_mask_touches_only_missing_modalities():
    generator = torch.Generator().manual_seed(0)
    images = torch.ones(2, 4, 3, 32, 32)
    masked = random_element_mask(images, torch.tensor([False, True, False, True]), 0.5, generator)
    assert torch.equal(masked[:, [0, 2]], images[:, [0, 2]])
    zero_share = (masked[:, [1, 3]] == 0).float().mean()
    assert 0.45 < zero_share < 0.55


def test_noise_spares_events_from_gaussian_noise():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 4, 3, 16, 16)
    noisy = noisy_modalities(images, density=0.0, sigma=0.5, generator=generator)
    assert torch.equal(noisy[:, 2], images[:, 2])  # events: no salt and pepper at d = 0, no Gaussian
    assert not torch.equal(noisy[:, 0], images[:, 0])
    salted = noisy_modalities(images, density=0.5, sigma=0.0, generator=generator)
    event = salted[0, 2]
    share = ((event == images[0, 2].min()) | (event == images[0, 2].max())).float().mean()
    assert 0.4 < share < 0.6


def test_salt_and_pepper_use_each_frames_own_extremes():
    """A frame's salt and pepper values do not depend on the other frames of its batch (batch size)."""
    images = torch.rand(2, 4, 3, 16, 16)
    images[1] *= 10.0  # the second frame's range is ten times the first's
    salted = noisy_modalities(images, density=0.5, sigma=0.0, generator=torch.Generator().manual_seed(0))
    for frame in range(2):
        for modality in range(4):
            values = salted[frame, modality]
            changed = values != images[frame, modality]
            extremes = torch.stack([images[frame, modality].min(), images[frame, modality].max()])
            assert changed.any() and torch.isin(values[changed], extremes).all()


def test_protocols_are_repeatable_and_complete(mini_dataset):
    torch.manual_seed(0)
    model = build_segmentor("mit_cpu", embed_dim=32).eval()
    loader = DataLoader(DeliverDataset(mini_dataset, "val", transform=EvalTransform(64)), batch_size=4, collate_fn=collate)
    first = evaluate_robustness(model, loader, torch.device("cpu"), rmm_ratios=(0.5,), nm_levels=("high",), seed=3)
    second = evaluate_robustness(model, loader, torch.device("cpu"), rmm_ratios=(0.5,), nm_levels=("high",), seed=3)
    assert first == second
    # evaluate --robustness hands over its zero-fill pass instead of running the 15 combinations again
    zero_fill = evaluate_combinations(model, loader, torch.device("cpu"), COMBINATIONS, ["zero"])["zero"]
    reused = evaluate_robustness(model, loader, torch.device("cpu"), rmm_ratios=(0.5,), nm_levels=("high",), seed=3,
                                 zero_fill=zero_fill)
    assert reused == first
    swapped = {**zero_fill, "R": zero_fill["RDEL"]}  # proof that the handed-over pass is the one used
    assert evaluate_robustness(model, loader, torch.device("cpu"), rmm_ratios=(0.5,), nm_levels=("high",), seed=3,
                               zero_fill=swapped)["EMM"]["combinations"]["R"] == first["EMM"]["combinations"]["RDEL"]
    assert set(first["EMM"]["combinations"]) == set(COMBINATIONS) and set(first["RMM"]) == {"r=0.5"}
    assert {"mean", "E(0.2)", "E(0.1)", "E(0.05)"} <= set(first["EMM"]) and set(first["NM"]) == {"high"}
    assert "| EMM |" in robustness_markdown(first)
