"""Which of the live modalities to fuse: all of them, or the subset the model's validation scores rank best.

The segmentor fuses by the mean over the modalities it is given, each with weight 1 / |S|. A student
trained with modality dropout makes every modality's features usable alone, so a weak modality (events,
about 12 % mIoU alone on the generated benchmark) enters the mean with the weight of a strong one (depth,
about 32 %) and can pull the fused features away from what the others agree on: the shipped student scores
lower with all four modalities than without events (docs/results.md, "Recalibrated BatchNorm statistics and
the validated fusion policy").

The ``validated`` policy uses what every trained checkpoint already carries: its mIoU on the validation
split for each of the 15 combinations (``meta.scores``, ``miou_<letters>``). Given the modalities present
in a frame, it fuses the subset of them that scored best on validation, and leaves the present set whole
unless a subset beats it by more than ``min_gain`` mIoU points (the generated benchmark's validation
split has 160 frames; smaller differences are noise). The choice depends on the present set only:
``fusion_table`` makes it once for every set, and serving looks each frame up.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from .classes import combination_name
from .errors import UserError

#: ``all``: fuse every present modality (the paper's behaviour); ``validated``: the best subset by validation.
FUSION_POLICIES: tuple[str, ...] = ("all", "validated")
#: How the reason for a present modality that the policy did not fuse begins.
LEFT_OUT = "left out by the validated fusion policy"
#: Validation mIoU points a subset must gain over all present modalities before the policy uses it.
DEFAULT_MIN_GAIN = 0.5


class FusionPolicyError(UserError, ValueError):
    """A fusion policy that cannot run: an unknown name, a negative gain, or scores the model does not carry."""


def validation_miou(scores: Mapping[str, float] | None) -> dict[str, float]:
    """Per-combination validation mIoU (%) ``{"RD": 34.0, ...}`` from a checkpoint's ``meta.scores``
    (``{"miou_RD": 34.0, "miou_present_RD": ..., "score": ...}``); the other entries are ignored."""
    return {key[len("miou_"):]: float(value) for key, value in (scores or {}).items()
            if key.startswith("miou_") and not key.startswith("miou_present_")}


def subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, largest first, each in the order of ``modalities``."""
    return [subset for size in range(len(modalities), 0, -1) for subset in itertools.combinations(modalities, size)]


def missing_combinations(modalities: Sequence[str], validation: Mapping[str, float]) -> list[str]:
    """The combinations of ``modalities`` (letters, e.g. ``"RE"``) that ``validation`` has no mIoU for."""
    names = [combination_name(subset) for subset in sorted(subsets(modalities), key=len)]  # smallest first
    return [name for name in names if name not in validation]


def check_fusion_policy(policy: str, min_gain: float, modalities: Sequence[str],
                        validation: Mapping[str, float], source: str) -> None:
    """``FusionPolicyError`` naming the problem when ``policy`` cannot run on a model of ``modalities`` whose
    validation mIoU per combination is ``validation`` (read from ``source``)."""
    if policy not in FUSION_POLICIES:
        raise FusionPolicyError(f"fusion policy {policy!r}: expected one of {', '.join(FUSION_POLICIES)}")
    if not min_gain >= 0.0:
        raise FusionPolicyError(f"fusion min_gain: must be >= 0 mIoU points, got {min_gain}")
    if policy == "validated":
        missing = missing_combinations(modalities, validation)
        if missing:
            raise FusionPolicyError(
                f"{source}: the validated fusion policy needs the validation mIoU of every modality combination, and "
                f"the model carries none for {', '.join(missing)} (a teacher, or a file from an older export); use "
                "the fusion policy 'all'")


def fused_subset(present: Sequence[str], validation: Mapping[str, float], min_gain: float) -> tuple[str, ...]:
    """The modalities to fuse out of ``present`` (names, any order; returned in the same order).

    ``present`` itself unless some non-empty subset scored more than ``min_gain`` (mIoU points) above it on
    validation; then the best-scoring subset (ties: the one with more modalities, then the first found).
    ``validation`` must hold every combination of ``present`` (``check_fusion_policy``).
    """
    best, best_score = tuple(present), validation[combination_name(present)]
    threshold = best_score + min_gain
    for subset in subsets(present)[1:]:
        score = validation[combination_name(subset)]
        if score > threshold and (best == tuple(present) or score > best_score):
            best, best_score = subset, score
    return best


def left_out_reasons(present: Sequence[str], fused: Sequence[str], validation: Mapping[str, float]) -> dict[str, str]:
    """Modality -> why it was not fused, for each of ``present`` missing from ``fused`` (``fused_subset``)."""
    present_name, fused_name = combination_name(present), combination_name(fused)
    reason = (f"{LEFT_OUT}: {fused_name} scored {validation[fused_name]:.2f} % mIoU on validation, "
              f"{present_name} {validation[present_name]:.2f} %")
    return {modality: reason for modality in present if modality not in fused}


def fusion_table(modalities: Sequence[str], validation: Mapping[str, float],
                 min_gain: float) -> dict[str, tuple[tuple[str, ...], dict[str, str]]]:
    """For every combination of ``modalities`` (by name, e.g. ``"RDEL"``): the modalities the validated policy
    fuses (``fused_subset``) and why each other one is left out (``left_out_reasons``)."""
    table = {}
    for present in subsets(modalities):
        fused = fused_subset(present, validation, min_gain)
        table[combination_name(present)] = (fused, left_out_reasons(present, fused, validation))
    return table
