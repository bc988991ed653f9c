"""Stage-2 ("student") distillation losses: logit KL and HPDM, and the conventions every feature loss
shares (docs/method.md, "Logit KL" and "HPDM"; arXiv 2505.12861 v1, the HPDM section). RRM, the third
feature loss, is in ``robustseg_core.losses.rrm``.

Conventions shared by the distillation losses
----------------------------------------------
* Divergence: KL(teacher || student) with PyTorch ``KLDivLoss(reduction="mean")`` semantics, i.e.
  the sum of p_t * (log p_t - log p_s) divided by the number of elements, the softmax axis included.
  The released loss weights 50 / 100 / 12 were tuned against this normalisation.
  Every KL is clamped at >= 0.
* The teacher is frozen: teacher inputs are detached, no gradient reaches them.
* The feature losses take the per-modality stage features [B, M, C, h, w] of student and teacher
  (``SegmentorOutput.features``; the teacher sees all M modalities) and the student presence mask
  ``student_present`` [B, M] bool. One term per (sample, stage, present student modality);
  total = (1/B) * sum over samples, stages and present modalities. Absent student modalities
  contribute nothing.
* Pairing: ``teacher_index`` [B, M] int64 names, for each student modality s of each sample, the
  teacher modality that supervises it. Identity is the released code; ``sample_cross_modal_pairing``
  is the paper's hybrid pairing, a random permutation pi of the sample's present modalities with
  student pi(m) supervised by teacher m, i.e. ``teacher_index[n, pi(m)] = m``.
* Everything is vectorised over samples, modalities and classes; only the 4 stages are a loop.

Logit KL: class softmax of full-resolution logits, mean over B*K*H*W. With a temperature
T != 1 both logits are divided by T and the result is multiplied by T**2 (Hinton et al.), which
keeps gradient sizes comparable across temperatures; T = 1 is the released setting.

HPDM: per-class prototypes (masked mean of the features over the pixels of each class,
labels nearest-downsampled to the stage size, absent classes = zero rows, which still take part in
the softmax), softmaxed over the class axis for every channel, KL "mean" over the K*C entries.
``reference_scaling=True`` reproduces the released code, which divides the class sum by the pixel
count twice (sum f / N_c**2) and so makes the prototypes, and the loss, orders of magnitude smaller
(docs/method.md, "Departures"). The temperature is handled as in the logit KL.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..classes import IGNORE_INDEX, NUM_CLASSES

#: Pairings accepted by ``hpdm_loss``: the paper's hybrid cross-modal one and the released code's.
PAIRINGS: tuple[str, ...] = ("random", "identity")


def logit_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) of class softmaxes, "mean" over every element, clamped >= 0.

    Args:
        student_logits: [B, K, ...] (class axis 1), typically [B, K, H, W].
        teacher_logits: same shape; detached here.
        temperature: T > 0; softmax of logits / T, result scaled by T**2.

    Returns:
        scalar: sum of p_t (log p_t - log p_s) / (B*K*H*W) * T**2.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.ndim < 2:
        raise ValueError(
            "student and teacher logits must share a shape [B, K, ...], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    _check_temperature(temperature)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    divergence = _kl_elements(student_log_probs, teacher_log_probs).mean()
    return divergence.clamp_min(0.0) * temperature**2


def class_prototypes(
    features: Tensor,
    labels: Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    reference_scaling: bool = False,
) -> Tensor:
    """Per-sample, per-modality class prototypes.

    Args:
        features: [B, M, C, h, w].
        labels: [B, H, W] int64 class ids in [0, K) or ``ignore_index``; nearest-downsampled to (h, w).
        num_classes: K.
        ignore_index: label of unlabeled pixels, left out of every class.
        reference_scaling: False = masked mean sum f / N_c (paper); True = sum f / N_c**2 (released code).

    Returns:
        prototypes [B, M, K, C]; classes without pixels in a sample give zero rows.
    """
    if features.ndim != 5:
        raise ValueError(f"features must be [B, M, C, h, w], got shape {tuple(features.shape)}")
    _check_labels(labels, num_classes, ignore_index, features.shape[0])
    class_masks = _class_masks(labels, features.shape[-2:], num_classes)
    return _prototypes_from_masks(features, class_masks.to(features.dtype), reference_scaling)


def sample_cross_modal_pairing(present: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Paper's hybrid pairing: a uniformly random permutation of each sample's present modalities.

    Args:
        present: [B, M] bool student presence mask.
        generator: random source on ``present``'s device.

    Returns:
        teacher_index [B, M] int64: for each present student modality s, the teacher modality that
        supervises it, a random bijection of the present set onto itself; absent s map to themselves.
    """
    _check_present(present)
    num_modalities = present.shape[1]
    slots = torch.arange(num_modalities, device=present.device).expand_as(present)
    present_first_by_index = torch.argsort((~present).to(torch.int64), dim=1, stable=True)
    scores = torch.rand(present.shape, generator=generator, device=present.device)
    absent_keys = 2.0 + slots.to(scores.dtype) / num_modalities
    present_first_shuffled = torch.argsort(torch.where(present, scores, absent_keys), dim=1)
    return torch.empty_like(slots).scatter_(1, present_first_by_index, present_first_shuffled)


def hpdm_loss(
    student_features: Sequence[Tensor],
    teacher_features: Sequence[Tensor],
    labels: Tensor,
    student_present: Tensor,
    pairing: str = "random",
    temperature: float = 1.0,
    reference_scaling: bool = False,
    generator: torch.Generator | None = None,
    teacher_index: Tensor | None = None,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Hybrid prototype distillation over the stages.

    Args:
        student_features: per stage [B, M, C_i, h_i, w_i] (absent modalities ignored).
        teacher_features: same shapes, all modalities real; detached here.
        labels: [B, H, W] int64 ground truth.
        student_present: [B, M] bool, the student modalities that take part.
        pairing: "random" (paper, via ``sample_cross_modal_pairing``) or "identity" (released code).
        temperature: T > 0 of the class softmax; the KL is scaled by T**2.
        reference_scaling: prototypes divided by the pixel count twice (released code).
        generator: random source of the "random" pairing.
        teacher_index: explicit [B, M] pairing; overrides ``pairing``.
        num_classes, ignore_index: label space.

    Returns:
        (loss, details): loss = (1/B) sum_n sum_stages sum_present KL_mean(teacher || student);
        details = {"per_stage": [num_stages] detached stage contributions (they sum to loss),
        "teacher_index": [B, M] int64 pairing used}.
    """
    check_stage_features(student_features, teacher_features, student_present)
    _check_temperature(temperature)
    teacher_index = resolve_pairing(pairing, teacher_index, student_present, generator)
    batch = student_present.shape[0]
    _check_labels(labels, num_classes, ignore_index, batch)
    weights = student_present.to(student_features[0].dtype)
    stage_losses = []
    for student_stage, teacher_stage in zip(student_features, teacher_features):
        class_masks = _class_masks(labels, student_stage.shape[-2:], num_classes)
        class_masks = class_masks.to(student_stage.dtype)
        student_prototypes = _prototypes_from_masks(student_stage, class_masks, reference_scaling)
        with torch.no_grad():
            teacher_prototypes = _prototypes_from_masks(teacher_stage.detach(), class_masks, reference_scaling)
            paired_teacher = teacher_prototypes.gather(
                1, teacher_index[:, :, None, None].expand_as(teacher_prototypes)
            )
        student_log_probs = F.log_softmax(student_prototypes / temperature, dim=2)
        teacher_log_probs = F.log_softmax(paired_teacher / temperature, dim=2)
        terms = _kl_elements(student_log_probs, teacher_log_probs).mean(dim=(2, 3)).clamp_min(0.0)
        stage_losses.append((terms * weights).sum() * temperature**2 / batch)
    per_stage = torch.stack(stage_losses)
    return per_stage.sum(), {"per_stage": per_stage.detach(), "teacher_index": teacher_index}


def _kl_elements(student_log_probs: Tensor, teacher_log_probs: Tensor) -> Tensor:
    """Element-wise p_t (log p_t - log p_s) from log-probabilities."""
    return teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)


def _check_labels(labels: Tensor, num_classes: int, ignore_index: int, batch: int) -> None:
    """Labels must be int64 [B, H, W] with ids in [0, K) or ``ignore_index``."""
    if labels.ndim != 3 or labels.shape[0] != batch:
        raise ValueError(f"labels must be [B, H, W] with B = {batch}, got shape {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64, got dtype {labels.dtype}")
    if bool(((labels != ignore_index) & ((labels < 0) | (labels >= num_classes))).any()):
        raise ValueError(f"labels must lie in [0, {num_classes}) or equal ignore_index {ignore_index}")


def _class_masks(labels: Tensor, size: Sequence[int], num_classes: int) -> Tensor:
    """Checked labels [B, H, W] -> class membership [B, K, h*w] bool at ``size`` (nearest neighbour)."""
    resized = F.interpolate(labels[:, None].to(torch.float32), size=tuple(size), mode="nearest")
    resized = resized.flatten(1).to(torch.int64)
    classes = torch.arange(num_classes, device=labels.device)
    return resized[:, None, :] == classes[None, :, None]


def _prototypes_from_masks(features: Tensor, class_masks: Tensor, reference_scaling: bool) -> Tensor:
    """features [B, M, C, h, w], masks [B, K, h*w] (feature dtype) -> prototypes [B, M, K, C]."""
    class_sums = torch.matmul(class_masks[:, None], features.flatten(3).transpose(-1, -2))
    pixel_counts = class_masks.sum(dim=-1)
    divisor = pixel_counts.square() if reference_scaling else pixel_counts
    return class_sums / divisor.clamp_min(1.0)[:, None, :, None]


def resolve_pairing(
    pairing: str, teacher_index: Tensor | None, present: Tensor, generator: torch.Generator | None
) -> Tensor:
    """The [B, M] int64 teacher modality of each student modality: ``teacher_index`` when given (checked),
    else the ``pairing`` ("random" or "identity") for the presence mask ``present`` [B, M]."""
    if teacher_index is not None:
        if teacher_index.shape != present.shape or teacher_index.dtype != torch.int64:
            raise ValueError(
                f"teacher_index must be int64 [B, M] = {tuple(present.shape)}, "
                f"got {teacher_index.dtype} {tuple(teacher_index.shape)}"
            )
        if bool(((teacher_index < 0) | (teacher_index >= present.shape[1])).any()):
            raise ValueError(f"teacher_index entries must lie in [0, {present.shape[1]})")
        return teacher_index
    if pairing == "random":
        return sample_cross_modal_pairing(present, generator)
    if pairing == "identity":
        return torch.arange(present.shape[1], device=present.device).expand_as(present).clone()
    raise ValueError(f"unknown pairing {pairing!r}; expected one of {PAIRINGS}")


def _check_present(present: Tensor) -> None:
    if present.dtype != torch.bool or present.ndim != 2:
        raise ValueError(f"student_present must be a bool tensor [B, M], got {present.dtype} {tuple(present.shape)}")
    empty_samples = (~present.any(dim=1)).nonzero()[:, 0].tolist()
    if empty_samples:
        raise ValueError(f"student_present has no modality for sample(s) {empty_samples}")


def check_stage_features(
    student_features: Sequence[Tensor], teacher_features: Sequence[Tensor], present: Tensor
) -> None:
    """Per-stage student and teacher features must share a [B, M, C, h, w] shape matching ``present`` [B, M]
    bool, which must give every sample a modality; ``ValueError`` naming the stage otherwise."""
    _check_present(present)
    if len(student_features) == 0 or len(student_features) != len(teacher_features):
        raise ValueError(
            f"need the same non-zero number of student and teacher stages, got "
            f"{len(student_features)} and {len(teacher_features)}"
        )
    for stage, (student_stage, teacher_stage) in enumerate(zip(student_features, teacher_features)):
        if student_stage.ndim != 5 or student_stage.shape != teacher_stage.shape:
            raise ValueError(
                f"stage {stage}: student and teacher features must share a shape [B, M, C, h, w], got "
                f"{tuple(student_stage.shape)} and {tuple(teacher_stage.shape)}"
            )
        if student_stage.shape[:2] != present.shape:
            raise ValueError(
                f"stage {stage}: features have [B, M] = {tuple(student_stage.shape[:2])}, "
                f"student_present has {tuple(present.shape)}"
            )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
