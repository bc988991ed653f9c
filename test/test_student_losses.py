"""Stage-2 losses (logit KL, HPDM, RRM) and per-sample modality dropout.

Every vectorised loss is compared with a slow reference written straight from docs/method.md ("HPDM", "RRM") with
explicit Python loops over samples, stages, modalities and classes.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from robustseg_core.losses import (
    OhemCrossEntropy, class_prototypes, hpdm_loss, logit_kl, rrm_loss, sample_cross_modal_pairing,
)
from robustseg_core.losses.noise import NOISE_STREAMS, standard_normal
from robustseg_core.training.modality_dropout import apply_modality_dropout, sample_modality_dropout

NUM_TEST_CLASSES = 5
IGNORE = 255
STAGE_SHAPES = [(4, 8, 8), (6, 4, 4), (8, 2, 2)]  # (C, h, w) per stage, tiny
PRESENT = torch.tensor(
    [[True, True, False, True], [False, True, False, False], [True, True, True, True]]
)


def kl_div_mean(student_log_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """PyTorch's own KLDivLoss(reduction="mean"), its deprecation warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.nn.KLDivLoss(reduction="mean")(student_log_probs, teacher_probs)


def make_stage_features(batch: int, modalities: int, seed: int, shapes=STAGE_SHAPES, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, modalities, *shape, generator=generator).requires_grad_(requires_grad)
        for shape in shapes
    ]


def make_labels(batch: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Labels with a few classes, some ignore pixels, and class 4 absent from every sample."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_TEST_CLASSES - 1, (batch, size, size), generator=generator)
    labels[:, :3, :5] = IGNORE
    return labels


# ----------------------------------------------------------------------------- slow references


def reference_prototypes(feature, labels, num_classes, reference_scaling):
    """One sample and modality: feature [C, h, w], labels [H, W] -> [K, C], loop over classes."""
    resized = F.interpolate(labels[None, None].float(), size=feature.shape[-2:], mode="nearest")[0, 0].long()
    prototypes = torch.zeros(num_classes, feature.shape[0], dtype=feature.dtype)
    for class_id in range(num_classes):
        mask = resized == class_id
        count = int(mask.sum())
        if count == 0:
            continue
        mean = feature[:, mask].mean(dim=1)
        prototypes[class_id] = mean / count if reference_scaling else mean
    return prototypes


def reference_hpdm(student_features, teacher_features, labels, present, teacher_index, temperature=1.0,
                   reference_scaling=False):
    batch, modalities = present.shape
    total = torch.zeros(())
    for sample in range(batch):
        for student_stage, teacher_stage in zip(student_features, teacher_features):
            for modality in range(modalities):
                if not present[sample, modality]:
                    continue
                partner = int(teacher_index[sample, modality])
                student_prototypes = reference_prototypes(
                    student_stage[sample, modality], labels[sample], NUM_TEST_CLASSES, reference_scaling)
                teacher_prototypes = reference_prototypes(
                    teacher_stage[sample, partner].detach(), labels[sample], NUM_TEST_CLASSES, reference_scaling)
                term = kl_div_mean(
                    torch.log_softmax(student_prototypes / temperature, dim=0),
                    torch.softmax(teacher_prototypes / temperature, dim=0),
                ).clamp(min=0)
                total = total + term * temperature**2
    return total / batch


def reference_rrm(student_features, teacher_features, present, teacher_index, lam, n_samples, seed,
                  normalize="none"):
    """Per item, following docs/method.md "RRM" step by step; draws the noise in the documented order."""
    batch, modalities = present.shape
    items = [(n, m) for n in range(batch) for m in range(modalities) if present[n, m]]
    generator = torch.Generator().manual_seed(seed)
    stage_noise = []
    for stage in student_features:
        shape = (len(items), n_samples * stage.shape[2]) + tuple(stage.shape[-2:])
        stage_noise.append(standard_normal((2,) + shape, generator).unbind(0))
    total = torch.zeros(())
    for item, (sample, modality) in enumerate(items):
        for stage, (student_stage, teacher_stage) in enumerate(zip(student_features, teacher_features)):
            student_noise, teacher_noise = stage_noise[stage]
            student_feature = student_stage[sample, modality]
            teacher_feature = teacher_stage[sample, int(teacher_index[sample, modality])].detach()
            perturbed = []
            for feature, noise in ((student_feature, student_noise[item]), (teacher_feature, teacher_noise[item])):
                rows = torch.stack([feature[channel] for channel in range(feature.shape[0]) for _ in range(n_samples)])
                pixel_std = rows.std(dim=0)  # unbiased, over the S*C rows
                perturbed.append(rows + noise * pixel_std)
            perturbed_teacher = perturbed[1].requires_grad_()
            student_log_probs = torch.log_softmax(perturbed[0], dim=1)
            teacher_probs = torch.softmax(perturbed_teacher, dim=1)
            loss = kl_div_mean(student_log_probs, teacher_probs)
            grads = torch.autograd.grad(loss, [student_log_probs, teacher_probs], create_graph=True)
            fisher = [torch.norm(grad, p=2, dim=1).pow(2).div(loss.clamp(min=0)).mean() for grad in grads]
            regulariser = torch.sqrt((1 / fisher[0]) ** 2 + (1 / fisher[1]) ** 2)
            if normalize == "size":
                elements = teacher_probs.numel()
                columns = teacher_probs.shape[0] * teacher_probs.shape[2]
                regulariser = regulariser * teacher_probs.detach().pow(2).sum() / (elements**2 * columns)
            total = total + lam * regulariser
    return total / batch


# ----------------------------------------------------------------------------- modality dropout


def test_dropout_draws_per_sample_and_keeps_at_least_one():
    keep = sample_modality_dropout(64, 4, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (64, 4) and keep.dtype == torch.bool
    assert bool(keep.any(dim=1).all())
    assert len({tuple(row.tolist()) for row in keep}) > 5  # not one subset shared by the batch


def test_dropout_k_is_uniform_and_every_modality_is_dropped():
    draws = 4000
    keep = sample_modality_dropout(draws, 4, generator=torch.Generator().manual_seed(1))
    k_counts = torch.bincount(keep.sum(dim=1), minlength=5)
    assert k_counts[0] == 0
    tolerance = 5 * math.sqrt(draws * 0.25 * 0.75)  # 5 sigma of a binomial count
    assert all(abs(int(count) - draws / 4) < tolerance for count in k_counts[1:])
    # P(modality kept) = E[k] / M = 2.5 / 4 for every modality, RGB (index 0) included.
    kept_rate = keep.float().mean(dim=0)
    assert torch.allclose(kept_rate, torch.full((4,), 0.625), atol=0.03)
    single = keep[keep.sum(dim=1) == 1].float().mean(dim=0)  # each single-modality input equally likely
    assert torch.allclose(single, torch.full((4,), 0.25), atol=0.06)


def test_dropout_is_reproducible_with_a_generator():
    first = sample_modality_dropout(32, 4, generator=torch.Generator().manual_seed(7))
    second = sample_modality_dropout(32, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_dropout_respects_custom_k_probabilities():
    generator = torch.Generator().manual_seed(2)
    assert bool(sample_modality_dropout(50, 4, generator, k_probabilities=[0, 0, 0, 1]).all())
    assert bool((sample_modality_dropout(50, 4, generator, k_probabilities=[3, 0, 0, 0]).sum(dim=1) == 1).all())
    keep = sample_modality_dropout(4000, 4, generator, k_probabilities=torch.tensor([0.5, 0.0, 0.0, 0.5]))
    counts = torch.bincount(keep.sum(dim=1), minlength=5)
    assert counts[2] == 0 and counts[3] == 0 and abs(int(counts[1]) - 2000) < 160


@pytest.mark.parametrize(
    "probabilities, message",
    [
        ([0.5, 0.5], "one weight for each k = 1..4"),
        ([0.5, -0.1, 0.3, 0.3], "non-negative"),
        ([0.0, 0.0, 0.0, 0.0], "positive sum"),
        ([0.2, float("nan"), 0.3, 0.5], "finite"),
    ],
)
def test_dropout_rejects_bad_k_probabilities(probabilities, message):
    with pytest.raises(ValueError, match=message):
        sample_modality_dropout(4, 4, k_probabilities=probabilities)


def test_apply_modality_dropout_uses_the_missing_conventions():
    images = torch.randn(6, 4, 3, 8, 8)
    dropped, present, keep = apply_modality_dropout(images, "drop", torch.Generator().manual_seed(3))
    assert dropped is images and torch.equal(present, keep)
    zeroed, present, keep = apply_modality_dropout(images, "zero", torch.Generator().manual_seed(3))
    assert bool(present.all())
    assert bool((zeroed[~keep] == 0).all()) and torch.equal(zeroed[keep], images[keep])


# ----------------------------------------------------------------------------- logit KL


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_logit_kl_matches_kldivloss_mean(temperature):
    generator = torch.Generator().manual_seed(4)
    student = torch.randn(2, 7, 5, 6, generator=generator, requires_grad=True)
    teacher = torch.randn(2, 7, 5, 6, generator=generator, requires_grad=True)
    expected = kl_div_mean(
        torch.log_softmax(student / temperature, dim=1), torch.softmax(teacher / temperature, dim=1)
    ) * temperature**2
    value = logit_kl(student, teacher, temperature)
    assert torch.allclose(value, expected, rtol=1e-5, atol=1e-7)
    value.backward()
    assert student.grad is not None and teacher.grad is None


def test_logit_kl_is_zero_for_equal_logits():
    logits = torch.randn(1, 4, 3, 3)
    assert float(logit_kl(logits, logits.clone())) == 0.0


# ----------------------------------------------------------------------------- prototypes


@pytest.mark.parametrize("reference_scaling", [False, True])
def test_class_prototypes_match_the_loop_reference(reference_scaling):
    features = make_stage_features(3, 2, seed=5)[0]
    labels = make_labels(3)
    prototypes = class_prototypes(features, labels, NUM_TEST_CLASSES, IGNORE, reference_scaling)
    assert prototypes.shape == (3, 2, NUM_TEST_CLASSES, features.shape[2])
    for sample in range(3):
        for modality in range(2):
            expected = reference_prototypes(features[sample, modality], labels[sample], NUM_TEST_CLASSES,
                                            reference_scaling)
            assert torch.allclose(prototypes[sample, modality], expected, atol=1e-6)
    assert bool((prototypes[:, :, NUM_TEST_CLASSES - 1] == 0).all())  # absent class -> zero row


def test_class_prototypes_ignore_pixels_and_reject_unknown_labels():
    features = torch.zeros(1, 1, 1, 2, 2)
    features[0, 0, 0] = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    labels = torch.tensor([[[0, 0], [1, IGNORE]]])
    prototypes = class_prototypes(features, labels, 2, IGNORE)
    assert prototypes[0, 0, :, 0].tolist() == [1.5, 3.0]
    assert class_prototypes(features, labels, 2, IGNORE, reference_scaling=True)[0, 0, 0, 0] == 0.75
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        class_prototypes(features, torch.tensor([[[0, 7], [1, 1]]]), 2, IGNORE)


# ----------------------------------------------------------------------------- HPDM


@pytest.mark.parametrize("reference_scaling, temperature", [(False, 1.0), (True, 1.0), (False, 2.0)])
def test_hpdm_identity_pairing_matches_the_loop_reference(reference_scaling, temperature):
    student = make_stage_features(3, 4, seed=6, requires_grad=True)
    teacher = make_stage_features(3, 4, seed=7)
    labels = make_labels(3)
    identity = torch.arange(4).expand(3, 4)
    loss, details = hpdm_loss(student, teacher, labels, PRESENT, pairing="identity", temperature=temperature,
                              reference_scaling=reference_scaling, num_classes=NUM_TEST_CLASSES)
    expected = reference_hpdm(student, teacher, labels, PRESENT, identity, temperature, reference_scaling)
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-12)
    assert torch.equal(details["teacher_index"], identity)
    assert details["per_stage"].shape == (len(STAGE_SHAPES),)
    assert torch.allclose(details["per_stage"].sum(), loss.detach())
    gradient = torch.autograd.grad(loss, student)
    expected_gradient = torch.autograd.grad(expected, student)
    for got, want in zip(gradient, expected_gradient):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-9)


def test_hpdm_random_pairing_matches_the_loop_reference_with_the_same_permutation():
    student = make_stage_features(3, 4, seed=8, requires_grad=True)
    teacher = make_stage_features(3, 4, seed=9)
    labels = make_labels(3)
    loss, details = hpdm_loss(student, teacher, labels, PRESENT, pairing="random",
                              generator=torch.Generator().manual_seed(11), num_classes=NUM_TEST_CLASSES)
    pairing = sample_cross_modal_pairing(PRESENT, torch.Generator().manual_seed(11))
    assert torch.equal(details["teacher_index"], pairing)
    expected = reference_hpdm(student, teacher, labels, PRESENT, pairing)
    assert torch.allclose(loss, expected, rtol=1e-5)
    explicit, _ = hpdm_loss(student, teacher, labels, PRESENT, teacher_index=pairing, num_classes=NUM_TEST_CLASSES)
    assert torch.allclose(explicit, loss)


def assert_gradients_reach_present_student_modalities_only(student, teacher) -> None:
    """After ``backward``: no gradient on the teacher, a non-zero one on every present student slot, none elsewhere."""
    for student_stage, teacher_stage in zip(student, teacher):
        assert teacher_stage.grad is None
        per_slot = student_stage.grad.abs().sum(dim=(2, 3, 4))
        assert bool((per_slot[PRESENT] > 0).all()) and bool((per_slot[~PRESENT] == 0).all())


def test_hpdm_gradients_reach_present_student_modalities_only():
    student = make_stage_features(3, 4, seed=10, requires_grad=True)
    teacher = make_stage_features(3, 4, seed=11, requires_grad=True)
    loss, _ = hpdm_loss(student, teacher, make_labels(3), PRESENT, generator=torch.Generator().manual_seed(0),
                        num_classes=NUM_TEST_CLASSES)
    loss.backward()
    assert_gradients_reach_present_student_modalities_only(student, teacher)


def test_hpdm_ignores_absent_student_modalities():
    student = make_stage_features(3, 4, seed=12)
    teacher = make_stage_features(3, 4, seed=13)
    labels = make_labels(3)
    changed = [stage.clone() for stage in student]
    for stage in changed:
        stage[~PRESENT] = 5.0
    for pairing in ("identity", "random"):
        original, _ = hpdm_loss(student, teacher, labels, PRESENT, pairing, generator=torch.Generator().manual_seed(1),
                                num_classes=NUM_TEST_CLASSES)
        modified, _ = hpdm_loss(changed, teacher, labels, PRESENT, pairing, generator=torch.Generator().manual_seed(1),
                                num_classes=NUM_TEST_CLASSES)
        assert torch.equal(original, modified)


def test_random_pairing_is_a_permutation_of_each_samples_present_modalities():
    generator = torch.Generator().manual_seed(14)
    present = sample_modality_dropout(500, 4, generator)
    pairing = sample_cross_modal_pairing(present, generator)
    for row, mask in zip(pairing.tolist(), present.tolist()):
        present_slots = [slot for slot in range(4) if mask[slot]]
        assert sorted(row[slot] for slot in present_slots) == present_slots
        assert all(row[slot] == slot for slot in range(4) if not mask[slot])
    all_present = sample_cross_modal_pairing(torch.ones(2400, 4, dtype=torch.bool), generator)
    counts = {}
    for row in all_present.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert set(counts) == set(itertools.permutations(range(4)))
    assert max(counts.values()) < 2 * min(counts.values())  # roughly uniform: 100 expected each


def test_hpdm_rejects_bad_arguments():
    student = make_stage_features(3, 4, seed=0)
    labels = make_labels(3)
    with pytest.raises(ValueError, match="unknown pairing"):
        hpdm_loss(student, student, labels, PRESENT, pairing="shuffle", num_classes=NUM_TEST_CLASSES)
    with pytest.raises(ValueError, match="share a shape"):
        hpdm_loss(student, student[::-1], labels, PRESENT, num_classes=NUM_TEST_CLASSES)
    with pytest.raises(ValueError, match="teacher_index"):
        hpdm_loss(student, student, labels, PRESENT, teacher_index=torch.full((3, 4), 4),
                  num_classes=NUM_TEST_CLASSES)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        hpdm_loss(student, student, labels.clone().fill_(NUM_TEST_CLASSES), PRESENT, num_classes=NUM_TEST_CLASSES)
    with pytest.raises(ValueError, match="labels must be int64"):
        hpdm_loss(student, student, labels.int(), PRESENT, num_classes=NUM_TEST_CLASSES)


# ----------------------------------------------------------------------------- RRM


@pytest.mark.parametrize("normalize", ["none", "size"])
def test_rrm_matches_the_loop_reference_in_value_and_gradient(normalize):
    student = make_stage_features(3, 4, seed=15, shapes=STAGE_SHAPES[:2], requires_grad=True)
    teacher = make_stage_features(3, 4, seed=16, shapes=STAGE_SHAPES[:2])
    pairing = sample_cross_modal_pairing(PRESENT, torch.Generator().manual_seed(2))
    loss, details = rrm_loss(student, teacher, PRESENT, lam=1e-5, n_samples=3, normalize=normalize,
                             generator=torch.Generator().manual_seed(17), teacher_index=pairing)
    expected = reference_rrm(student, teacher, PRESENT, pairing, lam=1e-5, n_samples=3, seed=17,
                             normalize=normalize)
    assert torch.allclose(loss, expected, rtol=1e-4)
    assert torch.allclose(details["per_stage"].sum(), loss.detach())
    gradient = torch.autograd.grad(loss, student)
    expected_gradient = torch.autograd.grad(expected, student)
    for got, want in zip(gradient, expected_gradient):
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-6 * float(want.abs().max()))


def test_rrm_blocks_of_items_give_the_same_values_and_gradients():
    student = make_stage_features(3, 4, seed=24, requires_grad=True)
    teacher = make_stage_features(3, 4, seed=25)
    whole, whole_details = rrm_loss(student, teacher, PRESENT, generator=torch.Generator().manual_seed(5))
    blocked, blocked_details = rrm_loss(student, teacher, PRESENT, generator=torch.Generator().manual_seed(5),
                                        max_block_elements=700)  # 1 to 2 items per block
    assert torch.allclose(whole, blocked, rtol=1e-5)
    assert torch.allclose(whole_details["feature_kl"], blocked_details["feature_kl"])
    for got, want in zip(torch.autograd.grad(blocked, student), torch.autograd.grad(whole, student)):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


def test_rrm_defaults_to_identity_pairing_and_reports_details():
    student = make_stage_features(3, 4, seed=18, requires_grad=True)
    teacher = make_stage_features(3, 4, seed=19)
    loss, details = rrm_loss(student, teacher, PRESENT, generator=torch.Generator().manual_seed(0))
    assert torch.equal(details["teacher_index"], torch.arange(4).expand(3, 4))
    assert torch.equal(details["per_stage"], details["raw_per_stage"])
    assert details["feature_kl"].shape == (len(STAGE_SHAPES),) and bool((details["feature_kl"] > 0).all())
    halved, _ = rrm_loss(student, teacher, PRESENT, lam=0.5e-5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(halved, loss / 2)


def test_rrm_gradients_reach_present_student_modalities_only():
    student = make_stage_features(3, 4, seed=20, requires_grad=True)
    teacher = make_stage_features(3, 4, seed=21, requires_grad=True)
    loss, _ = rrm_loss(student, teacher, PRESENT, n_samples=2, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert_gradients_reach_present_student_modalities_only(student, teacher)


def test_rrm_ignores_absent_student_modalities():
    student = make_stage_features(3, 4, seed=22)
    teacher = make_stage_features(3, 4, seed=23)
    changed = [stage.clone() for stage in student]
    for stage in changed:
        stage[~PRESENT] = 5.0
    original, _ = rrm_loss(student, teacher, PRESENT, generator=torch.Generator().manual_seed(4))
    modified, _ = rrm_loss(changed, teacher, PRESENT, generator=torch.Generator().manual_seed(4))
    assert torch.equal(original, modified)


def test_rrm_stays_finite_when_the_feature_kl_is_zero():
    # A single row (H = 1): the row softmax is 1 whatever the noise, so L = 0 exactly.
    student = torch.randn(1, 2, 3, 1, 4).requires_grad_()
    loss, details = rrm_loss([student], [torch.randn(1, 2, 3, 1, 4)], torch.ones(1, 2, dtype=torch.bool),
                             normalize="none", generator=torch.Generator().manual_seed(0))
    assert float(details["feature_kl"][0]) == 0.0
    assert torch.isfinite(loss) and 0.0 <= float(loss.detach()) < 1e-3
    (gradient,) = torch.autograd.grad(loss, student)
    assert bool(torch.isfinite(gradient).all())


def test_rrm_gradient_is_finite_where_the_noise_std_is_zero():
    # Equal channels at every pixel of sample 0: sigma = 0 there, so the perturbation has no std to
    # differentiate through (autograd's sqrt would give 0 * inf = NaN); its gradient path is zero.
    student = torch.randn(2, 2, 3, 5, 4)
    student[0] = student[0, :, :1].expand(2, 3, 5, 4)
    student.requires_grad_()
    loss, _ = rrm_loss([student], [torch.randn(2, 2, 3, 5, 4)], torch.ones(2, 2, dtype=torch.bool),
                       normalize="size", generator=torch.Generator().manual_seed(0))
    (gradient,) = torch.autograd.grad(loss, student)
    assert bool(torch.isfinite(gradient).all()) and bool((gradient[1] != 0).any())


@pytest.mark.parametrize("normalize", ["none", "size"])
def test_rrm_gradient_passes_a_float64_gradcheck(normalize):
    teacher = torch.randn(2, 2, 3, 4, 5, dtype=torch.float64)
    student = (teacher + 0.5 * torch.randn(teacher.shape, dtype=torch.float64)).requires_grad_()
    present = torch.tensor([[True, False], [True, True]])

    def loss(features):
        value, _ = rrm_loss([features], [teacher], present, lam=1e-9, n_samples=2, normalize=normalize,
                            generator=torch.Generator().manual_seed(6), max_block_elements=150)
        return value

    assert torch.autograd.gradcheck(loss, (student,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_rrm_accepts_half_precision_features():
    teacher = make_stage_features(3, 4, seed=28)
    student = [stage.clone().requires_grad_() for stage in make_stage_features(3, 4, seed=29)]
    half = [stage.half() for stage in student]
    loss, _ = rrm_loss(half, [stage.half() for stage in teacher], PRESENT, lam=1e-5,
                       generator=torch.Generator().manual_seed(1))
    reference, _ = rrm_loss([stage.float() for stage in half], [stage.half().float() for stage in teacher], PRESENT,
                            lam=1e-5, generator=torch.Generator().manual_seed(1))
    assert loss.dtype == torch.float32 and torch.allclose(loss, reference)
    loss.backward()
    assert all(bool(torch.isfinite(stage.grad).all()) for stage in student)


def test_rrm_without_gradient_gives_the_same_value():
    student = make_stage_features(3, 4, seed=26, requires_grad=True)
    teacher = make_stage_features(3, 4, seed=27)
    with_graph, details = rrm_loss(student, teacher, PRESENT, normalize="size", generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        without, no_grad_details = rrm_loss(student, teacher, PRESENT, normalize="size",
                                            generator=torch.Generator().manual_seed(3))
    assert not without.requires_grad and torch.equal(without, with_graph.detach())
    assert torch.equal(details["feature_kl"], no_grad_details["feature_kl"])


def test_noise_is_reproducible_and_independent_of_the_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = standard_normal((3, 1001), torch.Generator().manual_seed(8))
        torch.set_num_threads(2)
        parallel = standard_normal((3, 1001), torch.Generator().manual_seed(8))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(serial, parallel)
    generator = torch.Generator().manual_seed(8)
    first, second = standard_normal((3, 1001), generator), standard_normal((3, 1001), generator)
    assert torch.equal(first, serial) and not torch.equal(first, second)


def test_noise_is_standard_normal_and_its_streams_independent():
    noise = standard_normal((400_000,), torch.Generator().manual_seed(9), dtype=torch.float64)
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 1.0) < 0.01
    assert abs(float((noise.abs() < 1.0).double().mean()) - 0.6827) < 0.005  # P(|z| < 1) of N(0, 1)
    streams = noise.view(NOISE_STREAMS, -1)
    correlation = torch.corrcoef(streams)
    assert float((correlation - torch.eye(NOISE_STREAMS, dtype=torch.float64)).abs().max()) < 0.02


def test_rrm_stays_finite_for_large_activations():
    # Differences of ~1e3 along H make the teacher's row softmax underflow to exact zeros.
    student = (300.0 * torch.randn(1, 2, 3, 6, 4)).requires_grad_()
    teacher = 300.0 * torch.randn(1, 2, 3, 6, 4)
    loss, _ = rrm_loss([student], [teacher], torch.ones(1, 2, dtype=torch.bool), normalize="size",
                       generator=torch.Generator().manual_seed(0))
    (gradient,) = torch.autograd.grad(loss, student)
    assert torch.isfinite(loss) and bool(torch.isfinite(gradient).all())


def test_rrm_size_normalisation_removes_the_feature_size_dependence():
    """Raw R grows like (SCHW)^2 * H; the normalised value is the per-element feature KL at any size."""
    values = {}
    for channels, size in ((8, 8), (16, 32)):
        generator = torch.Generator().manual_seed(channels)
        teacher = torch.randn(2, 2, channels, size, size, generator=generator)
        student = teacher + 0.5 * torch.randn(teacher.shape, generator=generator)
        present = torch.ones(2, 2, dtype=torch.bool)
        normalised, details = rrm_loss([student], [teacher], present, lam=1.0, normalize="size",
                                       generator=torch.Generator().manual_seed(0))
        raw = details["raw_per_stage"][0]
        feature_kl = details["feature_kl"][0]
        per_item = normalised / 2  # 2 items per sample, lam = 1
        assert torch.allclose(per_item, feature_kl, rtol=0.02)  # R / kappa = L * (1 + tiny)
        values[size] = (float(raw), float(per_item.detach()))
    raw_ratio = values[32][0] / values[8][0]
    normalised_ratio = values[32][1] / values[8][1]
    assert raw_ratio > 300
    assert 1 / 6 < normalised_ratio < 6


def test_rrm_rejects_bad_arguments():
    features = make_stage_features(3, 4, seed=0)
    with pytest.raises(ValueError, match="unknown normalize"):
        rrm_loss(features, features, PRESENT, normalize="batch")
    with pytest.raises(ValueError, match="n_samples"):
        rrm_loss(features, features, PRESENT, n_samples=0)
    with pytest.raises(ValueError, match="max_block_elements"):
        rrm_loss(features, features, PRESENT, max_block_elements=0)
    with pytest.raises(ValueError, match=r"no modality for sample\(s\) \[1\]"):
        rrm_loss(features, features, torch.tensor([[True] * 4, [False] * 4, [True] * 4]))


def test_ohem_still_exported():
    assert OhemCrossEntropy()(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)) > 0
